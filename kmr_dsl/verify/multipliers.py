"""The decoupled certificate's multipliers (joint.py), proposed in floats.

Contract: `propose(shape, atoms, rest, n, tables)` returns (y normalised, scale): weights
y >= 0 over the n lines maximising the sampled decoupled bound over the case settings
`rest`, or None when that bound stays <= 0; `tables` receives each (case, atom)'s
sampled values, which joint.refute reads to share the slack among the groups. Nothing
exact rests on these floats: joint.py proves the bound the proposal promises, in
rationals.

How: each group's parts sampled along its atom's range (SAMPLES points; evaluated with
numpy, vecfloat.py, or point by point where it does not know a term), and y maximising
the decoupled bound by a cutting-plane LP (Kelley; the bound is concave in y), at most
ROUNDS rounds.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linprog

from kmr_dsl.verify.numeric import Unevaluable, compile_expr
from kmr_dsl.verify.vecfloat import vector

SAMPLES = 129        # points of an atom's range the float search evaluates
ROUNDS = 40          # cutting-plane LP rounds


def _floats(bags: list):
    """Per line, a float function of the atom value: its terms' sum."""
    fns = [[(m, compile_expr(t, exact=False)) for t, m in bag.items()] for bag in bags]
    return [lambda env, fs=fs: sum(m * f(env) for m, f in fs) for fs in fns]


def _samples(atom) -> list[float]:
    """Points of the atom's range, as floats: they only guide the proposal (nothing exact
    rests on them), and exact Fractions here cost more than the whole search."""
    lo, hi = float(atom.lo), float(atom.hi)
    if atom.integer and atom.hi - atom.lo < SAMPLES:
        return [lo + k for k in range(int(atom.hi - atom.lo) + 1)]
    pts = np.linspace(lo, hi, SAMPLES)
    if atom.integer:
        pts = np.unique(np.round(pts))
    return pts.tolist()


def _table(shape, k: int, a, atom):
    """The float values of case k's per-line terms over atom a at its sample points
    ([points x lines]): each line's terms compiled once per shape into a numpy function
    evaluated over every point at once, or, for a term `vecfloat.vector` does not know, point by point
    through numeric's float closures."""
    xs = np.array(_samples(atom), dtype=float)
    fns = shape.floats.get((k, a))
    if fns is None:
        bags = shape.cases[k][2][a]
        try:
            fns = ("vec", [[(m, vector(t, a)[0]) for t, m in bag.items()] for bag in bags])
        except (Unevaluable, TypeError, ValueError, ZeroDivisionError, FloatingPointError):
            fns = ("scalar", _floats(bags))
        shape.floats[(k, a)] = fns
    kind, fs = fns
    if kind == "vec":
        try:
            with np.errstate(all="raise"):
                return np.stack([sum((m * np.broadcast_to(f(xs), xs.shape) for m, f in line), np.zeros_like(xs))
                                 for line in fs], axis=1)
        except (Unevaluable, FloatingPointError):
            shape.floats[(k, a)] = ("scalar", _floats(shape.cases[k][2][a]))
            fs = shape.floats[(k, a)][1]
    return np.array([[f({a: x}) for f in fs] for x in xs.tolist()], dtype=float)


def propose(shape, atoms, rest: list[int], n: int, tables: dict):
    """(y normalised, scale) maximising the sampled decoupled bound over the cases `rest`, or
    None when it stays <= 0. `tables` receives each (case, atom)'s sampled values."""
    per_case = []                            # per case: (const vector, [values points x lines])
    for k in rest:
        _, consts, parts = shape.cases[k]
        vals = []
        for a in parts:
            tables[(k, a)] = _table(shape, k, a, atoms[a][1])
            vals.append(tables[(k, a)])
        per_case.append((np.array([float(v) for v in consts]), vals))
    tables = per_case
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


__all__ = ["ROUNDS", "SAMPLES", "propose"]
