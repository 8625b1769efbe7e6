"""Refutations with a minimal unsat core over budget lines and knob bounds: one line by its
sound lower bound, or the lines by Z3 with every line and bound behind an assumption literal.

Contract: `by_bounds(model, lines, defaults, candidates, limits)` refutes a line whose
sound lower bound over the domains is positive (a (result, diagnostics) pair, with an
exact single-line certificate when one checks), else appends each line's minimiser to
`candidates` and returns None; `by_solver(model, lines, limits)` decides the lines with
Z3 on the case-split encoding (lower.py): PROVED at a decoded witness re-checked
exactly, REFUTED with a core minimised by deletion, or UNKNOWN with the solver's
reason; `z3_confirms(model, lines)` is Z3's independent word that lines are
unsatisfiable; `split_families` names the knob declarations the encoding case-splits.

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
"""

from __future__ import annotations

from fractions import Fraction

import z3

from kmr_dsl.verify import algebra as A
from kmr_dsl.verify import certificate
from kmr_dsl.verify.bounds import MARGIN, relax_line, sound_bound
from kmr_dsl.verify.budget import Line
from kmr_dsl.verify.feasibility_results import proved_result, refuted_result, unknown_result
from kmr_dsl.verify.line_checks import decomposition, line_bound, meets_all, separable
from kmr_dsl.verify.lower import Encoding
from kmr_dsl.verify.report import (DEFAULT_RLIMIT, CoreMember, Limits, Verdict, new_solver, solver_verdict,
                                   unknown_reason)
from kmr_dsl.verify.state import PipelineModel


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


def z3_confirms(model, lines: list[Line]) -> bool:
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


def by_bounds(model, lines, defaults, candidates, limits):
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
                return refuted_result(model, lines, core, minimal, "bounds", best=(ln, best, lb.lb), certificate=cert)
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


def by_solver(model, lines, limits):
    try:
        prob = _Problem(model, lines, limits)
    except A.NotModelled as exc:
        return unknown_result(model, lines, str(exc))
    everything = list(range(len(prob.members)))
    answer = prob.check(everything)
    verdict = solver_verdict(answer, sat_means=Verdict.PROVED)
    if verdict is Verdict.UNKNOWN:
        return unknown_result(model, lines, unknown_reason(prob.solver, limits))
    if verdict is Verdict.PROVED:
        setting = prob.enc.decode(prob.solver.model())
        if not meets_all(lines, model, setting):
            return unknown_result(model, lines, "the solver's witness did not re-evaluate as meeting the budget")
        return proved_result(model, lines, setting, "z3")
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
    return refuted_result(model, lines, members, minimal, "z3")


__all__ = ["by_bounds", "by_solver", "split_families", "z3_confirms"]
