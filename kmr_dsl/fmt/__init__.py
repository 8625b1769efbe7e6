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
  rewrites a file into something else. A file with any parse error (a unit glued to a
  budget line's number included) is refused, not reformatted; one over
  MAX_SOURCE_CHARS is refused with KMR510. A leading byte order mark is kept.
* `kmr_dsl.fmt.files.write_formatted(path, text)` replaces a file's text atomically,
  through a symlink to its target, keeping the file's mode.
Never raises on any input text.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter

from kmr_dsl import ast
from kmr_dsl.diagnostics import Diagnostic, Span, error, has_errors
from kmr_dsl.fmt import comments as _comments
from kmr_dsl.fmt.printer import layout, render
from kmr_dsl.parse import BOM, parse

# `kmr fmt` refuses larger sources (KMR510): the parser reads some 30-100 KB a second,
# and fmt parses twice, so this keeps one file under half a minute; a real program is
# a few KB.
MAX_SOURCE_CHARS = 1 << 18

__all__ = ["MAX_SOURCE_CHARS", "format_program", "format_source", "same_program", "too_large"]


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


def same_program(a, b) -> bool:
    """AST equality (spans aside, as `==`), walked with an explicit stack: the
    dataclasses' own `__eq__` recurses once per level and a program may nest as deep as
    the parser allows."""
    pending = [(a, b)]
    while pending:
        x, y = pending.pop()
        if type(x) is not type(y):
            return False
        if dataclasses.is_dataclass(x):
            pending.extend((getattr(x, f.name), getattr(y, f.name)) for f in dataclasses.fields(x) if f.compare)
        elif isinstance(x, (tuple, list)):
            if len(x) != len(y):
                return False
            pending.extend(zip(x, y))
        elif x != y:
            return False
    return True


def too_large(file: str, size: int, unit: str = "characters") -> Diagnostic:
    # located at the file, not at a line: showing the first line could print megabytes
    return error("KMR510", Span.unknown(file),
                 f"{file} is too large to format ({size:,} {unit}; the limit is {MAX_SOURCE_CHARS:,} characters)",
                 hint="a KMR program is a few KB: split it into files joined by `import`")


def _refuse(file: str, why: str) -> Diagnostic:
    return error("KMR504", Span(file, 1, 1, 1, 2),
                 f"kmr fmt cannot format this file safely: {why}; the file is left as it is",
                 hint="this is a formatter bug: please report it with the file")


def format_source(text: str, file: str = "<input>") -> tuple[str | None, list[Diagnostic]]:
    """Format `text`, keeping its comments (and a leading byte order mark); (None,
    diagnostics) if it does not parse or is larger than MAX_SOURCE_CHARS."""
    if len(text) > MAX_SOURCE_CHARS:
        return None, [too_large(file, len(text))]
    if text.startswith(BOM):
        # formatted as a space (what the parser reads it as: the columns stay the
        # text's), then put back in front
        out, diags = format_source(" " + text[1:], file)
        return (None if out is None else BOM + out), diags
    program, diags = parse(text, file)
    if has_errors(diags):
        return None, diags
    found, code = _comments.extract(text)
    try:
        out = _comments.merge(layout(program, _forall_lines(program, code)), found)
    except Exception as exc:  # a printer bug must reach the user as a diagnostic
        return None, diags + [_refuse(file, f"internal error {type(exc).__name__}: {exc}")]
    again, again_diags = parse(out, file)
    if has_errors(again_diags) or not same_program(again, program):
        return None, diags + [_refuse(file, "the formatted text would parse to a different program")]
    if Counter(_comments.texts(out)) != Counter(c.text for c in found):
        return None, diags + [_refuse(file, "a comment could not be placed")]
    return out, diags
