"""Budget feasibility: some setting in the knob domains meets every analytic budget line.

Contract: `check_feasibility(model, lines, limits)` returns one ObligationResult:
PROVED with a witness setting that was re-evaluated exactly against every line,
REFUTED with a minimal unsat core over budget lines and knob bounds (each member with
its span; KMR302), or UNKNOWN with the reason (KMR303).

What a core member is and how a core is minimised: unsat_cores.py; a line at a
setting: line_checks.py; the results as the user reads them: feasibility_results.py.

Order of work, cheapest first (bounds.py explains why):
1. per line, a sound lower bound from independent per-layer groups: a line whose
   bound exceeds its limit is infeasible on its own (no solver call);
2. witness candidates checked exactly: the defaults, each line's minimiser, and the
   minimiser of the lines' normalised sum;
3. several lines over per-layer components: the knapsack MILP (knapsack.py; a refutation
   with a relaxation gap gets a branch-and-bound tree, bbtree.py); lines no table or affine
   form covers: a coordinate-descent witness search (descent.py), then a decoupled
   Lagrangian refutation over the lines' shared counts (joint.py), then the same over boxes
   of the shared knobs (boxsplit.py), every certificate checked exactly;
4. Z3 on the case-split encoding, every line and bound behind an assumption literal.
"""

from __future__ import annotations

import math
from fractions import Fraction

from kmr_dsl.diagnostics import Diagnostic, error
from kmr_dsl.verify.atoms import atomize
from kmr_dsl.verify.budget import Line, holds, is_ranged, meter_refs
from kmr_dsl.verify import bbtree, boxsplit, certificate, descent, joint, lowend
from kmr_dsl.verify.feasibility_results import proved_result, refuted_result
from kmr_dsl.verify.knapsack import Knapsack, exact_line_values
from kmr_dsl.verify.line_checks import meets_all, separable
from kmr_dsl.verify.numeric import Unevaluable
from kmr_dsl.verify.report import CoreMember, Limits, ObligationResult, Verdict
from kmr_dsl.verify.state import PipelineModel
from kmr_dsl.verify.unsat_cores import by_bounds, by_solver, z3_confirms


def check_feasibility(model: PipelineModel, lines: list[Line], limits: Limits,
                      use_bounds: bool = True) -> tuple[ObligationResult, list[Diagnostic]]:
    """PROVED at the worst end of `size`'s range; REFUTED only at its best end
    (budget.py): between the two the file's header decides, and the verdict is UNKNOWN."""
    result, diags = _decide(model, lines, limits, use_bounds)
    if result.verdict is not Verdict.REFUTED or all(ln.optimistic is None for ln in lines):
        return result, diags
    best = [ln.optimistic or ln for ln in lines]
    relaxed, rdiags = _decide(model, best, limits, use_bounds)
    if relaxed.verdict is not Verdict.PROVED:
        return relaxed, rdiags
    shown = relaxed.summary.removeprefix("budget can be met, e.g. ")
    refuted = result.summary.removeprefix('budget cannot be met: ')
    ranged = {m.name for ln in lines if ln.optimistic for m in meter_refs(ln.constraint) if is_ranged(model, m)}
    if "size" in ranged:
        reason = (f"the budget holds {shown} only if the file is at the small end of what the `size` model "
                  "allows (its header's offsets, padding and layer configs are bounded, not predicted); at the "
                  f"large end it cannot be met ({refuted})")
        hint = ("run it (`kmr run` measures the file), or leave a few hundred bytes between the `size` line's "
                "bound and the prediction")
    else:
        where, causes = lowend.explain(model.pipeline.steps, model.final.loose_at, model.final.unrounded)
        reason = (f"the budget holds {shown} only at one end of what the counts allow after {where} "
                  f"({causes}); at the other end it cannot be met ({refuted})")
        hint = ("run it (`kmr run` counts the weights), or bound the counts by what the other layers keep")
    span = result.span
    return (ObligationResult("feasibility", Verdict.UNKNOWN, span, "budget: unknown", model.pipeline.name,
                             reason=reason, method=relaxed.method),
            [error("KMR303", span, "could not decide whether the budget can be met", f"reason: {reason}",
                   hint=hint)])


def _decide(model: PipelineModel, lines: list[Line], limits: Limits,
            use_bounds: bool) -> tuple[ObligationResult, list[Diagnostic]]:
    pipe = model.pipeline
    span = lines[0].span if lines else pipe.span
    bad = [ln for ln in lines if ln.problem]
    if bad:
        reason = f"`{bad[0].text}`: {bad[0].problem}"
        undefined = all(ln.undefined for ln in bad)
        # a line undefined at some setting has its KMR305 error (the setting, the fix): say so
        summary = f"budget: unknown (`{bad[0].text}` is undefined at some setting: KMR305)" if undefined \
            else "budget: unknown"
        result = ObligationResult("feasibility", Verdict.UNKNOWN, bad[0].span, summary, pipe.name,
                                  reason=reason, method="model")
        if undefined:
            return result, []
        return result, [error("KMR303", bad[0].span, f"cannot verify budget line `{bad[0].text}`", reason)]
    defaults = model.knobs.defaults()
    if not lines:
        return ObligationResult("feasibility", Verdict.PROVED, span, "no analytic budget lines", pipe.name,
                                witness=model.knobs.to_user({}), method="trivial"), []
    candidates = [defaults]
    if use_bounds:
        decided = by_bounds(model, lines, defaults, candidates, limits)
        if decided is not None:
            return decided
    sep = separable(model, lines) if use_bounds else None
    # no separable form: the lines over shared counts (atoms.py) evaluate exactly, fast
    at = atomize([ln.expr for ln in lines], model.knobs, math.inf) if use_bounds and sep is None else None
    for cand in candidates:
        if _meets(model, lines, sep, cand, at):
            return proved_result(model, lines, cand, "bounds" if cand is not defaults else "defaults")
    if use_bounds:
        decided = _by_knapsack(model, lines, sep)
        if decided is not None:
            return decided
        if sep is None:
            # no table or affine form (knobs shared by every layer, multiplied together):
            # look for a witness before Z3 meets nonlinear arithmetic over every layer
            found = descent.search(model, lines, candidates, at)
            if found is not None and _meets(model, lines, None, found, at):
                return proved_result(model, lines, found, "descent")
            decided = _by_joint(model, lines, candidates)
            if decided is None:
                decided = _by_boxes(model, lines, candidates)
            if decided is not None:
                return decided
    return by_solver(model, lines, limits)


def _meets(model, lines, sep, setting, at=None) -> bool:
    """meets_all, exactly and cheaply through the separable form or the atoms when there is one."""
    if sep is None and at is None:
        return meets_all(lines, model, setting)
    if sep is None:
        try:
            return all(holds(ln.op, v) for ln, v in zip(lines, at.exact_values(model.knobs.env(setting))))
        except (Unevaluable, ZeroDivisionError):
            return meets_all(lines, model, setting)
    return all(holds(ln.op, v) for ln, v in zip(lines, exact_line_values(sep, setting, model.knobs)))


def _by_knapsack(model, lines, sep):
    """Every line at once as a multiple-choice knapsack (knapsack.py); None when not separable
    or when HiGHS cannot decide (then Z3 is asked)."""
    if sep is None:
        return None
    try:
        ks = Knapsack(sep)
    except ValueError:
        return None
    verdict, setting = ks.solve()
    if verdict == "feasible":
        return _proved_separable(model, lines, sep, setting)
    if verdict != "infeasible":
        return None
    rows, minimal = ks.core(list(range(len(lines))))
    full_y, bound = None, None
    for y in ks.multipliers(rows) or ():
        full_y = [Fraction(0)] * len(lines)
        for i, yi in zip(rows, y):
            full_y[i] = yi
        bound = certificate.check(sep, full_y)
        if bound is not None:
            break
    if bound is not None:
        cert = certificate.to_json(lines, full_y, bound)
        cert["conflict"] = certificate.conflict(sep, full_y, model.knobs)
    else:
        # a relaxation gap: a branch-and-bound tree, checked exactly (bbtree.py); a whole point
        # the tree's LPs meet (HiGHS's tolerance said infeasible) is re-checked and wins
        cert, witness = bbtree.certify(sep, lines, rows)
        if witness is not None:
            return _proved_separable(model, lines, sep, witness)
        if cert is None:
            cert = certificate.to_json([lines[i] for i in rows], None, None,
                                       z3_confirms(model, [lines[i] for i in rows]))
    core = [CoreMember("line", lines[i].text, lines[i].span) for i in rows]
    return refuted_result(model, lines, core, minimal, "milp", certificate=cert)


def _proved_separable(model, lines, sep, setting):
    """PROVED at a setting of the separable form's symbols, re-checked exactly (None if it fails)."""
    if not all(holds(ln.op, v) for ln, v in zip(lines, exact_line_values(sep, setting))):
        return None
    full = dict(model.knobs.defaults())
    full.update({model.knobs.by_symbol[s].name: v for s, v in setting.items()})
    return proved_result(model, lines, full, "milp")


def _by_joint(model, lines, candidates):
    """Lines infeasible only together through a many-knob group: a decoupled Lagrangian
    certificate (joint.py), checked exactly; None when there is none (then Z3 is asked).
    The core is the lines with a positive multiplier; it is minimal when, without each
    member, the descent search finds a setting meeting the rest (re-checked exactly)."""
    cert = joint.refute(lines, model.knobs)
    if cert is None:
        return None
    rows = cert.lines_used()
    core = [CoreMember("line", lines[i].text, lines[i].span) for i in rows]
    return refuted_result(model, lines, core, _minimal_by_descent(model, lines, rows, candidates), "decoupled",
                    certificate=cert.to_json(lines))


def _by_boxes(model, lines, candidates):
    """The decoupled certificate has a gap (counts of several shapes move together with a shared
    knob): the knobs' domain split into boxes, each with its own certificate (boxsplit.py)."""
    tree = boxsplit.refute(lines, model.knobs, lambda point: meets_all(lines, model, {**model.knobs.defaults(),
                                                                                       **point}))
    if isinstance(tree, boxsplit.Witness):
        return proved_result(model, lines, {**model.knobs.defaults(), **tree.setting}, "box-split")
    if tree is None:
        return None
    rows = boxsplit.lines_used(tree)
    core = [CoreMember("line", lines[i].text, lines[i].span) for i in rows]
    return refuted_result(model, lines, core, _minimal_by_descent(model, lines, rows, candidates), "box-split",
                    certificate=boxsplit.to_json(lines, model.knobs, tree))


def _minimal_by_descent(model, lines, rows, candidates) -> bool:
    """Minimal when, without each member, the descent search meets the rest (re-checked exactly)."""
    minimal = True
    for i in rows:
        rest = [lines[j] for j in rows if j != i]
        if not rest:
            continue                              # one line alone: minimal as it is
        at = atomize([ln.expr for ln in rest], model.knobs, math.inf)
        found = descent.search(model, rest, candidates, at)
        minimal = minimal and found is not None and _meets(model, rest, None, found, at)
    return minimal


__all__ = ["check_feasibility"]
