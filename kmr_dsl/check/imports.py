"""Load a program and everything it imports (the import closure).

Contract: `load_closure(text, label)` parses the main text and, transitively, every
file it imports, and returns the files in dependency order (a file after everything it
imports; the main file last) with every parse diagnostic of every file. It never raises.

- `import "std"` is the standard library (`kmr_dsl.resources.stdlib_dir()/std.kmr`);
  any other path is relative to the folder of the importing file; a path without the
  `.kmr` suffix is also tried with it.
- A missing or unreadable file is KMR203 at the import; a cycle is KMR204 at the import
  that closes it, with the cycle listed. A file reached twice (a diamond) is loaded once.
- Files are identified by their resolved path; spans carry a readable label (the path
  as reached from the main file's label), so diagnostics can be rendered from disk.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from kmr_dsl import ast
from kmr_dsl.diagnostics import Diagnostic, error
from kmr_dsl.parse import parse
from kmr_dsl.resources import stdlib_dir

STD = "std"


@dataclass
class SourceFile:
    label: str             # the file name spans carry
    key: str               # resolved path: identity for cycles and diamonds
    text: str
    program: ast.Program

    @property
    def folder(self) -> Path:
        return Path(self.label).parent


@dataclass
class Closure:
    files: list[SourceFile] = field(default_factory=list)
    diags: list[Diagnostic] = field(default_factory=list)

    @property
    def main(self) -> SourceFile:
        return self.files[-1]

    def sources(self) -> dict[str, str]:
        return {f.label: f.text for f in self.files}

    def decls(self):
        """(declaration, its file) for the whole closure, in dependency order."""
        for f in self.files:
            for d in f.program.decls:
                yield d, f


def _key(label: str) -> str:
    try:
        return str(Path(label).resolve())
    except (OSError, RuntimeError):
        return os.path.abspath(label)


def _target(importer: SourceFile, path: str) -> list[str]:
    """Candidate labels for an import, in the order they are tried."""
    if path == STD:
        return [str(stdlib_dir() / "std.kmr")]
    p = Path(path)
    base = p if p.is_absolute() else importer.folder / p
    label = os.path.normpath(str(base))
    cands = [label]
    if not label.endswith(".kmr"):
        cands.append(label + ".kmr")
    return cands


class _Loader:
    def __init__(self) -> None:
        self.closure = Closure()
        self.done: set[str] = set()
        self.stack: list[SourceFile] = []

    def visit(self, src: SourceFile) -> None:
        self.stack.append(src)
        for decl in src.program.decls:
            if isinstance(decl, ast.ImportDecl):
                self._import(src, decl)
        self.stack.pop()
        self.done.add(src.key)
        self.closure.files.append(src)

    def _import(self, importer: SourceFile, decl: ast.ImportDecl) -> None:
        cands = _target(importer, decl.path)
        label = next((c for c in cands if Path(c).is_file()), None)
        if label is None:
            tried = " or ".join(f"`{c}`" for c in cands)
            self.closure.diags.append(error(
                "KMR203", decl.span, f"cannot import `{decl.path}`: no such file",
                f"looked for {tried}",
                hint="fix the path; it is relative to the folder of the importing file"))
            return
        key = _key(label)
        on_stack = [s.key for s in self.stack]
        if key in on_stack:
            cycle = [s.label for s in self.stack[on_stack.index(key):]] + [label]
            self.closure.diags.append(error(
                "KMR204", decl.span, f"import cycle: `{decl.path}` imports this file back",
                "cycle: " + " -> ".join(cycle)))
            return
        if key in self.done:
            return
        try:
            text = Path(label).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.closure.diags.append(error(
                "KMR203", decl.span, f"cannot read `{decl.path}`", f"{type(exc).__name__}: {exc}"))
            return
        program, diags = _parse(text, label)
        self.closure.diags.extend(diags)
        self.visit(SourceFile(label, key, text, program))


@lru_cache(maxsize=64)
def _parse(text: str, label: str):
    """Parsing is pure and the AST immutable, so the standard library (imported by
    nearly every program) is parsed once per process, not once per check."""
    program, diags = parse(text, label)
    return program, tuple(diags)


def load_closure(text: str, label: str) -> Closure:
    """Parse `text` (the file named `label`) and its imports; never raises."""
    loader = _Loader()
    program, diags = parse(text, label)
    loader.closure.diags.extend(diags)
    loader.visit(SourceFile(label, _key(label), text, program))
    return loader.closure


__all__ = ["Closure", "SourceFile", "load_closure", "STD"]
