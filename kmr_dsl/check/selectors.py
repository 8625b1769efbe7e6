"""Selectors against the real model: which layers a step, a `for` or a family selects.

Contract:
- A layer matches `layers(K1, K2, name = P, exclude = Q)` (or `layers([K1, K2], ...)`)
  when its kind (module class name) is one of the K's, its qualified name matches P and
  does not match Q. P and Q are a pattern or a list of them (any one matching): a glob
  (fnmatch, case-sensitive, `*` crosses dots) or `re:` + a regular expression matched
  against the whole name (kmr_dsl.patterns). With no kinds, a step's selector means the kinds the rule accepts
  and a family's selector means every kind. `all`, or no selector, on a rule with
  `accepts` is every layer of an accepted kind. Layers come back in model order.
- `step_layers` reports KMR215 for a listed kind the rule does not accept (no model
  needed), KMR220 for any selector on a rule without `accepts`, and KMR214 when nothing
  matches — with notes listing what the model has (layers counted per kind, the first
  names of each, and the top-level name prefixes), truncated for big models.
- Every pattern must earn its place (once the selector matches something; an empty
  selection is KMR214 alone): KMR240 for a `name` pattern that matches no layer
  of the selected kinds, or an `exclude` pattern that removes nothing from what the
  kinds and names chose; KMR241 for a `re:` expression that does not compile, KMR242 for
  an empty pattern list (these two need no model).
- Without facts (no provider, or the model failed to load) nothing is matched and no
  KMR214 is reported; the step gets no layers.
"""

from __future__ import annotations

from kmr_dsl import ast
from kmr_dsl.core import program as P
from kmr_dsl.check.names import did_you_mean
from kmr_dsl.diagnostics import error
from kmr_dsl.facts import ModelFacts
from kmr_dsl.patterns import match_one, pattern_error

MAX_KINDS = 8        # kinds listed in a KMR214 note before "… and N other kinds"
MAX_NAMES = 4        # names shown per kind


def _values(patterns) -> tuple[str, ...] | None:
    return None if patterns is None else tuple(p.value for p in patterns)


def same_selector(a: ast.Selector | None, b: ast.Selector | None) -> bool:
    """Same kinds (as a set) and the same name and exclude patterns (as sets)."""
    if a is None or b is None:
        return False

    def key(patterns):
        v = _values(patterns)
        return None if v is None else frozenset(v)
    return set(a.kinds) == set(b.kinds) and key(a.names) == key(b.names) and key(a.exclude) == key(b.exclude)


def _show_patterns(patterns) -> str:
    vals = [p.value for p in patterns]
    quoted = ", ".join(ast.quote(v) for v in vals)
    return quoted if len(vals) == 1 else f"[{quoted}]"


def show_selector(s: ast.Selector | None) -> str:
    if s is None:
        return "all"
    parts = list(s.kinds)
    if s.names is not None:
        parts.append(f"name = {_show_patterns(s.names)}")
    if s.exclude is not None:
        parts.append(f"exclude = {_show_patterns(s.exclude)}")
    return f"layers({', '.join(parts)})"


def match(facts: ModelFacts, kinds: tuple[str, ...], sel: ast.Selector | None = None) -> tuple[str, ...]:
    names = None if sel is None else _values(sel.names)
    exclude = None if sel is None else _values(sel.exclude)
    return tuple(layer.name for layer in facts.select(tuple(kinds), names, exclude))


def patterns_ok(cx, sel: ast.Selector) -> bool:
    """KMR242 for an empty pattern list, KMR241 for a regular expression that does not
    compile (no model needed). False when the selector cannot be used."""
    ok = True
    for key, patterns in (("name", sel.names), ("exclude", sel.exclude)):
        if patterns is not None and not patterns:
            cx.report(error("KMR242", sel.span, f"`{key} = []` lists no pattern",
                            hint=f'write at least one pattern, e.g. `{key} = ["lm_head"]`, or drop `{key}`'))
            ok = False
        for p in patterns or ():
            why = pattern_error(p.value)
            if why is not None:
                cx.report(error("KMR241", p.span, f'pattern "{p.value}": {why}',
                                "a pattern starting with `re:` is a Python regular expression matched against "
                                "the whole qualified name",
                                hint='fix the expression, e.g. `"re:.*mlp\\.gate$"`; '
                                     "a plain string without `re:` is a glob"))
                ok = False
    return ok


def unmatched_patterns(cx, sel: ast.Selector, facts: ModelFacts, kinds: tuple[str, ...], model: str) -> None:
    """KMR240 for each pattern that matches nothing: a `name` pattern must match a layer
    of the selected kinds, an `exclude` pattern must remove a layer the rest of the
    selector chose (one that removes nothing is a typo or a wrong assumption about the
    model, exactly what an `ignore` list must not hide)."""
    pool = facts.select(tuple(kinds), _values(sel.names))
    for key, patterns, layers in (("name", sel.names, facts.select(tuple(kinds))), ("exclude", sel.exclude, pool)):
        for p in patterns or ():
            if any(match_one(layer.name, p.value) for layer in layers):
                continue
            elsewhere = [layer.name for layer in facts.layers if match_one(layer.name, p.value)]
            notes = []
            if elsewhere:
                notes.append(f"it matches {len(elsewhere)} layer(s) outside the selection: "
                             + ", ".join(elsewhere[:MAX_NAMES]) + (", …" if len(elsewhere) > MAX_NAMES else ""))
            else:
                notes.append(f"it matches no layer of model `{model}`")
            shown = ", ".join(layer.name for layer in layers[:MAX_NAMES * 2]) + (", …" if len(layers) > MAX_NAMES * 2 else "")
            notes.append(("the selected layers are: " if key == "exclude" else f"layers of kind {', '.join(kinds)}: "
                          if kinds else "layers: ") + (shown or "none"))
            what = "removes no layer from the selection" if key == "exclude" else "matches no selected layer"
            cx.report(error("KMR240", p.span, f'{key} pattern "{p.value}" {what}', *notes,
                            hint="globs and `re:` expressions match the whole qualified name; "
                                 "fix the pattern or drop it"))


def model_notes(facts: ModelFacts, model: str, kinds: tuple[str, ...] = (), named: bool = False) -> list[str]:
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
    for layer in facts.layers:
        for alias in layer.tied:
            notes.append(f"  {alias} is tied to {layer.name} (one layer: select `{layer.name}`)")
    missing = [k for k in kinds if k not in by_kind]
    for k in missing:
        notes.extend(did_you_mean(k, by_kind))
    if named:
        prefixes = list(dict.fromkeys(layer.name.split(".")[0] + (".*" if "." in layer.name else "")
                                      for layer in facts.layers))
        shown = ", ".join(prefixes[:MAX_KINDS]) + (", …" if len(prefixes) > MAX_KINDS else "")
        notes.append(f"names start with: {shown} (a pattern must match the whole qualified name)")
    return notes


def _nothing(cx, span, what: str, model: str, facts: ModelFacts, kinds, sel):
    cx.report(error("KMR214", span, f"{what} matches no layer of model `{model}`",
                    *model_notes(facts, model, kinds, sel is not None and sel.names is not None),
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
        if not accepted(cx, rule, sel, sel.span) or not patterns_ok(cx, sel):
            return ()
        kinds, chosen, what = sel.kinds or rule.accepts, sel, f"selector {show_selector(sel)}"
    else:
        kinds, chosen, what = rule.accepts, None, f"`{rule.name}` on all layers it accepts ({', '.join(rule.accepts)})"
    if facts is None:
        return ()
    layers = match(facts, kinds, chosen)
    if not layers:
        _nothing(cx, sel.span if sel is not None else step.span, what, model, facts,
                 sel.kinds if isinstance(sel, ast.Selector) else (), chosen)
    elif chosen is not None:
        unmatched_patterns(cx, chosen, facts, kinds, model)
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
    if not patterns_ok(cx, sel) or facts is None:
        return ()
    layers = match(facts, sel.kinds, sel)
    if not layers:
        _nothing(cx, sel.span, f"the `for` selector {show_selector(sel)}", model, facts, sel.kinds, sel)
    else:
        unmatched_patterns(cx, sel, facts, sel.kinds, model)
    return layers


def family_layers(sel: ast.Selector, facts: ModelFacts | None) -> tuple[str, ...]:
    """The instances a knob family has on one model. A family is only ever indexed in a
    `for` over the same selector, and that loop already reports KMR214 when it matches
    nothing, so this reports nothing itself."""
    return () if facts is None else match(facts, sel.kinds, sel)


def _source_line(program: P.CheckedProgram, span) -> str:
    text = program.sources.get(span.file, "")
    lines = text.split("\n")
    if 1 <= span.line <= len(lines):
        return lines[span.line - 1].split("#")[0].strip()
    return f"line {span.line}"


def explain_selection(program: P.CheckedProgram, pipeline: str) -> str:
    """`kmr check --explain layers`: the layers every step (a `for` block's steps
    together) and every knob family of a pipeline selected, in model order."""
    pipe = program.pipelines[pipeline]
    lines = [f"layers selected in pipeline `{pipe.name}` (model `{pipe.model.name}`):"]
    groups: dict = {}
    for step in pipe.steps:
        key = (step.span.file, step.span.line, step.span.col, step.rule.name)
        _, layers = groups.setdefault(key, (step, []))
        layers.extend(layer for layer in step.layers if layer not in layers)
    for (file, line, _col, rule), (step, layers) in groups.items():
        where = f"{file}:{line}"
        if step.rule.accepts is None:
            lines.append(f"  {where}: {_source_line(program, step.span)}\n    the whole model")
            continue
        shown = ", ".join(layers) if layers else "(none: the model's layers are unknown)"
        lines.append(f"  {where}: {_source_line(program, step.span)}\n    {len(layers)} layer(s): {shown}")
    for name in pipe.knobs:
        knob = program.knobs[name]
        if knob.is_family:
            lines.append(f"  knob family `{name}` ({_source_line(program, knob.span)})\n"
                         f"    {len(knob.layers)} instance(s): {', '.join(knob.layers) or '(none)'}")
    return "\n".join(lines)


__all__ = ["explain_selection", "same_selector", "show_selector", "accepted", "family_layers", "loop_layers", "match", "model_notes",
           "patterns_ok", "step_layers", "unmatched_patterns"]
