"""Writing the imported recipe as a KMR program, with what this installation supports.

Contract: `emit(recipe, staged_steps, model, data, name) -> (text, diagnostics)`.
Every step is checked against the standard library actually installed (its rules,
their parameters and enum members, read with the checker's own loader) and against
the grammar (whether `layers(...)` takes lists, `re:` patterns and `exclude`, probed
by parsing a sample). A step that needs something missing is written as a comment
with the reason, and reported as KMR533 at its modifier: nothing is dropped silently,
and the program still parses and checks. So a newer KMR turns comments into steps with
no change here.
"""

from __future__ import annotations

import re
from functools import lru_cache

from kmr_dsl import ast
from kmr_dsl.diagnostics import Diagnostic, has_errors, warning
from kmr_dsl.importer.mapping import DATA, Enum, Selector, StepOut
from kmr_dsl.importer.recipe import Recipe


@lru_cache(maxsize=1)
def stdlib_rules() -> dict[str, dict[str, tuple[str, ...] | None]]:
    """rule -> {parameter: its enum members, or None for a non-enum parameter}."""
    from kmr_dsl.check.imports import load_closure

    closure = load_closure('import "std"\n', "<import>")
    rules = {}
    for decl, _ in closure.decls():
        if isinstance(decl, ast.RuleDecl):
            rules[decl.name] = {p.name: (p.type.members if isinstance(p.type, ast.EnumType) else None)
                                for p in decl.params}
    return rules


@lru_cache(maxsize=None)
def grammar_has(feature: str) -> bool:
    """Whether the installed grammar parses a selector feature of KMR 0.2."""
    from kmr_dsl.parse import parse

    sample = {"list": 'layers(Linear, name = ["a", "b"])', "exclude": 'layers(Linear, exclude = "a")',
              "kinds": "layers([Linear, Conv2d])"}[feature]
    _, diags = parse(f"pipeline p(m) {{ r() on {sample} }}\n", "<probe>")
    return not has_errors(diags)


def _literal(v) -> str:
    if isinstance(v, Enum):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, int):
        return str(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _patterns(ps: tuple[str, ...]) -> str:
    return _literal(ps[0]) if len(ps) == 1 else "[" + ", ".join(_literal(p) for p in ps) + "]"


def selector_text(sel: Selector) -> tuple[str, list[str]]:
    """`layers(...)` in the newest syntax this grammar takes, and what it cannot say."""
    missing = []
    kinds = sel.kinds[0] if len(sel.kinds) == 1 else "[" + ", ".join(sel.kinds) + "]"
    if len(sel.kinds) > 1 and not grammar_has("kinds"):
        kinds = ", ".join(sel.kinds)  # the 0.1 form: several kinds as arguments
    parts = [kinds]
    if sel.names:
        needs_list = len(sel.names) > 1 or any(p.startswith("re:") for p in sel.names)
        if needs_list and not grammar_has("list"):
            missing.append("name patterns as lists or `re:` regular expressions (KMR 0.2 selectors)")
        parts.append(f"name = {_patterns(sel.names)}")
    if sel.exclude:
        if not grammar_has("exclude"):
            missing.append("`exclude` in selectors (KMR 0.2)")
        parts.append(f"exclude = {_patterns(sel.exclude)}")
    return f"layers({', '.join(parts)})", missing


def step_text(step: StepOut) -> tuple[str, list[str]]:
    rules = stdlib_rules()
    missing = []
    params = rules.get(step.rule)
    if params is None:
        missing.append(f"rule `{step.rule}` (not in this installation's standard library)")
    else:
        for name, value in step.args:
            if name not in params:
                missing.append(f"parameter `{name}` of `{step.rule}`")
            elif isinstance(value, Enum) and params[name] is not None and str(value) not in params[name]:
                missing.append(f"`{step.rule}({name} = {value})`")
    args = ", ".join(f"{k} = {_literal(v)}" for k, v in step.args)
    text = f"{step.rule}({args})"
    if step.selector is not None:
        sel, sel_missing = selector_text(step.selector)
        missing += sel_missing
        text += f" on {sel}"
    return text, missing


def _ident(name: str) -> str:
    ident = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_") or "recipe"
    return ident if not ident[0].isdigit() else f"r_{ident}"


def emit(recipe: Recipe, staged, model: str | None, data: str | None, name: str) -> tuple[str, list[Diagnostic]]:
    diags: list[Diagnostic] = []
    body: list[str] = []
    uses_data = False
    for stage, steps in staged:
        label = stage.name + (f" (run_type: {stage.run_type})" if stage.run_type else "")
        body.append(f"    # {label}")
        for step in steps:
            text, missing = step_text(step)
            uses_data = uses_data or any(isinstance(v, Enum) and v == DATA for _, v in step.args)
            if missing:
                diags.append(warning("KMR533", step.span, f"{step.origin}: this KMR lacks what `{step.rule}` needs",
                                     *[f"missing: {m}" for m in missing],
                                     hint="the step is written as a comment; a KMR with these features imports it"))
                body.append(f"    # needs {'; '.join(missing)}:")
                body.append(f"    # {text}")
            else:
                body.append(f"    {text}")
        if not steps:
            body.append("    # (no step: see the diagnostics for this stage)")
    head = [f"# Imported from {recipe.file} ({recipe.flavour} recipe) by `kmr import`.",
            "# Each modifier became the steps below; what had no KMR equivalent is reported",
            "# by `kmr import` and, where a step needs a newer KMR, written as a comment.",
            'import "std"', ""]
    placeholder_model = 'hf("MODEL")  # pass --model, e.g. --model \'factory("mymodel:make")\''
    head.append(f"model recipe_model = {model or placeholder_model}")
    if uses_data:
        placeholder_data = 'factory("calibration:load")  # pass --data: the calibration / training data'
        head.append(f"data {DATA} = {data or placeholder_data}")
    text = "\n".join(head + ["", f"pipeline {_ident(name)}(recipe_model) {{"] + body + ["}", ""])
    return text, diags


__all__ = ["emit", "grammar_has", "selector_text", "stdlib_rules", "step_text"]
