"""Lines infeasible only together through a many-knob group: a decoupled Lagrangian
certificate, proposed in floats and checked in exact rational arithmetic.

Contract: `refute(lines, knobs)` returns a `Certificate` proving that no setting meets
every line (`g_i <= 0` / `g_i < 0`), or None (nothing concluded). `check(lines, knobs,
cert)` re-derives everything the certificate rests on from the lines alone and returns
the certified positive minimum, or None when the certificate does not hold.

The argument (atoms.py gives the shape). With the lines over atoms, for each setting c
of the case knobs each line is `const_i(c) + sum over terms`; terms that share an atom
form a *group* (one per layer shape: an atom is a layer's count, equal layers share
it). For weights y >= 0, any real setting x has

    sum_i y_i g_i(x) = y.const(c) + sum over groups T of psi_T(atoms of T at x),
                    psi_T = sum_i y_i (line i's terms in T)

and each atom at x lies in its proved range. So if, for every c, y.const(c) plus the
sum over groups of a lower bound of psi_T over its atom's range is positive, the lines
cannot hold together (a setting meeting them makes the sum <= 0). This drops the
coupling between layers (each count may move on its own) but keeps the coupling between
lines (one count read by `size` and `nonzero`), which is what makes `size` small and
`nonzero` large at once impossible.

Finding y: floats only — each group's parts sampled along its atom's range, and y
maximising the decoupled bound by a cutting-plane LP (Kelley; the bound is concave in
y). Proving: each group's atom range is split into boxes (best-first, exact interval
evaluation: atoms.ival) until its lower bound is within a share of the slack; the
certificate lists y and every box. `check` re-atomizes the lines (the atom ranges
re-proved), re-evaluates every box's exact enclosure, checks the boxes cover each atom's
range, and sums. Nothing is exponential in the knobs: the work is (case settings) x
(groups) x (boxes), each group one atom.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import sympy as sp
from scipy.optimize import linprog

from kmr_dsl.verify.algebra import frac
from kmr_dsl.verify.atoms import NotAtomic, atomize, ival
from kmr_dsl.verify.numeric import Unevaluable, compile_expr

SAMPLES = 129        # points of an atom's range the float search evaluates
ROUNDS = 40          # cutting-plane LP rounds
MAX_BOXES = 400      # boxes one group's lower bound may use


@dataclass
class Certificate:
    multipliers: list[Fraction]          # y, one per line
    bound: Fraction                      # the certified minimum of sum y_i g_i (> 0)
    boxes: list[dict]                    # per case setting: {atom index: [(lo, hi), ...]}
    cases: list[dict]                    # the case settings, {knob name: value}
    atoms: int

    def to_json(self, lines) -> dict:
        return {"kind": "decoupled", "checked": True, "lines": [ln.text for ln in lines],
                "multipliers": [str(v) for v in self.multipliers], "bound": str(self.bound),
                "cases": self.cases, "atoms": self.atoms,
                "boxes": sum(len(b) for per in self.boxes for b in per.values()),
                "note": "sum of multiplier x (left - right) over the lines is at least `bound` > 0 at every knob "
                        "setting: per case-knob setting, each layer count (an atom, its range proved by "
                        "monotonicity) ranges on its own over boxes whose exact interval bounds are summed; "
                        "checked in exact rational arithmetic"}


def _split(exprs: list, atoms: dict):
    """(consts per line, {atom symbol: [part per line]}) of the lines at one case setting,
    or NotAtomic when a term reads two atoms or is not a number without one."""
    n = len(exprs)
    consts = [Fraction(0)] * n
    parts: dict = {}
    for i, e in enumerate(exprs):
        for term in (e.args if isinstance(e, sp.Add) else (e,)):
            if term.is_Number:
                consts[i] += frac(term)
                continue
            got = term.free_symbols & atoms.keys()
            if len(got) != 1 or term.free_symbols - got:
                raise NotAtomic("a term with no atom or with two")
            a = got.pop()
            parts.setdefault(a, [[] for _ in range(n)])[i].append(term)
    return consts, {a: [sp.Add(*ts) for ts in p] for a, p in parts.items()}


def _decoupled(lines, knobs):
    exprs = [ln.expr for ln in lines]
    if not lines or not all(ln.op in ("<=", "<") and ln.expr is not None for ln in lines):
        return None
    at = atomize(exprs, knobs)
    if at is None:
        return None
    atoms = {a.symbol: (j, a) for j, a in enumerate(at.atoms)}
    out = []
    for c in at.case_settings(knobs):
        consts, parts = _split([e.xreplace(c) for e in at.exprs], atoms)
        out.append((c, consts, parts))
    return at, atoms, out


def _samples(atom) -> list[Fraction]:
    lo, hi = atom.lo, atom.hi
    if atom.integer and hi - lo < SAMPLES:
        return [lo + k for k in range(int(hi - lo) + 1)]
    pts = [lo + (hi - lo) * k / (SAMPLES - 1) for k in range(SAMPLES)]
    if atom.integer:
        pts = sorted({Fraction(round(p)) for p in pts} | {lo, hi})
    return pts


def _propose(atoms, cases, n: int):
    """(y normalised, scale) maximising the sampled decoupled bound, or None when it stays <= 0."""
    tables = []                              # per case: (const vector, [values points x lines])
    for _, consts, parts in cases:
        vals = []
        for a, ps in parts.items():
            pts = _samples(atoms[a][1])
            fns = [compile_expr(p, exact=False) for p in ps]
            vals.append(np.array([[f({a: float(x)}) for f in fns] for x in pts], dtype=float))
        tables.append((np.array([float(v) for v in consts]), vals))
    scale = np.ones(n)
    for k0, vals in tables:
        mag = np.abs(k0) + sum(np.abs(v).max(axis=0) for v in vals)
        scale = np.maximum(scale, mag)
    if not np.all(np.isfinite(scale)):
        return None

    def dual(y):
        w = y / scale
        best, cut = np.inf, None
        for k0, vals in tables:
            h = k0.copy()
            for v in vals:
                h += v[int(np.argmin(v @ w))]
            if h @ w < best:
                best, cut = h @ w, h / scale
        return best, cut

    y = np.full(n, 1.0 / n)
    cuts, best_y, best_v = [], y, -np.inf
    for _ in range(ROUNDS):
        v, cut = dual(y)
        if v > best_v:
            best_v, best_y = v, y
        cuts.append(cut)
        # max z s.t. z <= y.cut_k, sum y = 1, y >= 0  (variables y..., z)
        c = np.zeros(n + 1)
        c[-1] = -1.0
        a_ub = np.array([np.append(-k, 1.0) for k in cuts])
        res = linprog(c, A_ub=a_ub, b_ub=np.zeros(len(cuts)), A_eq=[np.append(np.ones(n), 0.0)], b_eq=[1.0],
                      bounds=[(0, None)] * n + [(None, None)], method="highs")
        if res.status != 0:
            break
        y = np.maximum(res.x[:n], 0.0)
        if -res.fun - best_v <= 1e-9 * max(1.0, abs(best_v)):
            break
    if not best_v > 0:
        return None
    return best_y, scale


def _group_bound(parts: list, y: list[Fraction], a, atom, target: Fraction):
    """Boxes covering the atom's range and their least exact lower bound of sum y_i part_i,
    refined best-first until that bound reaches `target` (or MAX_BOXES)."""
    psi = sp.Add(*[sp.Rational(v.numerator, v.denominator) * p for v, p in zip(y, parts) if v])
    step = 1 if atom.integer else 0

    def lower(lo, hi):
        return ival(psi, {a: (lo, hi)})[0]

    heap = [(lower(atom.lo, atom.hi), atom.lo, atom.hi)]
    done = []
    while heap and heap[0][0] < target and len(heap) + len(done) < MAX_BOXES:
        lb, lo, hi = heapq.heappop(heap)
        if hi - lo <= step:
            if lo == hi or not step:
                done.append((lb, lo, hi))
                continue
        mid = (lo + hi) / 2
        if step:
            mid = Fraction(math.floor(mid))
            left, right = (lo, mid), (mid + 1, hi)
        else:
            left, right = (lo, mid), (mid, hi)
        for b in (left, right):
            heapq.heappush(heap, (lower(*b), *b))
    boxes = sorted([(lo, hi) for _, lo, hi in heap + done])
    return min(lb for lb, _, _ in heap + done), boxes


def refute(lines: list, knobs) -> Certificate | None:
    try:
        got = _decoupled(lines, knobs)
        if got is None:
            return None
        at, atoms, cases = got
        proposed = _propose(atoms, cases, len(lines))
        if proposed is None:
            return None
        y_norm, scale = proposed
        y = [Fraction(float(v)).limit_denominator(10 ** 6) / Fraction(float(s)).limit_denominator(10 ** 6)
             for v, s in zip(y_norm, scale)]
        y = [v if v > 0 else Fraction(0) for v in y]
        if not any(y):
            return None
        boxes, total = [], None
        for c, consts, parts in cases:
            base = sum((yi * k for yi, k in zip(y, consts)), Fraction(0))
            # each group's share of the room left: its bound may fall that far below its
            # float minimum at the sampled points
            approx = {}
            for a, ps in parts.items():
                fns = [compile_expr(p, exact=False) for p in ps]
                approx[a] = min(sum(float(yi) * f({a: float(x)}) for yi, f in zip(y, fns))
                                for x in _samples(atoms[a][1]))
            room = float(base) + sum(approx.values())
            if not room > 0:
                return None
            share = room / (2 * max(1, len(parts)))
            per, bound = {}, base
            for a, ps in parts.items():
                j, atom = atoms[a]
                lb, bx = _group_bound(ps, y, a, atom, Fraction(approx[a] - share))
                per[j] = bx
                bound += lb
            if bound <= 0:
                return None
            boxes.append(per)
            total = bound if total is None else min(total, bound)
        names = [{knobs.by_symbol[s].name: knobs.by_symbol[s].to_user(_value(knobs.by_symbol[s], v))
                  for s, v in c.items()} for c, _, _ in cases]
        cert = Certificate(y, total, boxes, names, len(at.atoms))
        return cert if check(lines, knobs, cert) == total else None
    except (NotAtomic, Unevaluable, ZeroDivisionError, OverflowError, RecursionError, ValueError):
        return None


def _value(kv, v):
    if kv.kind == "bool":
        return bool(v)
    return int(v) if kv.kind == "enum" else frac(v)


def check(lines: list, knobs, cert: Certificate) -> Fraction | None:
    """The certified minimum (> 0) of sum y_i g_i over every setting, re-derived from the
    lines (atoms and their ranges re-proved, every box re-evaluated exactly, coverage of
    each atom's range checked), or None when the certificate does not hold."""
    y = cert.multipliers
    if len(y) != len(lines) or any(v < 0 for v in y) or not any(y):
        return None
    try:
        got = _decoupled(lines, knobs)
        if got is None:
            return None
        _, atoms, cases = got
        if len(cases) != len(cert.boxes):
            return None
        total = None
        for (c, consts, parts), per in zip(cases, cert.boxes):
            bound = sum((yi * k for yi, k in zip(y, consts)), Fraction(0))
            if set(per) != {atoms[a][0] for a in parts}:
                return None
            for a, ps in parts.items():
                j, atom = atoms[a]
                bx = sorted(per[j])
                if not _covers(bx, atom):
                    return None
                psi = sp.Add(*[sp.Rational(v.numerator, v.denominator) * p for v, p in zip(y, ps) if v])
                bound += min(ival(psi, {a: (lo, hi)})[0] for lo, hi in bx)
            total = bound if total is None else min(total, bound)
        return total if total is not None and total > 0 else None
    except (NotAtomic, Unevaluable, ZeroDivisionError, OverflowError, RecursionError, TypeError):
        return None


def _covers(boxes: list, atom) -> bool:
    """Do the boxes cover the atom's range (its whole values only, for a whole atom)?"""
    if not boxes or boxes[0][0] > atom.lo or boxes[-1][1] < atom.hi:
        return False
    reach = boxes[0][1]
    for lo, hi in boxes[1:]:
        if lo > reach + (1 if atom.integer else 0) or (atom.integer and lo != int(lo)):
            return False
        reach = max(reach, hi)
    return all(lo <= hi for lo, hi in boxes)


__all__ = ["Certificate", "check", "refute"]
