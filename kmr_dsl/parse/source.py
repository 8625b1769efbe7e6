"""Raw KMR source lines read without the parser: strings skipped, brackets and comments
found, the text cut into top-level declarations.

Contract: `scan(line)` is the one scanner of raw lines (declaration cutting, comments,
the bracket diagnostics of kmr_dsl.parse.errors, the formatter's comment extraction);
`split_declarations(text)` cuts a file into (first line, chunk) pieces, one top-level
declaration each (a line that starts with a declaration keyword, at brace depth zero or
in column one), which kmr_dsl.parse parses one at a time; `comment_start(line)` is the
column of a line's comment.
"""

from __future__ import annotations

import re

from kmr_dsl.parse.lalr import DECL_KEYWORDS

_DECL_START = re.compile(r"[ \t]*(" + "|".join(DECL_KEYWORDS) + r")(?=[ \t]+[A-Za-z_\"])")


# The one scanner of raw source lines (declaration cutting, comments, bracket
# diagnostics, the formatter's comment extraction): a string (double quotes, `\`
# escapes, never spanning a line, possibly unterminated) is skipped whole; brackets and
# the `#` that starts a comment are reported. A regex, so a long line costs C time.
_SCAN = re.compile(r'"(?:[^"\\]|\\.)*"?|[#()\[\]{}]')


def scan(line: str):
    """(index, char) of each bracket on `line` outside strings, up to and including the
    `#` that starts a comment (which ends the scan)."""
    for m in _SCAN.finditer(line):
        c = m.group()
        if c[0] == '"':
            continue
        yield m.start(), c
        if c == "#":
            return


def split_declarations(text: str) -> list[tuple[int, str]]:
    """Cut the text into (first line number, chunk) pieces, one top-level declaration each."""
    lines = text.split("\n")
    chunks: list[tuple[int, list[str]]] = []
    depth = 0
    for number, line in enumerate(lines, start=1):
        m = _DECL_START.match(line)
        starts = m is not None and (depth == 0 or m.start(1) == 0)
        if starts or not chunks:
            chunks.append((number, []))
            depth = 0
        chunks[-1][1].append(line)
        for _, c in scan(line):
            if c in "([{":
                depth += 1
            elif c in ")]}":
                depth = max(0, depth - 1)
    return [(start, "\n".join(body)) for start, body in chunks]


def comment_start(line: str) -> int:
    """Column of the `#` that starts a comment on `line`, or -1 (a `#` inside a string
    is not one)."""
    return next((i for i, c in scan(line) if c == "#"), -1)
