"""What the editor asks about one document, answered from the checker's view of it.

Contract: torch-, z3- and pygls-free. `Analysis.of(text, path)` parses the document
and its import closure (the checker's own loader, so imported files and the stdlib
resolve exactly as `kmr check` resolves them) and, separately, checks it without a
facts provider (names, types and units; no model is loaded). Every query below is a
pure function of that snapshot and never raises on a malformed document: a query that
finds nothing returns None or an empty list.

Positions here are 0-based (line, character), as the protocol has them; spans from
the checker are 1-based and converted in one place (`span_range`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kmr_dsl import ast
from kmr_dsl.check import check_with_sources
from kmr_dsl.check.imports import Closure, load_closure
from kmr_dsl.diagnostics import Diagnostic, Span

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
KINDS = ("Linear", "Conv2d", "Embedding", "LayerNorm")


@dataclass(frozen=True)
class Symbol:
    """A declaration visible from the document: its name, declaration and file label."""

    name: str
    decl: object
    file: str

    @property
    def kind(self) -> str:
        return type(self.decl).__name__


def span_range(span: Span) -> tuple[int, int, int, int]:
    """A 1-based, end-exclusive checker span as 0-based protocol coordinates.

    A whole-file span (line 0) becomes the first character of the file, so a
    diagnostic about an import or a loader is still shown somewhere."""
    if span.line <= 0:
        return 0, 0, 0, 1
    end_line = max(span.end_line, span.line)
    end_col = span.end_col if span.end_line >= span.line else span.col + 1
    if end_line == span.line and end_col <= span.col:
        end_col = span.col + 1
    return span.line - 1, span.col - 1, end_line - 1, end_col - 1


@dataclass
class Analysis:
    path: str
    text: str
    closure: Closure
    diagnostics: list[Diagnostic]
    program: object | None                  # CheckedProgram without model facts, or None
    symbols: dict[str, Symbol] = field(default_factory=dict)

    @staticmethod
    def of(text: str, path: str) -> "Analysis":
        closure = load_closure(text, path)
        program, diags, _ = check_with_sources(text, path)
        symbols: dict[str, Symbol] = {}
        for decl, f in closure.decls():
            name = None if isinstance(decl, ast.ImportDecl) else getattr(decl, "name", None)
            if name is not None:
                symbols.setdefault(name, Symbol(name, decl, f.label))
        return Analysis(path, text, closure, list(diags), program, symbols)

    # ------------------------------------------------------------ text queries

    def line(self, n: int) -> str:
        lines = self.text.split("\n")
        return lines[n] if 0 <= n < len(lines) else ""

    def word_at(self, line: int, char: int) -> tuple[str, int, int] | None:
        """The identifier under (or just before) the cursor and its columns."""
        text = self.line(line)
        for m in _WORD.finditer(text):
            if m.start() <= char <= m.end():
                return m.group(), m.start(), m.end()
        return None

    def enclosing_call(self, line: int, char: int) -> str | None:
        """The callee of the innermost unclosed `(` before the cursor, on its line or above."""
        before = "\n".join(self.text.split("\n")[:line] + [self.line(line)[:char]])
        depth = 0
        in_string = False
        for i in range(len(before) - 1, -1, -1):
            c = before[i]
            if c == '"':
                in_string = not in_string
            if in_string:
                continue
            if c == ")":
                depth += 1
            elif c == "(":
                if depth == 0:
                    m = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\s*$", before[:i])
                    return m.group(1) if m else None
                depth -= 1
            elif c in "{}":
                return None
        return None

    def in_string(self, line: int, char: int) -> bool:
        return self.line(line)[:char].count('"') % 2 == 1

    # ------------------------------------------------------------ declarations

    def rule(self, name: str):
        """The checked rule (when the document checks) or its surface declaration."""
        if self.program is not None and name in self.program.rules:
            return self.program.rules[name]
        sym = self.symbols.get(name)
        return sym.decl if sym is not None and isinstance(sym.decl, ast.RuleDecl) else None

    def source_of(self, span: Span) -> str:
        """The text a span covers, from whichever file of the closure holds it."""
        for f in self.closure.files:
            if f.label == span.file:
                lines = f.text.split("\n")[span.line - 1:span.end_line]
                if not lines:
                    return ""
                lines[-1] = lines[-1][:span.end_col - 1] if len(lines) > 1 or span.end_line == span.line else lines[-1]
                lines[0] = lines[0][span.col - 1:]
                return "\n".join(lines).rstrip()
        return ""

    def name_span(self, sym: Symbol) -> Span:
        """Where a declaration's name is written (its first occurrence in the declaration)."""
        span = sym.decl.span
        text = self.source_of(span)
        m = re.search(rf"\b{re.escape(sym.name)}\b", text)
        if m is None:
            return span
        before = text[:m.start()]
        line = span.line + before.count("\n")
        col = (m.start() - before.rfind("\n")) if "\n" in before else span.col + m.start()
        return Span(span.file, line, col, line, col + len(sym.name))

    def import_at(self, line: int, char: int) -> str | None:
        """The file an `import "..."` on this line resolves to, if the cursor is on it."""
        m = re.match(r'\s*import\s+"([^"]*)"', self.line(line))
        if m is None:
            return None
        target = m.group(1)
        for decl, f in self.closure.decls():
            if isinstance(decl, ast.ImportDecl) and f.label == self.path and decl.span.line == line + 1:
                return _resolve_import(self.closure, f, target)
        return None


def _resolve_import(closure: Closure, importer, target: str) -> str | None:
    from kmr_dsl.check.imports import _target  # the checker's own resolution order

    labels = {f.label for f in closure.files}
    for cand in _target(importer, target):
        if cand in labels:
            return cand
    return None
