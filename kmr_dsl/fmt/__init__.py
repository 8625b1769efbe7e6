"""`kmr fmt`: the canonical formatter, AST to text.

Contract:
* `format_program(program) -> str` prints a parsed program in the canonical style
  (see `kmr_dsl.fmt.printer`); `parse(format_program(p))` equals `p` (spans aside) and
  formatting is idempotent.
* `format_source(text, file) -> (str | None, diagnostics)` formats a source file and
  keeps its comments (placement rule: `kmr_dsl.fmt.comments`). It returns `None` and
  the parse diagnostics when the text does not parse. As a last line of defence it
  re-parses its own output and refuses (`None` and a KMR504 error, the file left as it
  is) if the output would mean a different program or lose a comment: `kmr fmt` never
  rewrites a file into something else.
Never raises on any input text.
"""

from __future__ import annotations

import re
from collections import Counter

from kmr_dsl import ast
from kmr_dsl.diagnostics import Diagnostic, Span, error, has_errors
from kmr_dsl.fmt import comments as _comments
from kmr_dsl.fmt.printer import layout, render
from kmr_dsl.parse import parse

__all__ = ["format_program", "format_source"]


def format_program(program: ast.Program) -> str:
    """The canonical text of `program` (no comments: the AST has none)."""
    return render(layout(program))


def _forall_lines(program: ast.Program, code: list[str]) -> dict[int, int]:
    """Source line of each property's `forall` (the AST keeps no position for it): the
    first `forall` word after the property's `{`, strings and comments excluded."""
    found: dict[int, int] = {}
    for i, d in enumerate(program.decls):
        if not isinstance(d, ast.PropertyDecl) or not d.forall or d.span is None:
            continue
        seen_brace = False
        for n in range(d.span.line, min(d.span.end_line, len(code)) + 1):
            text = code[n - 1]
            if not seen_brace:
                at = text.find("{")
                if at < 0:
                    continue
                seen_brace, text = True, text[at + 1:]
            if re.search(r"\bforall\b", text):
                found[i] = n
                break
    return found


def _refuse(file: str, why: str) -> Diagnostic:
    return error("KMR504", Span(file, 1, 1, 1, 2),
                 f"kmr fmt cannot format this file safely: {why}; the file is left as it is",
                 hint="this is a formatter bug: please report it with the file")


def format_source(text: str, file: str = "<input>") -> tuple[str | None, list[Diagnostic]]:
    """Format `text`, keeping its comments; (None, diagnostics) if it does not parse."""
    program, diags = parse(text, file)
    if has_errors(diags):
        return None, diags
    found, code = _comments.extract(text)
    try:
        out = _comments.merge(layout(program, _forall_lines(program, code)), found)
    except Exception as exc:  # a printer bug must reach the user as a diagnostic
        return None, diags + [_refuse(file, f"internal error {type(exc).__name__}: {exc}")]
    again, again_diags = parse(out, file)
    if has_errors(again_diags) or again != program:
        return None, diags + [_refuse(file, "the formatted text would parse to a different program")]
    if Counter(_comments.texts(out)) != Counter(c.text for c in found):
        return None, diags + [_refuse(file, "a comment could not be placed")]
    return out, diags
