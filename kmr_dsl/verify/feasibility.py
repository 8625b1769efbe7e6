"""Budget feasibility: some setting in the knob domains meets every analytic budget line.

Contract: `check_feasibility(model, lines, limits)` returns one ObligationResult:
PROVED with a witness setting that was re-evaluated exactly against every line,
REFUTED with a minimal unsat core over budget lines and knob bounds (each member with
its span; KMR302), or UNKNOWN with the reason (KMR303).

Core members are the analytic budget lines and, for every numeric knob declaration
that is not case-split, the two sides of its domain (`s >= 0`, `s <= 0.9`; one member
per side for a whole family). Set, enum and bool knobs are their values by type and
never appear in a core. "Dropping" a bound lets the knob go past it (a stepped knob
along its lattice, a real knob over the reals). Minimal: removing any member makes
the rest satisfiable — checked for each member by deletion, each subset check decided
by the bounds when they can (a lower bound still above the budget: the member is
unneeded; an exact point that meets the line: it is needed) and by Z3 otherwise. A
subset check that comes back unknown keeps its member and marks the core
`core_minimal = False`.

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

import z3

from kmr_dsl.diagnostics import Diagnostic, error
from kmr_dsl.verify import algebra as A
from kmr_dsl.verify.bounds import MARGIN, bound_line, decompose, point_range, relax_line, sound_bound
from kmr_dsl.verify.atoms import atomize
from kmr_dsl.verify.budget import Line, holds, is_ranged, meter_refs
from kmr_dsl.verify import bbtree, boxsplit, certificate, descent, joint, lowend
from kmr_dsl.verify.knapsack import Knapsack, exact_line_values
from kmr_dsl.verify.lower import Encoding
from kmr_dsl.verify.numeric import Unevaluable, as_number, evaluate
from kmr_dsl.verify.render import render_setting
from kmr_dsl.verify.report import (DEFAULT_RLIMIT, CoreMember, Limits, ObligationResult, Verdict, new_solver,
                                   solver_verdict,
                                   unknown_reason)
from kmr_dsl.verify.separable import separate
from kmr_dsl.verify.state import PipelineModel


def decomposition(model: PipelineModel, expr):
    """decompose(expr), cached per expression in the model (None when it cannot be decomposed)."""
    def build():
        try:
            return decompose(expr, model.knobs, model.decomposed_terms)
        except A.NotModelled:
            return None
    return model.decompositions.get(expr, build)


def line_bound(model: PipelineModel, dec):
    """bound_line(dec) over the declared domains, cached per decomposition."""
    return model.line_bounds.get(dec, lambda: bound_line(dec, model.knobs))


def line_range(model: PipelineModel, dec, env: dict) -> tuple[float, float, float]:
    """point_range, remembered per (expression, setting): the defaults are asked for twice."""
    return model.line_ranges.get(dec, lambda: point_range(dec, model.knobs, env), tuple(env.items()))


def line_holds(line: Line, model: PipelineModel, env: dict) -> bool:
    """Does the line hold at a setting? Decided by a float enclosure when its margin is
    clear by MARGIN (bounds.py), exactly with rationals otherwise."""
    dec = decomposition(model, line.expr)
    if dec is not None and line.op in ("<=", "<"):
        lo, hi, scale = line_range(model, dec, env)
        margin = MARGIN * max(scale, 1.0)
        if hi < -margin:
            return True
        if lo > margin:
            return False
    try:
        return holds(line.op, evaluate(line.expr, env))
    except Unevaluable:
        return False


def meets_all(lines: list[Line], model: PipelineModel, setting: dict) -> bool:
    """Check every line at a (possibly relaxed) exact setting."""
    env = model.knobs.env(setting)
    return all(line_holds(ln, model, env) for ln in lines)


def _bound_text(model: PipelineModel, family: str, side: str) -> CoreMember:
    kv = model.knobs.families[family][0]
    name = f"{family}[{kv.knob.family_var}]" if kv.knob.is_family else family
    if side == "lo":
        op, value = (">=" if kv.lo_closed else ">"), kv.lo
    else:
        op, value = ("<=" if kv.hi_closed else "<"), kv.hi
    return CoreMember("bound", f"{name} {op} {kv.render(value)}", kv.knob.span)


class _Problem:
    """The Z3 side: every line and (unsplit) knob bound behind an assumption literal."""

    def __init__(self, model: PipelineModel, lines: list[Line], limits: Limits):
        self.model, self.lines = model, lines
        self.enc = Encoding(model.knobs)
        self.terms = [self.enc.lower(_relation(ln)) for ln in lines]   # lowering first: it decides the splits
        self.solver = new_solver(limits)
        self.solver.add(self.enc.structural())
        self.members: list[tuple[str, object]] = []      # ("line", index) | ("bound", (family, side))
        self.lits: list = []
        for i, t in enumerate(self.terms):
            self._track(("line", i), t)
        by_side: dict = {}
        split = {model.knobs.by_name[n].knob.name for n in self.enc.split}
        for kv in self.enc.used():
            for side, c in self.enc.bounds(kv):
                if kv.knob.name in split:
                    self.solver.add(c)                   # a split knob's domain is its case list
                else:
                    by_side.setdefault((kv.knob.name, side), []).append(c)
        for key in sorted(by_side, key=lambda k: (model.knobs.families[k[0]][0].order, k[1] != "lo")):
            self._track(("bound", key), z3.And(by_side[key]))

    def _track(self, member, constraint):
        lit = z3.Bool(f"kmr:{member[0]}:{member[1]}")
        self.solver.add(z3.Implies(lit, constraint))
        self.members.append(member)
        self.lits.append(lit)

    def check(self, keep: list[int]):
        return self.solver.check([self.lits[i] for i in keep])


def _relation(line: Line):
    return A.compare(line.op, line.expr, 0)


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
        decided = _by_bounds(model, lines, defaults, candidates, limits)
        if decided is not None:
            return decided
    sep = separable(model, lines) if use_bounds else None
    # no separable form: the lines over shared counts (atoms.py) evaluate exactly, fast
    at = atomize([ln.expr for ln in lines], model.knobs, math.inf) if use_bounds and sep is None else None
    for cand in candidates:
        if _meets(model, lines, sep, cand, at):
            return _proved(model, lines, cand, "bounds" if cand is not defaults else "defaults")
    if use_bounds:
        decided = _by_knapsack(model, lines, sep)
        if decided is not None:
            return decided
        if sep is None:
            # no table or affine form (knobs shared by every layer, multiplied together):
            # look for a witness before Z3 meets nonlinear arithmetic over every layer
            found = descent.search(model, lines, candidates, at)
            if found is not None and _meets(model, lines, None, found, at):
                return _proved(model, lines, found, "descent")
            decided = _by_joint(model, lines, candidates)
            if decided is None:
                decided = _by_boxes(model, lines, candidates)
            if decided is not None:
                return decided
    return _by_solver(model, lines, limits)


def _meets(model, lines, sep, setting, at=None) -> bool:
    """meets_all, exactly and cheaply through the separable form or the atoms when there is one."""
    if sep is None and at is None:
        return meets_all(lines, model, setting)
    env = model.knobs.env(setting)
    if sep is None:
        try:
            return all(holds(ln.op, v) for ln, v in zip(lines, at.exact_values(env)))
        except (Unevaluable, ZeroDivisionError):
            return meets_all(lines, model, setting)
    return all(holds(ln.op, v) for ln, v in zip(lines, exact_line_values(sep, env)))


def separable(model: PipelineModel, lines: list[Line]):
    """The lines as a separable sum (separable.py); None when they are not one."""
    if not all(ln.op in ("<=", "<") and ln.expr is not None for ln in lines):
        return None
    decs = [decomposition(model, ln.expr) for ln in lines]
    if any(d is None for d in decs):
        return None
    try:
        return separate(model, lines, decs)
    except (A.NotModelled, Unevaluable, ZeroDivisionError):
        return None


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
                                       _z3_confirms(model, [lines[i] for i in rows]))
    core = [CoreMember("line", lines[i].text, lines[i].span) for i in rows]
    return _refuted(model, lines, core, minimal, "milp", certificate=cert)


def _proved_separable(model, lines, sep, setting):
    """PROVED at a setting of the separable form's symbols, re-checked exactly (None if it fails)."""
    if not all(holds(ln.op, v) for ln, v in zip(lines, exact_line_values(sep, setting))):
        return None
    full = dict(model.knobs.defaults())
    full.update({model.knobs.by_symbol[s].name: v for s, v in setting.items()})
    return _proved(model, lines, full, "milp")


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
    return _refuted(model, lines, core, _minimal_by_descent(model, lines, rows, candidates), "decoupled",
                    certificate=cert.to_json(lines))


def _by_boxes(model, lines, candidates):
    """The decoupled certificate has a gap (counts of several shapes move together with a shared
    knob): the knobs' domain split into boxes, each with its own certificate (boxsplit.py)."""
    tree = boxsplit.refute(lines, model.knobs, lambda point: meets_all(lines, model, {**model.knobs.defaults(),
                                                                                       **point}))
    if isinstance(tree, boxsplit.Witness):
        return _proved(model, lines, {**model.knobs.defaults(), **tree.setting}, "box-split")
    if tree is None:
        return None
    rows = boxsplit.lines_used(tree)
    core = [CoreMember("line", lines[i].text, lines[i].span) for i in rows]
    return _refuted(model, lines, core, _minimal_by_descent(model, lines, rows, candidates), "box-split",
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


def _z3_confirms(model, lines: list[Line]) -> bool:
    """Z3, on its own exact encoding and a fifth of the default effort, also finds the lines unsatisfiable."""
    try:
        prob = _Problem(model, lines, Limits(DEFAULT_RLIMIT // 5, 10.0))
        return prob.check(list(range(len(prob.members)))) == z3.unsat
    except A.NotModelled:
        return False


def _line_certificate(model, line: Line):
    """y = (1) for one line whose minimum alone is positive, checked exactly (None if it cannot be)."""
    sep = separable(model, [line])
    if sep is None:
        return None
    bound = certificate.check(sep, [Fraction(1)])
    if bound is None:
        return None
    cert = certificate.to_json([line], [Fraction(1)], bound)
    cert["conflict"] = certificate.conflict(sep, [Fraction(1)], model.knobs)
    return cert


def _by_bounds(model, lines, defaults, candidates, limits):
    knobs = model.knobs
    for ln in lines:
        if ln.op not in ("<=", "<"):
            continue
        dec = decomposition(model, ln.expr)
        if dec is None:
            continue
        lb = line_bound(model, dec)
        if lb.surely_positive():
            found = _bounds_core(model, ln, dec, limits, lb, split_families(model, lines))
            if found is not None:
                core, minimal, best = found
                cert = _line_certificate(model, ln)
                return _refuted(model, lines, core, minimal, "bounds", best=(ln, best, lb.lb), certificate=cert)
        cand = dict(defaults)
        cand.update({knobs.by_symbol[s].name: v for s, v in lb.argmin.items()})
        candidates.append(cand)
    return None


def split_families(model: PipelineModel, lines: list[Line]) -> set[str]:
    """Knob declarations the Z3 encoding of these lines case-splits (their bounds are hard:
    one Encoding serves every line, so a knob split for one line is split for all).

    Groups of the same shape split the same slots, so one plan per shape decides all.
    """
    knobs = model.knobs
    classes: dict = {}
    groups = []
    for ln in lines:
        dec = decomposition(model, ln.expr) if ln.expr is not None else None
        if dec is not None:
            groups.extend(dec.groups)
    for g in groups:
        sig = (id(g.key), tuple((knobs.by_symbol[s].kind, len(knobs.by_symbol[s].values)) for s in g.symbols))
        classes.setdefault(sig, []).append(g)
    enc = Encoding(knobs)
    out: set[str] = set()
    for groups in classes.values():
        rep = groups[0]
        planned = enc.planned_splits(rep.expr)
        slots = [j for j, s in enumerate(rep.symbols) if knobs.by_symbol[s].name in planned]
        out |= {knobs.by_symbol[g.symbols[j]].knob.name for g in groups for j in slots}
    return out


def _bounds_core(model, line: Line, dec, limits, base, split: set[str]):
    """Core {line, bounds of its knobs}, minimised by deletion with the bounds (Z3 as a fallback).

    None when the sound bound does not confirm the precise one (then Z3 decides)."""
    knobs = model.knobs
    families = []
    for s in sorted(dec.symbols, key=knobs.sort_key):
        kv = knobs.by_symbol[s]
        if kv.kind in ("stepped", "real") and kv.knob.name not in families and kv.knob.name not in split:
            families.append(kv.knob.name)
    relaxed: dict[str, set] = {}
    current = base
    kept, minimal = [], True
    for fam, side in [(f, side) for f in families for side in ("lo", "hi")]:
        trial = relax_line(dec, knobs, current, relaxed, fam, side)
        trial_relax = {k: set(v) for k, v in relaxed.items()}
        trial_relax.setdefault(fam, set()).add(side)
        if trial.surely_positive():
            relaxed, current = trial_relax, trial    # still infeasible without it: not in the core
            continue
        if _meets_at_best(line, dec, trial) or _meets_at(model, line, trial.argmin):
            kept.append((fam, side))                 # a concrete setting past this bound meets the line
            continue
        verdict = _solver_subset(model, line, trial_relax, limits)
        if verdict is Verdict.REFUTED:
            relaxed, current = trial_relax, trial
        else:
            kept.append((fam, side))
            minimal = minimal and verdict is Verdict.PROVED
    # the decisions above used precise bounds; the verdict needs a sound one
    if not sound_bound(dec, knobs, current, relaxed).surely_positive():
        return None
    core = [CoreMember("line", line.text, line.span)] + [_bound_text(model, f, s) for f, s in kept]
    return core, minimal, base.argmin


def _meets_at_best(line: Line, dec, bound) -> bool:
    """With exact comparisons, the precise value at the best point found is sound: use it."""
    if not dec.exact_compare or any(r.argmin is None for r in bound.groups):
        return False
    value = float(dec.const) + sum(r.best for r in bound.groups)
    return value < -MARGIN * max(bound.scale, 1.0)


def _meets_at(model, line: Line, argmin: dict) -> bool:
    setting = dict(model.knobs.defaults())
    setting.update({model.knobs.by_symbol[s].name: v for s, v in argmin.items()})
    return meets_all([line], model, setting)


def _solver_subset(model, line: Line, relaxed: dict, limits) -> Verdict:
    """Can `line` be met with the given bounds dropped? (PROVED: yes; REFUTED: no.)"""
    prob = _Problem(model, [line], limits)
    keep = [0] + [i for i, m in enumerate(prob.members)
                  if m[0] == "bound" and m[1][1] not in relaxed.get(m[1][0], set())]
    return solver_verdict(prob.check(keep), sat_means=Verdict.PROVED)


def _by_solver(model, lines, limits):
    try:
        prob = _Problem(model, lines, limits)
    except A.NotModelled as exc:
        return _unknown(model, lines, str(exc))
    everything = list(range(len(prob.members)))
    answer = prob.check(everything)
    verdict = solver_verdict(answer, sat_means=Verdict.PROVED)
    if verdict is Verdict.UNKNOWN:
        return _unknown(model, lines, unknown_reason(prob.solver, limits))
    if verdict is Verdict.PROVED:
        setting = prob.enc.decode(prob.solver.model())
        if not meets_all(lines, model, setting):
            return _unknown(model, lines, "the solver's witness did not re-evaluate as meeting the budget")
        return _proved(model, lines, setting, "z3")
    names = {str(lit): i for i, lit in enumerate(prob.lits)}
    core = sorted(names[str(c)] for c in prob.solver.unsat_core())
    minimal = True
    for i in list(core):
        rest = [j for j in core if j != i]
        r = prob.check(rest)
        if r == z3.unsat:
            core = rest
        elif r != z3.sat:
            minimal = False
    members = []
    for i in core:
        kind, what = prob.members[i]
        if kind == "line":
            members.append(CoreMember("line", lines[what].text, lines[what].span))
        else:
            members.append(_bound_text(model, *what))
    return _refuted(model, lines, members, minimal, "z3")


def _proved(model, lines, setting, method):
    # the witness as the user (and `kmr run`) will read it back, re-checked there
    shown = model.knobs.writable(setting, lambda s: meets_all(lines, model, s))
    if shown is None:
        return _unknown(model, lines, "no knob value a user can write near the solver's witness meets the budget")
    summary = f"budget can be met, e.g. at {render_setting(shown, model.knobs, limit=6)}"
    return ObligationResult("feasibility", Verdict.PROVED, lines[0].span, summary, model.pipeline.name,
                            witness=model.knobs.to_user(shown), method=method), []


def _unknown(model, lines, reason):
    span = lines[0].span
    return (ObligationResult("feasibility", Verdict.UNKNOWN, span, "budget: unknown", model.pipeline.name,
                             reason=reason, method="z3"),
            [error("KMR303", span, "could not decide whether the budget can be met", f"reason: {reason}")])


def approx_value(model, expr, env):
    """A value for a message: the float enclosure's midpoint, rounded (exact when it cannot)."""
    dec = decomposition(model, expr)
    if dec is None:
        return as_number(evaluate(expr, env))
    lo, hi, _ = line_range(model, dec, env)
    v = (lo + hi) / 2
    return int(round(v)) if abs(v - round(v)) <= 1e-6 * max(1.0, abs(v)) else round(v, 6)


def _approx(x: Fraction) -> str:
    try:
        return f"{float(x):.4g}"
    except OverflowError:                     # beyond float64: the exact value's magnitude
        return f"~1e{len(str(abs(x.numerator))) - len(str(x.denominator))}"


def _conflict_note(conflict: dict) -> str:
    """The few components that, even at their best, add the most to the certificate's sum."""
    shown = []
    for c in conflict["top"]:
        who = f"layer {c['layer']}" if c["layer"] else "knobs"
        knobs = ", ".join(c["knobs"][:4]) + (", ..." if len(c["knobs"]) > 4 else "")
        shown.append(f"{who} ({knobs}) at least {_approx(Fraction(c['at_best']))}")
    rest = conflict["components"] - len(conflict["top"])
    more = f"; and {rest:,} more" if rest > 0 else ""
    return ("out of reach even at their best (each one's least share of that sum): " + "; ".join(shown) + more
            + " (exact values: `--format json`)")


def _refuted(model, lines, core, minimal, method, best=None, certificate=None):
    span = next((m.span for m in core if m.kind == "line"), lines[0].span)
    notes = [f"conflicting: `{m.text}` ({'budget line' if m.kind == 'line' else 'knob bound'} at {m.span})"
             for m in core]
    if best is not None:
        line, argmin, g_min = best
        setting = dict(model.knobs.defaults())
        setting.update({model.knobs.by_symbol[s].name: v for s, v in argmin.items()})
        try:
            right = approx_value(model, line.right, model.knobs.env(setting))
            # g = left - right (or right - left for >=, >): the left side follows from g's minimum
            left = right + g_min if line.constraint.op in ("<=", "<", "==", "!=") else right - g_min
            left = int(round(left)) if abs(left - round(left)) <= 1e-6 * max(1.0, abs(left)) else round(left, 6)
            knobs_shown = {model.knobs.by_symbol[s].name: v for s, v in argmin.items()}
            notes.append(f"at best the left side is {left} against {right}, "
                         f"at {render_setting(knobs_shown, model.knobs, limit=6)}")
        except Unevaluable:
            pass
    if not minimal:
        notes.append("the solver could not decide every subset: this core may not be minimal")
    if certificate is not None and certificate.get("kind") in ("decoupled", "branch-and-bound-tree", "box-split"):
        notes.append(certificate["summary"])
    elif certificate is not None and certificate.get("checked"):
        weights = " + ".join(f"{float(Fraction(y)):.4g} x (`{t}`)" for y, t in
                             zip(certificate["multipliers"], certificate["lines"]) if y != "0")
        notes.append(f"certificate (checked in exact arithmetic): {weights}, each line as left - right, is at "
                     f"least {float(Fraction(certificate['bound'])):.4g} > 0 at every setting")
        conflict = certificate.get("conflict")
        if conflict and conflict["top"]:
            notes.append(_conflict_note(conflict))
    elif certificate is not None:
        notes.append("certificate: the MILP solver's exhaustive branch and bound (the LP relaxation alone is "
                     "feasible, so no multiplier certificate exists)"
                     + ("; Z3 confirms it independently" if certificate.get("z3_confirms") else ""))
    summary = "budget cannot be met: " + "; ".join(m.text for m in core)
    diag = error("KMR302", span, "no knob setting meets the budget", *notes)
    return ObligationResult("feasibility", Verdict.REFUTED, span, summary, model.pipeline.name,
                            core=tuple(core), core_minimal=minimal, method=method, certificate=certificate), [diag]


__all__ = ["approx_value", "check_feasibility", "decomposition", "line_bound", "line_holds", "line_range",
           "meets_all"]
