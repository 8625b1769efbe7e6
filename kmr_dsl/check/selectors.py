"""Selectors against the real model: which layers a step, a `for` or a family selects.

Contract:
- A layer matches `layers(K1, K2, name = "glob")` when its kind (module class name) is
  one of the K's and its qualified name matches the glob (fnmatch, case-sensitive,
  `*` crosses dots). With no kinds, a step's selector means the kinds the rule accepts
  and a family's selector means every kind. `all`, or no selector, on a rule with
  `accepts` is every layer of an accepted kind. Layers come back in model order.
- `step_layers` reports KMR215 for a listed kind the rule does not accept (no model
  needed), KMR220 for any selector on a rule without `accepts`, and KMR214 when nothing
  matches — with notes listing what the model has (layers counted per kind, the first
  names of each, and the top-level name prefixes), truncated for big models.
- Without facts (no provider, or the model failed to load) nothing is matched and no
  KMR214 is reported; the step gets no layers.
"""

from __future__ import annotations

from kmr_dsl import ast
from kmr_dsl.core import program as P
from kmr_dsl.check.names import did_you_mean
from kmr_dsl.diagnostics import error
from kmr_dsl.facts import ModelFacts

MAX_KINDS = 8        # kinds listed in a KMR214 note before "… and N other kinds"
MAX_NAMES = 4        # names shown per kind


def same_selector(a: ast.Selector | None, b: ast.Selector | None) -> bool:
    """Same kinds (as a set) and the same name glob."""
    if a is None or b is None:
        return False
    return set(a.kinds) == set(b.kinds) and a.name_glob == b.name_glob


def show_selector(s: ast.Selector | None) -> str:
    if s is None:
        return "all"
    parts = list(s.kinds) + ([f'name = "{s.name_glob}"'] if s.name_glob is not None else [])
    return f"layers({', '.join(parts)})"


def match(facts: ModelFacts, kinds: tuple[str, ...], glob: str | None) -> tuple[str, ...]:
    return tuple(layer.name for layer in facts.select(tuple(kinds), glob))


def model_notes(facts: ModelFacts, model: str, kinds: tuple[str, ...] = (), glob: str | None = None) -> list[str]:
    """What the model has, for a selector that matched nothing."""
    by_kind: dict[str, list[str]] = {}
    for layer in facts.layers:
        by_kind.setdefault(layer.kind, []).append(layer.name)
    if not by_kind:
        return [f"model `{model}` has no selectable layers"]
    notes = [f"model `{model}` has {len(facts.layers)} layer(s) of {len(by_kind)} kind(s):"]
    ordered = sorted(by_kind.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    for kind, names in ordered[:MAX_KINDS]:
        shown = ", ".join(names[:MAX_NAMES]) + (f", … ({len(names) - MAX_NAMES} more)" if len(names) > MAX_NAMES else "")
        notes.append(f"  {kind} x{len(names)}: {shown}")
    if len(ordered) > MAX_KINDS:
        rest = ordered[MAX_KINDS:]
        notes.append(f"  … and {len(rest)} other kind(s): " + ", ".join(k for k, _ in rest[:MAX_KINDS]))
    missing = [k for k in kinds if k not in by_kind]
    for k in missing:
        notes.extend(did_you_mean(k, by_kind))
    if glob is not None:
        prefixes = list(dict.fromkeys(layer.name.split(".")[0] + (".*" if "." in layer.name else "")
                                      for layer in facts.layers))
        shown = ", ".join(prefixes[:MAX_KINDS]) + (", …" if len(prefixes) > MAX_KINDS else "")
        notes.append(f"names start with: {shown} (the glob must match the whole qualified name)")
    return notes


def _nothing(cx, span, what: str, model: str, facts: ModelFacts, kinds, glob):
    cx.report(error("KMR214", span, f"{what} matches no layer of model `{model}`",
                    *model_notes(facts, model, kinds, glob),
                    hint="pick a kind and name pattern from the layers listed"))


def step_layers(cx, rule: P.Rule, step: ast.Step, model: str, facts: ModelFacts | None) -> tuple[str, ...]:
    """The layers one step (outside a `for`) applies to; () for a whole-model rule."""
    sel = step.selector
    if rule.accepts is None:
        if sel is not None:
            cx.report(error("KMR220", sel.span, f"rule `{rule.name}` acts on the whole model; it takes no selector",
                            hint=f"drop `on {show_selector(sel) if isinstance(sel, ast.Selector) else 'all'}`"))
        return ()
    if isinstance(sel, ast.Selector):
        if not accepted(cx, rule, sel, sel.span):
            return ()
        kinds, glob, what = sel.kinds or rule.accepts, sel.name_glob, f"selector {show_selector(sel)}"
    else:
        kinds, glob, what = rule.accepts, None, f"`{rule.name}` on all layers it accepts ({', '.join(rule.accepts)})"
    if facts is None:
        return ()
    layers = match(facts, kinds, glob)
    if not layers:
        _nothing(cx, sel.span if sel is not None else step.span, what, model, facts,
                 sel.kinds if isinstance(sel, ast.Selector) else (), glob)
    return layers


def accepted(cx, rule: P.Rule, sel: ast.Selector, span) -> bool:
    """KMR215 for every listed kind the rule does not accept."""
    bad = [k for k in sel.kinds if k not in rule.accepts]
    for k in bad:
        cx.report(error("KMR215", span, f"rule `{rule.name}` does not accept {k} layers",
                        f"`{rule.name}` accepts: " + ", ".join(rule.accepts),
                        hint=f"select only kinds `{rule.name}` accepts"))
    return not bad


def loop_layers(cx, sel: ast.Selector, model: str, facts: ModelFacts | None) -> tuple[str, ...]:
    """The layers a `for l in layers(...)` iterates."""
    if facts is None:
        return ()
    layers = match(facts, sel.kinds, sel.name_glob)
    if not layers:
        _nothing(cx, sel.span, f"the `for` selector {show_selector(sel)}", model, facts, sel.kinds, sel.name_glob)
    return layers


def family_layers(sel: ast.Selector, facts: ModelFacts | None) -> tuple[str, ...]:
    """The instances a knob family has on one model. A family is only ever indexed in a
    `for` over the same selector, and that loop already reports KMR214 when it matches
    nothing, so this reports nothing itself."""
    return () if facts is None else match(facts, sel.kinds, sel.name_glob)


__all__ = ["same_selector", "show_selector", "accepted", "family_layers", "loop_layers", "match", "model_notes", "step_layers"]
