"""Find the comments of a KMR source and put them back into formatted lines.

Contract: the AST drops comments, so `kmr fmt` re-attaches them by line number. The
rule, applied to the anchors that `kmr_dsl.fmt.printer` gives each output line (the
source line of the statement or declaration that line starts; a closing `}` is
anchored where its block ends):

* a **full-line comment** goes just before the first output line anchored *after* it:
  the nearest following declaration, statement, clause, parameter line or closing
  brace, indented like it (like the block's body, before a `}`); comments after the
  last declaration stay at the end of the file;
* a **trailing comment** stays at the end of the last output line anchored *at or
  before* its line: the statement it trails. When a statement written over several
  lines becomes one line and so collects several trailing comments, the last one
  trails the line and the others go just above it, in their order;
* a blank line directly before a comment, and one directly after the last comment of
  a group, are kept (at most one), except at the top of the file or of a block.

So nothing is dropped and formatting twice changes nothing. Comment text is kept
verbatim apart from trailing whitespace.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from kmr_dsl.fmt.printer import Line
from kmr_dsl.parse.source import comment_start


@dataclass(slots=True)
class Comment:
    line: int               # 1-based source line
    text: str               # from `#`, trailing whitespace removed
    full: bool              # alone on its line (otherwise it trails code)
    blank_before: bool = False
    blank_after: bool = False


def _blank(line: str) -> bool:
    return not line.strip(" \t\r\f")


def extract(text: str) -> tuple[list[Comment], list[str]]:
    """The comments of `text`, and its lines with comments cut off and string contents
    blanked (so a keyword search cannot hit a string)."""
    lines = text.split("\n")
    comments: list[Comment] = []
    code: list[str] = []
    for i, line in enumerate(lines):
        at = comment_start(line)
        body = line if at < 0 else line[:at]
        code.append(re.sub(r'"([^"\\]|\\.)*"', lambda m: '"' + " " * (len(m.group()) - 2) + '"', body))
        if at < 0:
            continue
        full = _blank(body)
        comments.append(Comment(
            i + 1, line[at:].rstrip(), full,
            blank_before=full and i > 0 and _blank(lines[i - 1]),
            blank_after=full and i + 1 < len(lines) and _blank(lines[i + 1]),
        ))
    return comments, code


def texts(text: str) -> list[str]:
    """Just the comment texts of `text`, in source order."""
    return [c.text for c in extract(text)[0]]


def merge(lines: list[Line], comments: list[Comment]) -> str:
    """Render `lines` with `comments` placed by the rule in the module docstring."""
    anchors: list[int] = []
    for line in lines:  # a node without a position inherits its predecessor's line
        anchors.append(max(line.anchor, anchors[-1] if anchors else 0))
    leading: list[list[Comment]] = [[] for _ in lines]
    trailing: list[list[Comment]] = [[] for _ in lines]
    at_end: list[Comment] = []
    for c in comments:  # anchors never decrease, so both searches are bisections
        after = bisect.bisect_right(anchors, c.line)     # first line anchored after the comment
        if c.full:
            (leading[after] if after < len(lines) else at_end).append(c)
        elif after == 0:        # cannot happen for parsed code; keep it rather than lose it
            at_end.append(c)
        else:
            trailing[after - 1].append(c)

    out: list[str] = []
    opener = False                      # the previous line emitted ends with `{`

    def emit_comments(group: list[Comment], indent: int, layout_blank: bool) -> None:
        nonlocal opener
        for j, c in enumerate(group):
            if c.blank_before and out and out[-1] != "" and not opener and not (j == 0 and layout_blank):
                out.append("")
            out.append(" " * indent + c.text)
            opener = False
        if group and group[-1].full and group[-1].blank_after:
            out.append("")

    for i, line in enumerate(lines):
        if line.blank and out and out[-1] != "":
            out.append("")
        *above, last = trailing[i] or [None]
        moved = [Comment(c.line, c.text, False) for c in above]
        emit_comments(leading[i] + moved, line.inner, line.blank)
        text = line.render()
        out.append(text if last is None else f"{text}  {last.text}")
        opener = line.opener
    emit_comments(at_end, 0, False)
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n" if out else ""
