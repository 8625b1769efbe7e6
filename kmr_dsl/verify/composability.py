"""Composability: every step's `requires` holds for every knob setting, given the steps before it.

Contract: `check_composability(model, limits)` decides each `Requirement` of the
pipeline model (one per step, selected layer and requires clause) as "for all settings
in the domains, the condition holds", and returns one `ObligationResult` per (step,
clause) — aggregated over the step's layers — plus a KMR301 error for each refuted one
(at the step, naming the clause in KMR syntax, a counterexample setting, and the state
fields the clause reads at that setting with the step that set them; the hint says what
a false boolean field means, core.state.FALSE_MEANS) and a KMR303 error for each unknown
one. Requirements of the step semantics (`Requirement.implicit`) are KMR304 (channels
shrink with no consumer) and KMR306 (a fold leaves a reader of its normalization out).

How a condition is decided, cheapest first:
1. constant after folding (true: PROVED; false: REFUTED whatever the setting);
2. a conjunction: each conjunct on its own (refuted if any is, proved if all are) —
   `trainable` after quantizing 1000 layers is 1000 one-knob conditions, not one
   4^1000 problem;
3. finite knobs with at most ENUM_CAP combinations: every combination evaluated
   exactly, in knob and value order (so the counterexample is the smallest value);
4. otherwise Z3 (fresh solver per condition): sat of domains AND NOT condition.
A Z3 counterexample is re-evaluated exactly (other knobs at their defaults); one that
does not really violate the clause is reported UNKNOWN, never REFUTED.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import z3

from kmr_dsl.core.memo import ByIdentity
from kmr_dsl.core.program import FieldRef
from kmr_dsl.core.state import FALSE_MEANS
from kmr_dsl.core.walk import nodes
from kmr_dsl.diagnostics import Diagnostic, error
from kmr_dsl.verify import algebra as A
from kmr_dsl.verify.lower import Encoding
from kmr_dsl.verify.numeric import Unevaluable, as_number, compile_expr, evaluate
from kmr_dsl.verify.render import render_ir, render_setting
from kmr_dsl.verify.report import Limits, ObligationResult, Verdict, new_solver, solver_verdict, unknown_reason
from kmr_dsl.verify.state import PipelineModel, Requirement

ENUM_CAP = 4096


@dataclass
class Decision:
    verdict: Verdict
    counterexample: dict | None = None     # instance name -> exact value (only the knobs read)
    method: str = ""
    reason: str | None = None


def decide_forall(cond, model: PipelineModel, limits: Limits) -> Decision:
    """Does `cond` hold at every setting in the knob domains?"""
    knobs = model.knobs
    if cond is A.TRUE:
        return Decision(Verdict.PROVED, method="fold")
    if cond is A.FALSE:
        return Decision(Verdict.REFUTED, {}, method="fold")
    if type(cond).__name__ == "And":
        unknown = None
        for part in cond.args:
            d = decide_forall(part, model, limits)
            if d.verdict is Verdict.REFUTED:
                return d
            if d.verdict is Verdict.UNKNOWN and unknown is None:
                unknown = d
        return unknown or Decision(Verdict.PROVED, method="conjuncts")
    syms = sorted(A.knob_symbols(cond), key=knobs.sort_key)
    odd = [s for s in syms if s not in knobs.by_symbol]
    if odd:
        return Decision(Verdict.UNKNOWN, method="fold", reason=f"not modelled: {str(odd[0]).lstrip('?')}")
    kvs = [knobs.by_symbol[s] for s in syms]
    combos = 1
    for kv in kvs:
        combos = combos * len(kv.values) if kv.finite else ENUM_CAP + 1
    if combos <= ENUM_CAP:
        return _enumerate(cond, syms, kvs)
    return _solve(cond, model, kvs, limits)


def _enumerate(cond, syms, kvs) -> Decision:
    try:
        f = compile_expr(cond)
        for combo in itertools.product(*(kv.values for kv in kvs)):
            if not f(dict(zip(syms, combo))):
                return Decision(Verdict.REFUTED, {kv.name: v for kv, v in zip(kvs, combo)}, method="enumeration")
    except Unevaluable as exc:
        return Decision(Verdict.UNKNOWN, method="enumeration", reason=str(exc))
    return Decision(Verdict.PROVED, method="enumeration")


def _solve(cond, model: PipelineModel, kvs, limits: Limits) -> Decision:
    enc = Encoding(model.knobs)
    try:
        negated = z3.Not(enc.lower(cond))
    except A.NotModelled as exc:
        return Decision(Verdict.UNKNOWN, method="z3", reason=str(exc))
    s = new_solver(limits)
    s.add(enc.domain())
    s.add(negated)
    answer = s.check()
    verdict = solver_verdict(answer, sat_means=Verdict.REFUTED)
    if verdict is Verdict.UNKNOWN:
        return Decision(verdict, method="z3", reason=unknown_reason(s, limits))
    if verdict is Verdict.PROVED:
        return Decision(verdict, method="z3")
    setting = enc.decode(s.model())
    try:
        violated = not evaluate(cond, model.knobs.env(setting))
    except Unevaluable as exc:
        return Decision(Verdict.UNKNOWN, method="z3", reason=f"counterexample not checkable: {exc}")
    if not violated:
        return Decision(Verdict.UNKNOWN, method="z3", reason="the solver's counterexample did not re-evaluate as one")
    # as the user (and `kmr run`) will read it back, still a counterexample there
    setting = model.knobs.writable(setting, lambda st: _violated(cond, model, st))
    if setting is None:
        return Decision(Verdict.UNKNOWN, method="z3",
                        reason="no knob value a user can write near the solver's counterexample violates it")
    cx = {kv.name: setting[kv.name] for kv in kvs}
    return Decision(Verdict.REFUTED, cx, method="z3")


def _violated(cond, model: PipelineModel, setting: dict) -> bool:
    try:
        return not evaluate(cond, model.knobs.env(setting))
    except Unevaluable:
        return False


def _field_notes(req: Requirement, model: PipelineModel, cx: dict, lead: str) -> list[str]:
    setting = {**model.knobs.defaults(), **cx}
    env = model.knobs.env(setting)
    notes = []
    for text, value, origin in req.fields:
        try:
            shown = as_number(evaluate(value, env))
            shown = "true" if shown is True else "false" if shown is False else shown
        except (Unevaluable, TypeError):
            shown = str(value)
        where = ""
        if origin is not None:
            st = model.pipeline.steps[origin]
            where = f" (set by `{st.rule.name}` at {st.span})"
        notes.append(f"{lead}: {text} = {shown}{where}")
    return notes


# a rule's clause is rendered once, not once per step that applies it (1,000 layers)
CLAUSE_TEXT = ByIdentity("rendered requires clauses", "clause", limit=1024)


def check_composability(model: PipelineModel, limits: Limits) -> tuple[list[ObligationResult], list[Diagnostic]]:
    groups: dict[tuple[int, int], list[Requirement]] = {}
    for req in model.requirements:
        groups.setdefault((req.step_index, req.clause_index), []).append(req)
    results, diags = [], []
    proved: dict = {}        # template key -> its PROVED decision
    # (id of a clause, its rule's name) -> the clause's text, and a proved family's name and
    # summary: asked once per requirement (~27,000 at 3,000 layers); the clauses live in
    # `model.requirements` throughout, so their ids are theirs
    texts: dict = {}
    for (_, _), reqs in sorted(groups.items()):
        first = reqs[0]
        step, clause = first.step, first.clause
        if first.implicit:
            (_pooled if first.kind == "pooled" else _implicit)(reqs, model, limits, results, diags)
            continue
        said = texts.get((id(clause), step.rule.name))
        if said is None:
            text = CLAUSE_TEXT.get(clause, lambda: render_ir(clause))
            family = f"`{step.rule.name}` requires `{text}`"
            said = texts[(id(clause), step.rule.name)] = (text, family, f"{family}: holds for every setting")
        text = said[0]
        if len(reqs) == 1:
            dec = _decide_once(first, model, limits, proved)
            if dec.verdict is Verdict.PROVED:
                # one layer, proved (a per-layer family unrolled): the general path's result
                # below, without its lists and sets
                results.append(ObligationResult("composability", Verdict.PROVED, step.span, said[2],
                                                model.pipeline.name, method=dec.method,
                                                layers=() if first.layer is None else (first.layer,),
                                                family=said[1]))
                continue
            decided = [(first, dec)]
        else:
            decided = [(r, _decide_once(r, model, limits, proved)) for r in reqs]
        refuted = [(r, d) for r, d in decided if d.verdict is Verdict.REFUTED]
        unknown = [(r, d) for r, d in decided if d.verdict is Verdict.UNKNOWN]
        layers = tuple(r.layer for r in reqs if r.layer is not None)
        where = f" on layer `{refuted[0][0].layer}`" if refuted and refuted[0][0].layer else ""
        methods = "+".join(sorted({d.method for _, d in decided}))
        family = f"`{step.rule.name}` requires `{text}`"
        if refuted:
            req, dec = refuted[0]
            if dec.counterexample:
                cx_note = f"counterexample: {render_setting(dec.counterexample, model.knobs)}"
                fields = _field_notes(req, model, dec.counterexample, "at that setting, before this step")
            else:
                cx_note = "it fails at every setting: no knob can make it hold"
                fields = _field_notes(req, model, {}, "before this step")
            summary = f"`{step.rule.name}` requires `{text}`: fails{where}"
            notes = [cx_note, *fields]
            if len(refuted) > 1:
                names = ", ".join(r.layer or "" for r, _ in refuted[:6]) + (", ..." if len(refuted) > 6 else "")
                notes.append(f"fails on {len(refuted)} of {len(reqs)} selected layers: {names}")
            diags.append(error("KMR301", step.span,
                               f"precondition `{text}` of `{step.rule.name}` may fail{where}", *notes,
                               hint=_false_means(clause)))
            user_cx = model.knobs.to_user(dec.counterexample or {})
            results.append(ObligationResult("composability", Verdict.REFUTED, step.span, summary,
                                            model.pipeline.name, counterexample=user_cx, method=methods,
                                            layers=layers, family=family))
        elif unknown:
            req, dec = unknown[0]
            where = f" on layer `{req.layer}`" if req.layer else ""
            summary = f"`{step.rule.name}` requires `{text}`: unknown{where}"
            diags.append(error("KMR303", step.span,
                               f"could not decide precondition `{text}` of `{step.rule.name}`{where}",
                               f"reason: {dec.reason}"))
            results.append(ObligationResult("composability", Verdict.UNKNOWN, step.span, summary,
                                            model.pipeline.name, reason=dec.reason, method=methods, layers=layers,
                                            family=family))
        else:
            summary = f"`{step.rule.name}` requires `{text}`: holds for every setting"
            results.append(ObligationResult("composability", Verdict.PROVED, step.span, summary,
                                            model.pipeline.name, method=methods, layers=layers, family=family))
    return results, diags


def _decide_once(req: Requirement, model: PipelineModel, limits: Limits, proved: dict) -> Decision:
    """decide_forall of the requirement's condition; a condition that instantiates the
    template of one already proved (equal up to renaming of knobs of the same
    declarations, so holding over the same domains) is proved with it. Only PROVED is
    shared: a counterexample names the layer's own knobs."""
    if req.template is None:
        return decide_forall(req.condition, model, limits)
    hit = proved.get(req.template)
    if hit is None:
        hit = decide_forall(req.condition, model, limits)
        if hit.verdict is Verdict.PROVED:
            proved[req.template] = hit
    return hit


def _false_means(clause) -> str | None:
    """The hint for a refuted clause that reads a boolean field with a documented meaning
    (`layer.foldable`: why nothing folds there); None keeps the code's own hint."""
    for n in nodes(clause):
        if isinstance(n, FieldRef) and n.field in FALSE_MEANS:
            return f"`{n.scope}.{n.field}` false means: {FALSE_MEANS[n.field]}"
    return None


def _fold_group(reqs: list[Requirement], step, model: PipelineModel, results: list, diags: list) -> None:
    """KMR306: a fold's normalization is also read by Linear layers the step leaves out
    (a static fact: refuted at every setting)."""
    layers = tuple(r.layer for r in reqs if r.layer is not None)
    diags.append(error("KMR306", step.span,
                       f"`{step.rule.name}` folds a scale into a normalization that unselected layers also read: "
                       + reqs[0].implicit,
                       *(r.implicit for r in reqs[1:4]), "it does so at every setting; `kmr run` would refuse the step",
                       hint="select every Linear that reads the normalization (e.g. q, k and v together), "
                            "or none of them"))
    results.append(ObligationResult("composability", Verdict.REFUTED, step.span,
                                    f"`{step.rule.name}` folds into a normalization that unselected layers read: "
                                    f"fails on layer `{reqs[0].layer}`", model.pipeline.name, counterexample={},
                                    method="fold", layers=layers))


def _implicit(reqs: list[Requirement], model: PipelineModel, limits: Limits, results: list, diags: list) -> None:
    """A requirement of the step semantics (kmr_dsl.core.step), not of the rule's text: a
    layer whose channels shrink needs a consumer to shrink with it (KMR304); a fold scales
    every reader of its normalization (KMR306)."""
    step = reqs[0].step
    if reqs[0].kind == "fold":
        return _fold_group(reqs, step, model, results, diags)
    decided = [(r, decide_forall(r.condition, model, limits)) for r in reqs]
    failing = [(r, d) for r, d in decided if d.verdict is not Verdict.PROVED]
    layers = tuple(r.layer for r in reqs if r.layer is not None)
    methods = "+".join(sorted({d.method for _, d in decided}))
    if not failing:
        results.append(ObligationResult("composability", Verdict.PROVED, step.span,
                                        f"`{step.rule.name}` shrinks channels only of layers with a consumer",
                                        model.pipeline.name, method=methods, layers=layers))
        return
    req, dec = failing[0]
    names = ", ".join(f"`{r.layer}`" for r, _ in failing[:6]) + (", ..." if len(failing) > 6 else "")
    if dec.verdict is Verdict.REFUTED and dec.counterexample:
        when = f"at {render_setting(dec.counterexample, model.knobs)}"
    elif dec.verdict is Verdict.REFUTED:
        when = "at every setting"
    else:
        when = f"at some setting (undecided: {dec.reason})"
    diags.append(error("KMR304", step.span,
                       f"`{step.rule.name}` shrinks the output channels of {names}, but no layer consumes them "
                       "that could shrink with it",
                       f"{_reason(req)}it does so {when}; `kmr run` would refuse the step"))
    results.append(ObligationResult("composability", dec.verdict, step.span,
                                    f"`{step.rule.name}` shrinks the output channels of {names}: no consumer",
                                    model.pipeline.name, counterexample=model.knobs.to_user(dec.counterexample or {}),
                                    method=methods, layers=layers))


def _reason(req: Requirement) -> str:
    """Why the first refused layer's channels cannot be removed (the dependency trace's
    finding, after the colon of the implicit requirement), as a sentence, or nothing."""
    text = req.implicit or ""
    if ": " not in text:
        return ""
    return f"`{req.layer}`'s channels cannot be removed: {text.split(': ', 1)[1]}; "


def _pooled(reqs: list[Requirement], model: PipelineModel, limits: Limits, results: list, diags: list) -> None:
    """A step that changes, layer by layer, densities a global pruning fixed only in total
    (verify/pools.py): the state cannot know them after it, so the step is UNKNOWN."""
    step, req = reqs[0].step, reqs[0]
    names = ", ".join(f"`{r.layer}`" for r in reqs[:6]) + (", ..." if len(reqs) > 6 else "")
    reason = f"{req.implicit}; each layer's share depends on the weights"
    diags.append(error("KMR303", step.span, f"cannot model the density of {names} after `{step.rule.name}`", reason,
                       hint="apply the per-layer step before the global pruning, prune with `method = magnitude` "
                            "there, or give both global steps the same layers"))
    results.append(ObligationResult("composability", Verdict.UNKNOWN, step.span,
                                    f"`{step.rule.name}` changes densities known only in total: {names}",
                                    model.pipeline.name, reason=reason, method="model",
                                    layers=tuple(r.layer for r in reqs if r.layer is not None)))


__all__ = ["Decision", "check_composability", "decide_forall"]
