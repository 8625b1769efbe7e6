"""Pipelines and properties -> program.Pipeline / program.Property.

Contract: `check_pipeline(lowerer, decl)` checks `pipeline P(M) { ... }`: M must be a
`model` (KMR201 undefined, KMR222 something else); each step's rule exists, its
arguments bind and type (kmr_dsl.check.calls) and its selector resolves on M's real
layers (kmr_dsl.check.selectors). `for l in layers(...) { ... }` is expanded to one step
per selected layer, in model order, each inner step in turn, with `layers=(that layer,)`
and `s[l]` instantiated as `KnobRef("s[<layer>]", "s")`. Budget lines must be
comparisons (KMR219; `!=` is not a budget); a line reading no meter and no knob is a
warning KMR224; `Constraint.analytic` is true when every meter in it is analytic.
`objective` must be a number (KMR223); each `report` item a number that reads a meter
(KMR223), kept as `Pipeline.report` with its text; `search` is budgeted(max_steps, seed),
random(n, seed) or tpe(n, seed) with whole-number options (KMR223). `Pipeline.knobs`
lists the declared knobs the steps, budget and objective read, in declaration order; a
family among them gets its instances from M (`cx.family_layers`).

`check_property(lowerer, decl)` checks `property N(P) { forall k, ...  check ... }`: P
must be a pipeline, each forall name a declared knob (KMR201), each check a comparison.

A budget line `size <= 16 kb` parses as `size <= 16` followed by a line `kb`; that
pair is reported once, as KMR107 (unknown unit), instead of a unit mismatch and an
undefined name.
"""

from __future__ import annotations

from dataclasses import replace

from kmr_dsl import ast, units
from kmr_dsl.check import calls, selectors, structure, walk
from kmr_dsl.core import program as P
from kmr_dsl.check.exprs import PIPELINE, Scope
from kmr_dsl.check.selectors import show_selector
from kmr_dsl.check.names import did_you_mean, find_word
from kmr_dsl.diagnostics import error, warning

STRATEGIES = {"budgeted": ("max_steps", "seed"), "random": ("n", "seed"), "tpe": ("n", "seed")}


def _rule(cx, step: ast.Step) -> P.Rule | None:
    entry = cx.symbols.get(step.rule)
    if entry is None or entry.kind != "rule":
        cx.report(cx.symbols.undefined(step.rule, find_word(step.span, step.rule, cx.text(step.span.file)),
                                       "rule", what="rule"))
        return None
    return cx.rules.get(step.rule)


def _model(cx, decl: ast.PipelineDecl):
    span = find_word(decl.span, decl.model, cx.text(decl.span.file), after=r"\(")
    entry = cx.symbols.get(decl.model)
    if entry is None:
        cx.report(cx.symbols.undefined(decl.model, span, "model", what="model"))
        return None, None
    if entry.kind != "model":
        cx.report(error("KMR222", span, f"pipeline `{decl.name}` runs on `{decl.model}`, which is "
                        f"{'data' if entry.kind == 'data' else 'a ' + entry.kind}, not a model",
                        *did_you_mean(decl.model, cx.symbols.names("model")),
                        hint="name a `model` declaration: `pipeline NAME(MODEL) { ... }`"))
        return None, None
    model = cx.models.get(decl.model)
    if model is None:            # its loader call was rejected (reported)
        return None, None
    return model, cx.facts_for(decl.model)


def check_pipeline(lowerer, decl: ast.PipelineDecl) -> P.Pipeline | None:
    cx = lowerer.cx
    model, facts = _model(cx, decl)
    name = model.name if model is not None else decl.model
    steps, budget, objective, search, report = [], [], None, None, []
    seen: set[type] = set()     # a second objective or search is an error even if the first was
    for item in decl.items:
        if isinstance(item, ast.Step):
            step = _step(lowerer, item, name, facts)
            if step is not None:
                steps.append(step)
        elif isinstance(item, ast.ForBlock):
            steps.extend(_for(lowerer, item, name, facts))
        elif isinstance(item, ast.BudgetBlock):
            budget.extend(constraints(lowerer, item.constraints, "budget"))
        elif isinstance(item, ast.Objective):
            if ast.Objective in seen:
                cx.report(error("KMR223", item.span, f"pipeline `{decl.name}` has more than one objective",
                                hint="keep one `objective`; combine goals into one expression"))
            else:
                objective = _objective(lowerer, item)
            seen.add(ast.Objective)
        elif isinstance(item, ast.SearchClause):
            if ast.SearchClause in seen:
                cx.report(error("KMR223", item.span, f"pipeline `{decl.name}` has more than one `search`"))
            else:
                search = _search(cx, item)
            seen.add(ast.SearchClause)
        elif isinstance(item, ast.ReportClause):
            report.extend(_report(lowerer, item))
    exprs = [v for s in steps for _, v in s.args] + [e for c in budget for e in (c.left, c.right)]
    if objective is not None:
        exprs.append(objective.expr)
    used = set().union(*(walk.knobs(e) for e in exprs)) if exprs else set()
    knobs = tuple(k for k in cx.knobs if k in used)
    for k in knobs:
        if cx.knobs[k].is_family:
            got = selectors.family_layers(cx.families[k], facts)
            merged = cx.family_layers.setdefault(k, [])
            merged.extend(layer for layer in got if layer not in merged)
    if model is None:
        return None
    return P.Pipeline(decl.name, replace(model, facts=facts), tuple(steps), tuple(budget), objective, search,
                      knobs, decl.span, tuple(report))


def _step(lowerer, step: ast.Step, model: str, facts) -> P.Step | None:
    rule = _rule(lowerer.cx, step)
    if rule is None:
        return None
    args = calls.step_args(lowerer, rule, step.args, step.span, PIPELINE)
    layers = selectors.step_layers(lowerer.cx, rule, step, model, facts)
    structure.refuse(lowerer.cx, rule, args, layers, facts, step.selector.span if step.selector else step.span)
    return None if args is None else P.Step(rule, args, layers, step.span)


def _for(lowerer, block: ast.ForBlock, model: str, facts) -> list[P.Step]:
    cx = lowerer.cx
    layers = selectors.loop_layers(cx, block.selector, model, facts)
    scope = Scope("pipeline", for_var=block.var, for_selector=block.selector)
    bodies = []
    for step in block.steps:
        rule = _rule(cx, step)
        if rule is None:
            continue
        if rule.accepts is None:
            cx.report(error("KMR220", find_word(step.span, step.rule, cx.text(step.span.file)),
                            f"rule `{rule.name}` acts on the whole model; it cannot run per layer in a `for` block",
                            hint="move the step out of the `for` block"))
        else:
            if step.selector is not None:
                cx.report(error("KMR226", step.selector.span, "a step inside a `for` block applies to the loop's layer; "
                                "it takes no selector of its own",
                                hint=f"drop the `on ...`; the block already iterates {show_selector(block.selector)}"))
            _loop_kinds(cx, rule, block.selector, layers, facts,
                        find_word(step.span, step.rule, cx.text(step.span.file)))
        args = calls.step_args(lowerer, rule, step.args, step.span, scope)
        if args is not None and rule.accepts is not None:
            structure.refuse(cx, rule, args, layers, facts, block.selector.span)
            bodies.append((rule, args, step.span))
    return [P.Step(rule, tuple((n, walk.at_layer(v, layer)) for n, v in args), (layer,), span)
            for layer in layers for rule, args, span in bodies]


def _loop_kinds(cx, rule: P.Rule, sel: ast.Selector, layers, facts, span) -> None:
    """KMR215 at the step for a loop kind its rule does not accept."""
    if not sel.kinds and facts is not None:
        # `layers(name = "...")` lists no kinds: check the kinds it actually reaches
        sel = ast.Selector(tuple(dict.fromkeys(facts.layer(layer).kind for layer in layers)), sel.names, sel.exclude,
                           sel.span)
    selectors.accepted(cx, rule, sel, span)


# ---------------------------------------------------------------- budgets and checks

def _rightmost(e):
    while isinstance(e, (ast.Binary, ast.Compare)) or (isinstance(e, ast.Unary)):
        e = e.operand if isinstance(e, ast.Unary) else e.right
    return e


def _unit_typos(cx, exprs) -> set[int]:
    """Indices i where line i is a bare unknown name glued to the number ending line i-1."""
    out = set()
    for i in range(1, len(exprs)):
        e, prev = exprs[i], _rightmost(exprs[i - 1])
        if (isinstance(e, ast.Name) and cx.symbols.get(e.id) is None and isinstance(prev, ast.Number)
                and prev.span.end_line == e.span.line):
            lower = {u.lower(): u for u in units.UNITS}
            notes = [f"did you mean `{lower[e.id.lower()]}`?"] if e.id.lower() in lower else did_you_mean(e.id, units.UNITS)
            cx.report(error("KMR107", e.span, f"unknown unit `{e.id}`", *notes,
                            "units: bytes B KB MB GB KiB MiB GiB, time us ms s, ratio %, counts K M G",
                            hint="units are case-sensitive: `16 KB`, `2 ms`, `25%`"))
            out.update((i, i - 1))
    return out


def constraints(lowerer, exprs, where: str) -> list[P.Constraint]:
    cx = lowerer.cx
    skip = _unit_typos(cx, exprs)
    out = []
    for i, e in enumerate(exprs):
        if i in skip:
            continue
        if not isinstance(e, ast.Compare):
            _, ty = lowerer.lower(e, PIPELINE)
            if not ty.is_error:
                cx.report(error("KMR219", e.span, f"a {where} line must be a comparison",
                                hint="write e.g. `size <= 16 KB` or `accuracy(test) >= 0.9`"))
            continue
        if where == "budget" and e.op == "!=":
            cx.report(error("KMR219", e.span, "`!=` is not a budget: a budget line bounds a value",
                            hint="use <=, <, >=, > or =="))
            continue
        op, left, right, ty = lowerer.comparison(e, PIPELINE)
        if ty.is_error:
            continue
        if not walk.meters(left) and not walk.meters(right) and not (walk.knobs(left) | walk.knobs(right)):
            cx.report(warning("KMR224", e.span, f"this {where} line reads no meter and no knob: it is constant",
                              hint="compare a meter, e.g. `size <= 16 KB`, or remove the line"))
        out.append(P.Constraint(op, left, right, walk.is_analytic(left) and walk.is_analytic(right), e.span))
    return out


def _objective(lowerer, item: ast.Objective) -> P.Objective | None:
    ir, ty = lowerer.lower(item.expr, PIPELINE)
    if ty.is_error:
        return None
    if ty.kind != "num":
        lowerer.cx.report(error("KMR223", item.expr.span, f"an objective must be a number to {item.direction}, "
                                f"not a {ty.kind}", hint="write e.g. `objective maximize accuracy(test)`"))
        return None
    return P.Objective(item.direction, ir, item.span)


def _report(lowerer, item: ast.ReportClause) -> list[P.ReportItem]:
    """Each item must be a number that reads a meter (KMR223): it is measured, not chosen."""
    out = []
    for e in item.meters:
        ir, ty = lowerer.lower(e, PIPELINE)
        if ty.is_error:
            continue
        if ty.kind != "num" or not walk.meters(ir) or walk.knobs(ir):
            what = f"a {ty.kind}" if ty.kind != "num" else "a number that reads no meter" if not walk.meters(ir) \
                else "an expression over knobs (the setting is shown anyway)"
            lowerer.cx.report(error("KMR223", e.span, f"`report` shows meter readings; this is {what}",
                                    hint="write e.g. `report accuracy(test), size`"))
            continue
        out.append(P.ReportItem(lowerer.cx.snippet(e.span) or "report", ir, e.span))
    return out


def _search(cx, item: ast.SearchClause) -> P.Search | None:
    if item.strategy not in STRATEGIES:
        cx.report(error("KMR223", find_word(item.span, item.strategy, cx.text(item.span.file), after=r"search"),
                        f"unknown search strategy `{item.strategy}`", *did_you_mean(item.strategy, STRATEGIES),
                        "strategies: " + ", ".join(f"{k}({', '.join(v)})" for k, v in STRATEGIES.items()),
                        hint="write e.g. `search budgeted(max_steps = 20)`"))
        return None
    allowed = STRATEGIES[item.strategy]
    options, ok = [], True
    for arg in item.args:
        if arg.name is None or arg.name not in allowed:
            what = "a positional option" if arg.name is None else f"unknown option `{arg.name}`"
            cx.report(error("KMR223", arg.span, f"`{item.strategy}` has {what}",
                            *(did_you_mean(arg.name, allowed) if arg.name else ()),
                            f"`{item.strategy}` takes: " + ", ".join(allowed)))
            ok = False
            continue
        if any(k == arg.name for k, _ in options):
            cx.report(error("KMR223", arg.span, f"option `{arg.name}` is given twice"))
            ok = False
            continue
        least = 0 if arg.name == "seed" else 1
        v = arg.value
        if not (isinstance(v, ast.Number) and isinstance(v.value, int) and v.value >= least):
            cx.report(error("KMR223", v.span, f"`{arg.name}` must be a whole number >= {least}"))
            ok = False
            continue
        options.append((arg.name, v.value))
    return P.Search(item.strategy, tuple(options), item.span) if ok else None


def check_property(lowerer, decl: ast.PropertyDecl) -> P.Property | None:
    cx = lowerer.cx
    text = cx.text(decl.span.file)
    ok = True
    entry = cx.symbols.get(decl.pipeline)
    if entry is None or entry.kind != "pipeline":
        cx.report(cx.symbols.undefined(decl.pipeline, find_word(decl.span, decl.pipeline, text, after=r"\("),
                                       "pipeline", what="pipeline",
                                       hint="a property names the pipeline it tests: `property NAME(PIPELINE) { ... }`"))
        ok = False
    forall = []
    for name in decl.forall:
        if cx.symbols.kind(name) != "knob":
            cx.report(cx.symbols.undefined(name, find_word(decl.span, name, text, after=r"\bforall\b"),
                                           "knob", what="knob", hint="`forall` draws declared knobs"))
            ok = False
        elif name not in forall:
            forall.append(name)
    checks = constraints(lowerer, decl.checks, "check")
    if not ok or len(checks) != len(decl.checks):
        return None
    return P.Property(decl.name, decl.pipeline, tuple(forall), tuple(checks), decl.span)


__all__ = ["STRATEGIES", "check_pipeline", "check_property", "constraints"]
