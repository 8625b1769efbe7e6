"""The state one check run shares between its passes.

Contract: a `Context` is created per run by `kmr_dsl.check.check_source`. It owns the
diagnostics list (every pass appends; nothing raises), the import closure and symbol
table, the checked declarations built so far (rules, meters, knobs, models, data), the
derived-meter cache, the knob families' selectors, and the model facts, fetched from
the facts provider at most once per model. `facts_for` turns a provider's `KmrError`
into the diagnostic it carries and any other exception into KMR216 with the exception
text as a note, so a broken model never surfaces as a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from kmr_dsl import ast
from kmr_dsl.core import program as P
from kmr_dsl.check.imports import Closure
from kmr_dsl.check.names import Symbols
from kmr_dsl.diagnostics import Diagnostic, KmrError, Span, error
from kmr_dsl.facts import LoaderSpec, ModelFacts

FactsProvider = Callable[[LoaderSpec, bool, Span], ModelFacts]


@dataclass
class Context:
    closure: Closure
    symbols: Symbols
    diags: list[Diagnostic]
    provider: FactsProvider | None = None
    trust: bool = False
    rules: dict[str, P.Rule] = field(default_factory=dict)
    meters: dict[str, P.Meter] = field(default_factory=dict)
    knobs: dict[str, P.Knob] = field(default_factory=dict)
    models: dict[str, P.ModelDecl] = field(default_factory=dict)
    data: dict[str, P.DataDecl] = field(default_factory=dict)
    families: dict[str, ast.Selector] = field(default_factory=dict)
    family_layers: dict[str, list[str]] = field(default_factory=dict)
    derived: dict[str, tuple] = field(default_factory=dict)     # name -> (IExpr, Ty)
    deriving: list[str] = field(default_factory=list)           # derived meters being expanded
    _facts: dict[str, ModelFacts | None] = field(default_factory=dict)

    def report(self, *diags: Diagnostic) -> None:
        self.diags.extend(diags)

    def text(self, file: str) -> str | None:
        for f in self.closure.files:
            if f.label == file:
                return f.text
        return None

    def snippet(self, span: Span) -> str | None:
        """The source text of a one-line span, for messages (`size` is bytes …)."""
        text = self.text(span.file)
        if text is None or span.line <= 0 or span.line != span.end_line:
            return None
        lines = text.split("\n")
        if span.line > len(lines):
            return None
        piece = lines[span.line - 1][span.col - 1:span.end_col - 1].strip()
        return piece or None

    def facts_for(self, model: str) -> ModelFacts | None:
        """The facts of a declared model, or None (no provider, or it failed: reported)."""
        if model in self._facts:
            return self._facts[model]
        decl = self.models.get(model)
        facts = None
        if decl is not None and self.provider is not None:
            trust = self.trust or decl.loader.kw("trust") is True
            try:
                facts = self.provider(decl.loader, trust, decl.span)
            except KmrError as exc:
                self.report(exc.diagnostic)
            except SystemExit as exc:   # the model's code ended the process: never a silent exit 0
                self.report(error("KMR411", decl.span, f"model `{model}`: its code called sys.exit({exc.code!r})",
                                  hint="remove the sys.exit call (raise an exception to report a problem)"))
            except Exception as exc:  # noqa: BLE001 - the user's model code may raise anything
                self.report(error(
                    "KMR216", decl.span, f"model `{model}` could not be loaded for checking",
                    f"{type(exc).__name__}: {exc}",
                    hint="fix the loader call or the code it runs; selectors are checked against the real model"))
            if facts is not None and not isinstance(facts, ModelFacts):
                self.report(error("KMR216", decl.span, f"model `{model}`: the facts provider returned "
                                  f"{type(facts).__name__}, not ModelFacts"))
                facts = None
        self._facts[model] = facts
        return facts

    def loaded_facts(self) -> dict[str, ModelFacts | None]:
        return dict(self._facts)


__all__ = ["Context", "FactsProvider"]
