"""The resolver and checker: surface AST -> CheckedProgram (kmr_dsl.core.program).

Public API:
- `check_file(path, facts_provider=None, trust=False) -> (CheckedProgram | None, diags)`
- `check_source(text, file, facts_provider=None, trust=False)` — the same for text in
  memory; `file` names it in spans and anchors relative imports and loader paths.
- `check_with_sources(...)` — `check_source` plus every loaded file's text (label ->
  text), for rendering diagnostics even when the program is malformed.

`facts_provider(spec: LoaderSpec, trust: bool, span: Span) -> ModelFacts` is asked for
each model a pipeline runs on; a `KmrError` it raises becomes the diagnostic it carries,
any other exception becomes KMR216 with the exception text as a note. With no provider,
selectors are not checked against a model (parse-only tools) and every other check runs.
The program is None whenever there is an error; warnings do not prevent it. Nothing here
raises at the caller: an internal failure becomes one KMR500 diagnostic.

Passes, in order (each collects diagnostics and carries on): imports and parsing
(imports.py), names (names.py), builtin meters and rules (rules.py), knobs (knobs.py),
derived meters (exprs.py, each expanded once, cycles detected), models and data
(loaders.py), pipelines and properties (pipelines.py, selectors.py, calls.py).
This package imports no torch, z3 or sympy.
"""

from __future__ import annotations

import traceback
from dataclasses import replace
from pathlib import Path

from kmr_dsl import ast
from kmr_dsl.check.context import Context, FactsProvider
from kmr_dsl.check.exprs import Lowerer
from kmr_dsl.check.imports import load_closure
from kmr_dsl.check.knobs import check_knob
from kmr_dsl.check.loaders import check_data, check_model
from kmr_dsl.check.names import Symbols
from kmr_dsl.check.pipelines import check_pipeline, check_property
from kmr_dsl.core.program import CheckedProgram
from kmr_dsl.check.rules import check_meter, check_rule
from kmr_dsl.diagnostics import Diagnostic, Span, error, has_errors, sort_key


def check_file(path, facts_provider: FactsProvider | None = None,
               trust: bool = False) -> tuple[CheckedProgram | None, list[Diagnostic]]:
    label = str(path)
    try:
        text = Path(label).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [error("KMR501", Span.unknown(label), f"cannot read {label}", f"{type(exc).__name__}: {exc}")]
    return check_source(text, label, facts_provider, trust)


def check_source(text: str, file: str = "<input>", facts_provider: FactsProvider | None = None,
                 trust: bool = False) -> tuple[CheckedProgram | None, list[Diagnostic]]:
    program, diags, _ = check_with_sources(text, file, facts_provider, trust)
    return program, diags


def check_with_sources(text: str, file: str = "<input>", facts_provider: FactsProvider | None = None,
                       trust: bool = False):
    """(program or None, diagnostics sorted by position, {file label: text})."""
    sources = {file: text}
    try:
        program, diags, sources = _check(text, file, facts_provider, trust)
    except Exception as exc:  # noqa: BLE001 - a checker bug must not reach the user as a traceback
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return None, [error("KMR500", Span.unknown(file), "internal error in the checker", detail)], sources
    return program, diags, sources


def _check(text, file, provider, trust):
    closure = load_closure(text, file)
    diags: list[Diagnostic] = list(closure.diags)
    cx = Context(closure, Symbols(closure, diags), diags, provider, trust)
    lowerer = Lowerer(cx)
    entries = list(cx.symbols.entries.values())
    for e in entries:
        if isinstance(e.decl, ast.BuiltinMeter):
            cx.meters[e.decl.name] = check_meter(cx, e.decl)
    for e in entries:
        if isinstance(e.decl, ast.RuleDecl):
            cx.rules[e.decl.name] = check_rule(lowerer, e.decl)
        elif isinstance(e.decl, ast.KnobDecl):
            knob = check_knob(cx, e.decl)
            if knob is not None:
                cx.knobs[knob.name] = knob
        elif isinstance(e.decl, ast.ModelDecl):
            model = check_model(cx, e.decl, e.file)
            if model is not None:
                cx.models[model.name] = model
        elif isinstance(e.decl, ast.DataDecl):
            data = check_data(cx, e.decl, e.file)
            if data is not None:
                cx.data[data.name] = data
    for e in entries:
        if isinstance(e.decl, ast.DerivedMeter):
            # expanded (and its errors reported) once, here, at its own declaration
            lowerer.derived(e.decl.name, e.decl.span, baseline=False)
    pipelines, properties = {}, {}
    for e in entries:
        if isinstance(e.decl, ast.PipelineDecl):
            pipelines[e.decl.name] = check_pipeline(lowerer, e.decl)
    for e in entries:
        if isinstance(e.decl, ast.PropertyDecl):
            properties[e.decl.name] = check_property(lowerer, e.decl)
    diags.sort(key=_order(closure))
    sources = closure.sources()
    if has_errors(diags) or any(v is None for v in (*pipelines.values(), *properties.values())):
        return None, diags, sources
    return _program(cx, file, pipelines, properties, sources), diags, sources


def _order(closure):
    """Diagnostics of the main file first (where the user looks), then imported files."""
    rank = {f.label: i for i, f in enumerate(reversed(closure.files))}
    return lambda d: (rank.get(d.span.file, len(rank)), sort_key(d))


def _program(cx: Context, file: str, pipelines, properties, sources) -> CheckedProgram:
    knobs = {name: (replace(k, layers=tuple(cx.family_layers.get(name, ()))) if k.is_family else k)
             for name, k in cx.knobs.items()}
    facts = cx.loaded_facts()
    models = {name: replace(m, facts=facts.get(name)) for name, m in cx.models.items()}
    return CheckedProgram(file, knobs, dict(cx.rules), dict(cx.meters), models, dict(cx.data),
                          pipelines, properties, sources)


__all__ = ["CheckedProgram", "check_file", "check_source", "check_with_sources"]
