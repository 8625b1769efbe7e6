"""The LALR parser of KMR, built from the grammar file (grammar/kmr.lark), and the
language's lexical vocabulary.

Contract: `parser()` is the one lark parser (LALR, contextual lexer, positions on),
built once per process, its tables cached by lark across processes; its post-lexer
retypes a `(` that starts a line as _LINE_LPAR (see grammar/kmr.lark). `DECL_KEYWORDS`
are the words that start a top-level declaration, `UNITS` the units a quantity may
carry. Read by the rest of kmr_dsl.parse (the only package that imports lark).
"""

from __future__ import annotations

from functools import lru_cache

import lark
from lark import Token

from kmr_dsl.resources import grammar_path

DECL_KEYWORDS = ("import", "model", "data", "knob", "meter", "rule", "pipeline", "property")
UNITS = ("KiB", "MiB", "GiB", "KB", "MB", "GB", "B", "us", "ms", "s", "%", "K", "M", "G")


class _LineStartParen:
    """Post-lexer: a `(` first on its line, outside ( ) and [ ], becomes _LINE_LPAR.

    Newlines are whitespace in the grammar, so without this a budget line starting with
    `(` would continue the previous line as a call (`2 ms (size + 1 KB)`). The grammar
    accepts _LINE_LPAR wherever `(` opens something other than a call's arguments.
    """

    always_accept = ()

    def process(self, stream):
        depth = 0
        prev_line = None
        for tok in stream:
            if tok.type == "LPAR" and depth == 0 and prev_line is not None and tok.line > prev_line:
                tok = Token.new_borrow_pos("_LINE_LPAR", tok.value, tok)
            if tok.type in ("LPAR", "_LINE_LPAR", "LSQB"):
                depth += 1
            elif tok.type in ("RPAR", "RSQB"):
                depth = max(0, depth - 1)
            prev_line = tok.end_line
            yield tok


@lru_cache(maxsize=1)
def parser() -> lark.Lark:
    # lark caches the built LALR tables in the temp folder, keyed on the grammar's text
    # and these options: a second `kmr` process skips about 0.2 s of table building.
    return lark.Lark(
        grammar_path().read_text(encoding="utf-8"),
        parser="lalr",
        lexer="contextual",
        postlex=_LineStartParen(),
        propagate_positions=True,
        maybe_placeholders=True,
        cache=True,
    )
