"""The symbol table of an import closure: one namespace for every top-level declaration.

Contract: `Symbols(closure, diags)` records every named declaration of every file in the
closure (imports are transitive: whatever a file imports, directly or not, is visible
everywhere). A name declared twice is KMR202, reported at the later declaration (in
dependency order, so a user's file clashing with the standard library is the one
blamed) with a note locating the first. `undefined(...)` builds the KMR201 diagnostic
with a "did you mean" note (small edit distance first, then difflib) among the names of
the wanted kinds — or, when the file does not import "std" and the name is a standard
one, a note saying to import it.
`name_span(decl)` narrows a declaration's span to its name, for precise carets.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import lru_cache

from kmr_dsl import ast
from kmr_dsl.check.imports import Closure, SourceFile, load_closure
from kmr_dsl.diagnostics import Diagnostic, Span, error
from kmr_dsl.resources import stdlib_dir

_KINDS: dict[type, str] = {
    ast.ModelDecl: "model",
    ast.DataDecl: "data",
    ast.KnobDecl: "knob",
    ast.DerivedMeter: "meter",
    ast.BuiltinMeter: "meter",
    ast.RuleDecl: "rule",
    ast.PipelineDecl: "pipeline",
    ast.PropertyDecl: "property",
}

_ARTICLE = {"model": "a model", "data": "data", "knob": "a knob", "meter": "a meter",
            "rule": "a rule", "pipeline": "a pipeline", "property": "a property"}


def kind_of(decl) -> str | None:
    return _KINDS.get(type(decl))


def describe_kind(kind: str) -> str:
    return _ARTICLE.get(kind, kind)


def _distance(a: str, b: str) -> int:
    """Edit distance counting a swap of two neighbours as one edit (`tset` -> `test`)."""
    prev2, prev = None, list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if prev2 is not None and i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def did_you_mean(name: str, candidates) -> list[str]:
    """A note suggesting the closest candidates (empty when nothing is close): typos
    within a small edit distance first, then difflib's similar-looking names."""
    pool = sorted(set(c for c in candidates if c != name))
    limit = 0 if len(name) <= 2 else max(1, len(name) // 4)   # `x` is not a typo of `a`
    close = sorted((d, c) for c in pool if (d := _distance(name.lower(), c.lower())) <= limit)
    picks = [c for _, c in close[:3]] or difflib.get_close_matches(name, pool, n=2, cutoff=0.75)
    if not picks:
        return []
    return ["did you mean " + " or ".join(f"`{c}`" for c in picks) + "?"]


def name_span(decl, text: str | None) -> Span:
    """The span of the declared name on the declaration's first line, or the whole span."""
    span = decl.span
    name = getattr(decl, "name", None)
    if not text or not name or span.line <= 0:
        return span
    lines = text.split("\n")
    if span.line > len(lines):
        return span
    line = lines[span.line - 1]
    m = re.compile(rf"\b{re.escape(name)}\b").search(line, max(0, span.col - 1))
    if m is None:
        return span
    return Span(span.file, span.line, m.start() + 1, span.line, m.end() + 1)


def find_word(span: Span, word: str, text: str | None, after: str | None = None) -> Span:
    """The first `word` inside `span` (after the first match of regex `after`), or `span`.

    The surface AST keeps a span per node, not per name token; messages about a name
    inside a declaration (`pipeline p(MODEL)`, `forall a, b`) point at the name itself.
    """
    if not text or span.line <= 0:
        return span
    lines = text.split("\n")
    pattern = re.compile(rf"\b{re.escape(word)}\b")
    gate = re.compile(after) if after else None
    for number in range(span.line, min(span.end_line, len(lines)) + 1):
        line = lines[number - 1].split("#")[0]
        start = span.col - 1 if number == span.line else 0
        if gate is not None:
            g = gate.search(line, start)
            if g is None:
                continue
            start, gate = g.end(), None
        m = pattern.search(line, start)
        if m is not None:
            return Span(span.file, number, m.start() + 1, number, m.end() + 1)
    return span


@dataclass(frozen=True, slots=True)
class Entry:
    decl: object
    kind: str
    file: SourceFile


@lru_cache(maxsize=1)
def stdlib_names() -> frozenset[str]:
    """Every name `import "std"` declares (to suggest the import when one is missing)."""
    std = stdlib_dir() / "std.kmr"
    closure = load_closure(std.read_text(encoding="utf-8"), str(std))
    return frozenset(getattr(d, "name", None) for d, _ in closure.decls()) - {None}


class Symbols:
    def __init__(self, closure: Closure, diags: list[Diagnostic]):
        std = str((stdlib_dir() / "std.kmr").resolve())
        self.has_std = any(f.key == std for f in closure.files)
        self.entries: dict[str, Entry] = {}
        for decl, src in closure.decls():
            kind = kind_of(decl)
            if kind is None:
                continue
            first = self.entries.get(decl.name)
            if first is not None:
                diags.append(error(
                    "KMR202", name_span(decl, src.text),
                    f"`{decl.name}` is already declared as {describe_kind(first.kind)}",
                    f"first declared at {name_span(first.decl, first.file.text)}",
                    hint="rename one of the declarations; every top-level name is unique "
                         "across a file and everything it imports"))
                continue
            self.entries[decl.name] = Entry(decl, kind, src)

    def get(self, name: str) -> Entry | None:
        return self.entries.get(name)

    def decl(self, name: str):
        entry = self.entries.get(name)
        return entry.decl if entry else None

    def kind(self, name: str) -> str | None:
        entry = self.entries.get(name)
        return entry.kind if entry else None

    def names(self, *kinds: str) -> list[str]:
        return [n for n, e in self.entries.items() if not kinds or e.kind in kinds]

    def undefined(self, name: str, span: Span, *kinds: str, what: str = "name",
                  extra: tuple[str, ...] = (), hint: str | None = None) -> Diagnostic:
        """KMR201 for `name`; suggestions come from declarations of `kinds` (all if none)."""
        notes = did_you_mean(name, list(self.names(*kinds)) + list(extra))
        if not self.has_std and name in stdlib_names():
            notes = [f"`{name}` is declared in the standard library: add `import \"std\"`"]
        entry = self.get(name)
        if entry is not None:
            # declared, but as something else: say what it is instead of "undefined"
            msg = f"`{name}` is {describe_kind(entry.kind)}, not {describe_kind(what)}"
        else:
            msg = f"undefined {what} `{name}`"
        return error("KMR201", span, msg, *notes, hint=hint)


__all__ = ["Entry", "Symbols", "did_you_mean", "describe_kind", "find_word", "kind_of", "name_span"]
