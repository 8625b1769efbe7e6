"""Several budget lines at once, decided as a multiple-choice knapsack MILP (HiGHS, via scipy).

Contract: `Knapsack(sep)` holds a `separable.Separable`; `solve(rows)` decides whether
the lines `rows` can hold together: ("feasible", setting) with an exact setting,
("infeasible", None), or ("unknown", reason). `core()` shrinks the infeasible lines to
a minimal subset by deletion; `multipliers(rows)` solves the Lagrangian dual of the LP
relaxation and returns y >= 0 (one per line, rationals) whose combination
sum y_i g_i has a positive minimum when the LP relaxation is already infeasible —
the certificate certificate.py checks in exact arithmetic without any solver.

Formulation. A table class c with m_c members (layers of one shape) and points P_c
gets integer counts n_{c,p} in [0, m_c] with sum_p n_{c,p} = m_c: how many of its
layers take point p (layers of one shape are interchangeable, so 1,000 equal layers
are a few dozen variables, not 1,000 x points). Points no better than another on every
line are dropped first (with only `<=` lines a dominated point is never needed).
An affine class adds, per member and knob, an integer lattice index (stepped knobs:
`int in [1 B, 1 GB]` is one bounded integer) or a continuous value (real knobs).
Each line is one row, divided by its largest coefficient.

Floating point: HiGHS decides in float64 with tolerances. A "feasible" answer is
asked for with every row tightened by TIGHTEN and its setting is re-checked exactly
(rationals) before anyone sees it; an "infeasible" answer is only reported when the
rows *loosened* by TIGHTEN are still infeasible. When the LP relaxation is feasible
but the MILP is not, bbtree.py rebuilds the branch and bound as a tree certificate that is
checked exactly; only past its cap does the result rest on HiGHS's search (certificate
kind "branch-and-bound", not independently checked).
"""

from __future__ import annotations

from collections import Counter
from fractions import Fraction

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, linprog, milp

from kmr_dsl.verify.separable import Separable, exact_values, values

TIGHTEN = 1e-7         # relative slack each row is tightened (witness) or loosened (refutation) by
TIME_LIMIT_S = 30.0    # per HiGHS call; a limit hit is UNKNOWN, never a verdict
PARETO_CAP = 1024      # points above which the dominance filter is skipped (quadratic)


def _pareto(v: np.ndarray) -> np.ndarray:
    """Indices of the points of v (points x lines) that no other point dominates."""
    _, first = np.unique(v, axis=0, return_index=True)
    first = np.sort(first)
    if len(first) > PARETO_CAP or v.shape[1] == 0:
        return first
    w = v[first]
    le = (w[:, None, :] <= w[None, :, :]).all(axis=2)      # le[q, p]: q no worse than p everywhere
    lt = (w[:, None, :] < w[None, :, :]).any(axis=2)
    dominated = (le & lt).any(axis=0)
    return first[~dominated]


class Knapsack:
    def __init__(self, sep: Separable):
        self.sep = sep
        n = len(sep.lines)
        self.tables = [c for c in sep.classes if c.mode == "table"]
        self.affine = [c for c in sep.classes if c.mode == "affine"]
        self.vals = [values(c, n) for c in self.tables]
        # a row's magnitude: the largest |value| its terms can take, summed
        scale = np.array([abs(float(c)) for c in sep.consts])
        for c, v in zip(self.tables, self.vals):
            scale += len(c.members) * np.abs(v).max(axis=0)
        for c in self.affine:
            for i, (k0, coefs) in enumerate(c.affine):
                span = sum(abs(float(a)) * max(abs(float(_lo(kv))), abs(float(_hi(kv))))
                           for a, kv in zip(coefs, c.kvs))
                scale[i] += len(c.members) * (abs(float(k0)) + span)
        self.scale = np.maximum(scale, 1.0)
        self.keep = [_pareto(v) for v in self.vals]
        # per subset of lines: its kept points and its MILP's arrays (a refutation asks twice,
        # tightened and loosened, and `core` and `multipliers` ask the same subsets again;
        # the dominance filter is most of a build). Read only, never changed
        self._kept: dict = {}
        self._built: dict = {}
        if not np.all(np.isfinite(self.scale)) or not all(np.all(np.isfinite(v)) for v in self.vals):
            raise ValueError("a budget line takes a value that is not finite")

    # ------------------------------------------------------------ the MILP

    def _rows(self, rows: list[int]):
        """(A, ub, integrality, lb, ub of variables, decoder layout) for the lines `rows`."""
        key = tuple(rows)
        hit = self._built.get(key)
        if hit is None:
            hit = self._built[key] = self._build(rows)
        return hit

    def _build(self, rows: list[int]):
        cols_a, integ, vlo, vhi, layout = [], [], [], [], []
        eq_rows, eq_rhs = [], []
        rhs = np.array([-float(self.sep.consts[i]) for i in rows])
        sub = np.array(rows, dtype=int)
        for c, v, keep in zip(self.tables, self.vals, self._keep(rows)):
            start = len(integ)
            m = len(c.members)
            cols_a.append(v[np.ix_(keep, sub)])
            integ += [1] * len(keep)
            vlo += [0] * len(keep)
            vhi += [m] * len(keep)
            eq_rows.append((start, len(keep)))
            eq_rhs.append(m)
            layout.append(("table", c, keep, start))
        for c in self.affine:
            for comp in c.members:
                start = len(integ)
                block = np.zeros((len(kvs := c.kvs), len(rows)))
                for r, i in enumerate(rows):
                    k0, coefs = c.affine[i]
                    rhs[r] -= float(k0)
                    for j, (a, kv) in enumerate(zip(coefs, kvs)):
                        if kv.kind == "stepped":     # value = first + k * step, k integer
                            block[j, r] = float(a * kv.step)
                            rhs[r] -= float(a * kv.values[0])
                        else:
                            block[j, r] = float(a)
                for kv in kvs:
                    if kv.kind == "stepped":
                        integ.append(1)
                        vlo.append(0)
                        vhi.append(len(kv.values) - 1)
                    else:
                        integ.append(0)
                        vlo.append(float(kv.lo))
                        vhi.append(float(kv.hi))
                cols_a.append(block)
                layout.append(("affine", c, comp, start))
        a = np.vstack(cols_a).T if cols_a else np.zeros((len(rows), 0))
        nvar = a.shape[1]
        cols = [np.arange(start, start + k) for start, k in eq_rows]
        eq = sparse.csr_matrix((np.ones(sum(k for _, k in eq_rows)),
                                (np.repeat(np.arange(len(eq_rows)), [k for _, k in eq_rows]),
                                 np.concatenate(cols) if cols else np.zeros(0, int))),
                               shape=(len(eq_rows), nvar))
        return a, rhs, np.array(integ), np.array(vlo, float), np.array(vhi, float), eq, np.array(eq_rhs, float), layout

    def _keep(self, rows):
        if len(rows) == len(self.sep.lines):
            return self.keep
        key = tuple(rows)
        hit = self._kept.get(key)
        if hit is None:
            hit = self._kept[key] = [keep[_pareto(v[np.ix_(keep, np.array(rows, dtype=int))])]
                                     for keep, v in zip(self.keep, self.vals)]
        return hit

    def _milp(self, rows: list[int], slack: float):
        a, rhs, integ, vlo, vhi, eq, eq_rhs, layout = self._rows(rows)
        # rows divided by their largest coefficient: dividing by the magnitude of the values
        # instead would shrink a 1-byte coefficient beside a 1 GB range below HiGHS's
        # smallest kept matrix entry (1e-9), silently dropping the variable
        s = np.maximum(np.abs(a).max(axis=1) if a.size else np.ones(len(rows)), 1.0)
        cons = [LinearConstraint(a / s[:, None], -np.inf, rhs / s + slack)]
        if len(eq_rhs):
            cons.append(LinearConstraint(eq, eq_rhs, eq_rhs))
        res = milp(np.zeros(a.shape[1]), constraints=cons, integrality=integ, bounds=Bounds(vlo, vhi),
                   options={"time_limit": TIME_LIMIT_S, "presolve": True})
        return res, layout

    def solve(self, rows: list[int] | None = None):
        """("feasible", exact setting) | ("infeasible", None) | ("unknown", reason)."""
        rows = list(range(len(self.sep.lines))) if rows is None else rows
        if not self.tables and not self.affine:       # constant lines: nothing to choose
            ok = all(_holds(self.sep.lines[i].op, Fraction(self.sep.consts[i])) for i in rows)
            return ("feasible", {}) if ok else ("infeasible", None)
        res, layout = self._milp(rows, -TIGHTEN)
        if res.status == 0:
            setting = self._decode(res.x, layout)
            if setting is None:
                return "unknown", "the MILP solution did not round to a setting"
            return "feasible", setting
        if res.status != 2:
            return "unknown", f"the MILP solver stopped: {res.message}"
        loose, _ = self._milp(rows, TIGHTEN)
        if loose.status == 2:
            return "infeasible", None
        return "unknown", "the lines can only be met within the solver's tolerance"

    def core(self, rows: list[int]) -> tuple[list[int], bool]:
        """A minimal infeasible subset of `rows` (deletion); minimal=False if a check was unknown."""
        core, minimal = list(rows), True
        for i in list(rows):
            rest = [j for j in core if j != i]
            if not rest:
                continue
            verdict, _ = self.solve(rest)
            if verdict == "infeasible":
                core = rest
            elif verdict == "unknown":
                minimal = False
        return core, minimal

    def _decode(self, x, layout) -> dict | None:
        """The exact setting a MILP solution stands for (None when it does not round to one)."""
        setting: dict = {}
        for kind, c, what, start in layout:
            if kind == "table":
                counts = np.rint(x[start:start + len(what)]).astype(int)
                if counts.min() < 0 or counts.sum() != len(c.members):
                    return None
                members = iter(c.members)
                for p, n in zip(what, counts):
                    point = c.point(int(p))
                    for _ in range(n):
                        comp = next(members, None)
                        if comp is None:
                            break
                        for s, v in zip(comp.symbols, point):
                            setting[s] = v
            else:
                for j, (s, kv) in enumerate(zip(what.symbols, c.kvs)):
                    v = x[start + j]
                    if kv.kind == "stepped":
                        setting[s] = kv.values[min(max(int(round(v)), 0), len(kv.values) - 1)]
                    else:
                        v = min(max(Fraction(float(v)), kv.lo), kv.hi)
                        if not kv.contains(v):          # an open end: step just inside it
                            inward = (kv.hi - kv.lo) / (1 << 20)
                            v = v + inward if v == kv.lo else v - inward
                        if not kv.contains(v):
                            return None
                        setting[s] = v
        return setting

    # ------------------------------------------------------------ the dual (certificate)

    def multipliers(self, rows: list[int]) -> tuple[list[Fraction], list[Fraction]] | None:
        """y >= 0 over `rows` maximising the Lagrangian bound (largest entry 1), rounded to short
        rationals and unrounded; None unless that bound is positive.

        maximise sum_i y_i C_i + sum_c m_c z_c + sum_k w_k subject to sum_i y_i = 1,
        z_c <= sum_i y_i v_i(c, p) for every point p, and w_k <= (sum_i y_i a_ik) * end for
        both ends of affine knob k (a linear function's minimum on an interval).
        """
        n = len(rows)
        s = self.scale[rows]
        const = np.array([float(self.sep.consts[i]) for i in rows]) / s
        blocks = []
        for c, v, keep in zip(self.tables, self.vals, self._keep(rows)):
            blocks.append(("z", len(c.members), v[np.ix_(keep, np.array(rows, dtype=int))] / s))
        for c in self.affine:
            for _comp in c.members:
                for j, kv in enumerate(c.kvs):
                    coef = np.array([float(c.affine[i][1][j]) for i in rows]) / s
                    ends = [float(_lo(kv)), float(_hi(kv))]
                    blocks.append(("w", 1, np.outer(ends, coef)))
                const = const + np.array([float(c.affine[i][0]) for i in rows]) / s
        nz = len(blocks)
        cols_obj = list(-const) + [-float(m) for _, m, _ in blocks]
        data, ri, ci, r = [], [], [], 0
        for b, (_, _, tab) in enumerate(blocks):
            k = tab.shape[0]        # z_b - sum_i y_i tab[p, i] <= 0 for every row p of the block
            data += [-tab.ravel(), np.ones(k)]
            ri += [np.repeat(np.arange(r, r + k), n), np.arange(r, r + k)]
            ci += [np.tile(np.arange(n), k), np.full(k, n + b)]
            r += k
        a_ub = sparse.csr_matrix((np.concatenate(data), (np.concatenate(ri), np.concatenate(ci))),
                                 shape=(r, n + nz)) if data else None
        a_eq = np.zeros((1, n + nz))
        a_eq[0, :n] = 1
        bounds = [(0, None)] * n + [(None, None)] * nz
        res = linprog(np.array(cols_obj), A_ub=a_ub, b_ub=np.zeros(r) if r else None, A_eq=a_eq, b_eq=[1.0],
                      bounds=bounds, method="highs", options={"time_limit": TIME_LIMIT_S})
        if res.status != 0 or -res.fun <= TIGHTEN:
            return None
        w = np.maximum(res.x[:n], 0) / s
        w = w / w.max()
        # short rationals first (readable); the float values exactly if rounding broke the bound
        return ([Fraction(float(v)).limit_denominator(10 ** 6) for v in w], [Fraction(float(v)) for v in w])


def _holds(op: str, g) -> bool:
    """`g op 0` for the ops a separable line has (budget.holds, without importing budget)."""
    return g <= 0 if op == "<=" else g < 0


def _lo(kv):
    return kv.values[0] if kv.kind == "stepped" else kv.lo


def _hi(kv):
    return kv.values[-1] if kv.kind == "stepped" else kv.hi


def exact_line_values(sep: Separable, setting: dict, knobs=None) -> list[Fraction]:
    """g_i at an exact setting (symbol -> value; with the KnobTable `knobs`, knob name ->
    value: no symbol-keyed copy made), summed part by part in rationals."""
    if knobs is not None and any(c.mode != "table" for c in sep.classes):
        setting, knobs = knobs.env(setting), None
    n = len(sep.lines)
    out = [Fraction(c) for c in sep.consts]
    for c in sep.classes:
        if c.mode == "table":
            # members share their values per grid point: each point's row once, times how
            # many members sit at it (exact: the sum's order does not matter in rationals)
            # Why: members are counted by the identities of their values (a setting holds
            # a few value objects many times: a domain's own values), in C (map, zip,
            # Counter), each distinct tuple then indexed once; a Fraction hashed per member
            # cost ~8x more at 3,000 layers. `setting` keeps its values alive, so equal ids
            # are the same objects; equal values under other ids still meet at `at[p]`.
            k = len(c.kvs)
            vals = list(map(setting.__getitem__, c.member_symbols(knobs)))
            ids = list(map(id, vals))
            keys = ids if k == 1 else list(zip(*[ids[j::k] for j in range(k)]))
            where = dict(zip(keys, range(len(keys))))
            at: dict = {}
            for key, count in Counter(keys).items():
                i = where[key] * k
                p = c.index(tuple(vals[i:i + k]))
                at[p] = at.get(p, 0) + count
            for p, count in at.items():
                row = exact_values(c, n, p)
                for i in range(n):
                    out[i] += row[i] * count
            continue
        for comp in c.members:
            for i, (k0, coefs) in enumerate(c.affine):
                out[i] += k0 + sum((a * Fraction(setting[s]) for a, s in zip(coefs, comp.symbols)), Fraction(0))
    return out


__all__ = ["Knapsack", "TIGHTEN", "exact_line_values"]
