"""Separable budgets infeasible only through integrality: a branch-and-bound tree certificate,
proposed with HiGHS and checked in exact rational arithmetic.

Contract: `prove(sep, rows)` returns ("tree", tree) — a certificate that no setting meets
the lines `rows` of `sep` (a `separable.Separable`) —, ("witness", setting) when the
search meets an exact setting after all (symbol -> value, re-checked with rationals), or
None (nothing concluded: the tree outgrew MAX_NODES, an LP stopped, a rounding did not
hold). `check(sep, tree)` re-derives every row from `sep` and returns True only when the
tree proves infeasibility; it uses no solver and no float.

Why a tree. A multiplier certificate (certificate.py) exists exactly when the LP
relaxation of the knapsack is infeasible. With a relaxation gap — 0 or 90 % sparsity per
layer and `nonzero` asked to lie in a window no mix of whole layers hits — no multiplier
vector exists, and HiGHS's own branch and bound leaves no trace to check. The tree is that
trace, over the same variables as the MILP (knapsack.py):

- per table class c and grid point p, a count n_{c,p}: integer, 0 <= n <= m_c, and
  sum_p n_{c,p} = m_c (how many of the class's m_c interchangeable layers take p);
- per affine class, member and knob, a stepped knob's lattice index (integer, 0 .. len-1)
  or a real knob's value (continuous, [lo, hi]).

Every line is `g_i(x) = const_i + sum_v a_{i,v} x_v` in these variables, exactly (the
table values are the classes' exact rationals). The base region B is the box and the
class equalities; every knob setting maps to a whole point of B.

Format. A node is a *branch* `{"split": {"pi": {var: int}, "at": k}, "le": node, "ge": node}`
— the integer form pi.x (integer coefficients on integer variables only, so pi.x is whole
at every whole point) is <= k on one side and >= k + 1 on the other: every whole point
is on one side — or a *leaf* `{"y": [one per line of sep], "mu": [one per split on the
path, root first]}`. A leaf is valid when y, mu >= 0 and

    min over B of  sum_i y_i g_i(x) + sum_j mu_j h_j(x)  >  0

where h_j is the j-th split of the path as `pi.x - k <= 0` or `k + 1 - pi.x <= 0`. A point
meeting every line and the path has that sum <= 0, so no whole point reaches the leaf
meeting the lines; the tree covers every whole point, so none meets them anywhere. The
minimum over B is computed exactly without a solver: the constant, plus per table class
m_c times its least coefficient (a count vector is m_c times a point of the simplex),
plus per boxed variable its coefficient at the better end.

Branching (proposal only, soundness rests on `check`): at a node whose LP (min t with
every row <= t) is still met, the split is a line's own row scaled to integers when its
value at the LP point is fractional (a Chvatal-Gomory split: a window between two
reachable values of `nonzero` closes in two leaves, however many layers), else a
fractional variable. Work is bounded by MAX_NODES LPs; a larger tree is not built.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

from kmr_dsl.verify.knapsack import exact_line_values
from kmr_dsl.verify.separable import Separable, exact_values

MAX_NODES = 400        # LPs one proof may solve (each node one LP); past it: no certificate
TIME_LIMIT_S = 10.0    # per LP
FRACTIONAL = 1e-6      # a whole variable or form farther than this from an integer is fractional


class Relaxation:
    """The variables, exact rows and base region of a Separable (see the module docstring)."""

    def __init__(self, sep: Separable):
        self.sep = sep
        n = len(sep.lines)
        self.names: list[str] = []
        self.integer: list[bool] = []
        self.lo: list[Fraction] = []
        self.hi: list[Fraction] = []
        self.simplices: list[tuple[list[int], int]] = []      # (variables of a table class, m_c)
        self.boxed: list[int] = []                            # variables not in a simplex
        self.const = [Fraction(c) for c in sep.consts]
        self.rows: list[dict[int, Fraction]] = [{} for _ in range(n)]
        for ci, cls in enumerate(sep.classes):
            if cls.mode == "table":
                m = len(cls.members)
                idx = []
                for p in range(cls.points):
                    v = self._var(f"t{ci}.{p}", True, Fraction(0), Fraction(m))
                    idx.append(v)
                    for i, val in enumerate(exact_values(cls, n, p)):
                        if val:
                            self.rows[i][v] = Fraction(val)
                self.simplices.append((idx, m))
                continue
            for mi, _ in enumerate(cls.members):
                for j, kv in enumerate(cls.kvs):
                    stepped = kv.kind == "stepped"
                    lo, hi = (Fraction(0), Fraction(len(kv.values) - 1)) if stepped else (kv.lo, kv.hi)
                    v = self._var(f"a{ci}.{mi}.{j}", stepped, Fraction(lo), Fraction(hi))
                    self.boxed.append(v)
                    for i, (k0, coefs) in enumerate(cls.affine):
                        a = Fraction(coefs[j])
                        if j == 0:
                            self.const[i] += Fraction(k0)
                        if not a:
                            continue
                        if stepped:             # value = first + k * step
                            self.const[i] += a * Fraction(kv.values[0])
                            self.rows[i][v] = self.rows[i].get(v, Fraction(0)) + a * Fraction(kv.step)
                        else:
                            self.rows[i][v] = self.rows[i].get(v, Fraction(0)) + a
                if not cls.kvs:
                    for i, (k0, _) in enumerate(cls.affine):
                        self.const[i] += Fraction(k0)
        self.index = {name: v for v, name in enumerate(self.names)}

    def _var(self, name, integer, lo, hi) -> int:
        self.names.append(name)
        self.integer.append(integer)
        self.lo.append(lo)
        self.hi.append(hi)
        return len(self.names) - 1

    # ------------------------------------------------------------ the exact check

    def minimum(self, const: Fraction, coef: dict[int, Fraction]) -> Fraction:
        """min over the base region of const + sum coef_v x_v, exactly."""
        total = const
        for idx, m in self.simplices:
            total += m * min(coef.get(v, Fraction(0)) for v in idx)
        for v in self.boxed:
            a = coef.get(v, Fraction(0))
            total += min(a * self.lo[v], a * self.hi[v])   # an open end is approached, never passed
        return total

    def combine(self, y: list[Fraction], path: list[tuple[dict, int, str]], mu: list[Fraction]):
        """(const, coef) of sum_i y_i g_i + sum_j mu_j h_j."""
        const = sum((yi * c for yi, c in zip(y, self.const) if yi), Fraction(0))
        coef: dict[int, Fraction] = {}
        for yi, row in zip(y, self.rows):
            if yi:
                for v, a in row.items():
                    coef[v] = coef.get(v, Fraction(0)) + yi * a
        for (pi, k, side), m in zip(path, mu):
            if not m:
                continue
            sign = 1 if side == "le" else -1          # le: pi.x - k <= 0; ge: k + 1 - pi.x <= 0
            const += m * (-k if side == "le" else k + 1)
            for v, a in pi.items():
                coef[v] = coef.get(v, Fraction(0)) + sign * m * a
        return const, coef

    def row_form(self, i: int) -> dict[int, int] | None:
        """Line i's row scaled to coprime integers when it reads whole variables only."""
        row = {v: a for v, a in self.rows[i].items() if a}
        if not row or any(not self.integer[v] for v in row):
            return None
        den = math.lcm(*(a.denominator for a in row.values()))
        ints = {v: int(a * den) for v, a in row.items()}
        g = math.gcd(*ints.values())
        return {v: a // g for v, a in ints.items()}


def check(sep: Separable, tree: dict) -> bool:
    """Does `tree` (the JSON form) prove that no setting meets every line of `sep`?"""
    try:
        rel = Relaxation(sep)
        return _check_node(rel, tree, [], len(sep.lines))
    except (KeyError, TypeError, ValueError, ZeroDivisionError, AttributeError, RecursionError):
        return False


def _check_node(rel: Relaxation, node: dict, path: list, n_lines: int) -> bool:
    if "split" in node:
        split = node["split"]
        pi = {rel.index[name]: int(a) for name, a in split["pi"].items()}
        if any(type(a) is not int for a in split["pi"].values()) or type(split["at"]) is not int:
            return False
        if any(not rel.integer[v] for v in pi) or not any(pi.values()):
            return False                          # pi.x must be whole at every whole point
        k = split["at"]
        return (_check_node(rel, node["le"], path + [(pi, k, "le")], n_lines)
                and _check_node(rel, node["ge"], path + [(pi, k, "ge")], n_lines))
    y = [Fraction(v) for v in node["y"]]
    mu = [Fraction(v) for v in node["mu"]]
    if len(y) != n_lines or len(mu) != len(path) or any(v < 0 for v in y + mu):
        return False
    const, coef = rel.combine(y, path, mu)
    return rel.minimum(const, coef) > 0


# ---------------------------------------------------------------- the proposal (floats)

class _Search:
    def __init__(self, rel: Relaxation, rows: list[int]):
        self.rel, self.rows = rel, rows
        self.nodes = 0
        nv = len(rel.names)
        self.nv = nv
        self.lo = np.array([float(x) for x in rel.lo])
        self.hi = np.array([float(x) for x in rel.hi])
        a = np.zeros((len(rows), nv))
        self.rhs = np.zeros(len(rows))
        for r, i in enumerate(rows):
            for v, c in rel.rows[i].items():
                a[r, v] = float(c)
            self.rhs[r] = -float(rel.const[i])
        self.scale = np.maximum(np.abs(a).max(axis=1) if nv else np.ones(len(rows)), 1.0)
        self.a = a
        eq_r, eq_c = [], []
        for r, (idx, _) in enumerate(rel.simplices):
            eq_r += [r] * len(idx)
            eq_c += idx
        self.eq = sparse.csr_matrix((np.ones(len(eq_c)), (eq_r, eq_c)), shape=(len(rel.simplices), nv + 1))
        self.eq_rhs = np.array([float(m) for _, m in rel.simplices])
        self.forms = [f for f in (rel.row_form(i) for i in rows) if f is not None]
        # whole variables the rows cannot tell apart (two bit widths of an unpruned layer,
        # for `nonzero`) are branched on together: their sum is whole too, and splitting
        # a mass the lines do not see between them would only grow the tree
        same: dict = {}
        for v in range(nv):
            if rel.integer[v]:
                same.setdefault(tuple(rel.rows[i].get(v, Fraction(0)) for i in rows), []).append(v)
        self.groups = list(same.values())

    def lp(self, path):
        """min t subject to every row / scale <= t and every split / scale <= t, over B."""
        rows = [np.append(self.a[r] / self.scale[r], -1.0) for r in range(len(self.rows))]
        rhs = list(self.rhs / self.scale)
        pscale = []
        for pi, k, side in path:
            row = np.zeros(self.nv + 1)
            s = float(max(abs(a) for a in pi.values()))
            sign = 1.0 if side == "le" else -1.0
            for v, a in pi.items():
                row[v] = sign * a / s
            row[-1] = -1.0
            rows.append(row)
            rhs.append((k if side == "le" else -(k + 1)) / s)
            pscale.append(s)
        bounds = list(zip(self.lo, self.hi)) + [(None, None)]
        res = linprog(np.append(np.zeros(self.nv), 1.0), A_ub=np.array(rows), b_ub=np.array(rhs),
                      A_eq=self.eq if len(self.eq_rhs) else None, b_eq=self.eq_rhs if len(self.eq_rhs) else None,
                      bounds=bounds, method="highs", options={"time_limit": TIME_LIMIT_S})
        return res, pscale

    def leaf(self, res, path, pscale, n_lines: int):
        """The LP's duals as an exact leaf, or None when rounding them does not hold."""
        lam = np.maximum(-np.asarray(res.ineqlin.marginals, dtype=float), 0.0)
        k = len(self.rows)
        raw_y = [lam[r] / self.scale[r] for r in range(k)]
        raw_mu = [lam[k + j] / pscale[j] for j in range(len(path))]
        top = max(raw_y + raw_mu + [0.0])
        if not top > 0:
            return None
        for rounded in (True, False):
            def q(x):
                f = Fraction(float(x / top))
                return f.limit_denominator(10 ** 9) if rounded else f
            y = [Fraction(0)] * n_lines
            for r, i in enumerate(self.rows):
                y[i] = q(raw_y[r])
            mu = [q(x) for x in raw_mu]
            const, coef = self.rel.combine(y, path, mu)
            if self.rel.minimum(const, coef) > 0:
                return {"y": [str(v) for v in y], "mu": [str(v) for v in mu]}
        return None

    def split(self, x, path):
        """A split the LP point x violates: a line's integer row (once per path: repeated, it
        would only shave one unit off the line each time), else a fractional variable."""
        best, gap = None, FRACTIONAL
        used = [p for p, _, _ in path]
        for pi in self.forms:
            if pi in used:
                continue
            val = sum(a * x[v] for v, a in pi.items())
            frac = min(val - math.floor(val), math.ceil(val) - val)
            if frac > gap:
                best, gap = (pi, math.floor(val)), frac
        if best is not None:
            return best
        best, gap = None, FRACTIONAL
        for group in self.groups:
            val = float(sum(x[v] for v in group))
            frac = min(val - math.floor(val), math.ceil(val) - val)
            if frac > gap:
                best, gap = ({v: 1 for v in group}, math.floor(val)), frac
        if best is not None:
            return best
        for v in range(self.nv):
            if self.rel.integer[v]:
                frac = min(x[v] - math.floor(x[v]), math.ceil(x[v]) - x[v])
                if frac > gap:
                    best, gap = ({v: 1}, math.floor(x[v])), frac
        return best

    def node(self, path, n_lines: int):
        """A tree for the node `path`, ("witness", x) for a whole LP point, or None."""
        self.nodes += 1
        if self.nodes > MAX_NODES:
            return None
        res, pscale = self.lp(path)
        if res.status != 0:
            return None
        if res.fun > 0:
            leaf = self.leaf(res, path, pscale, n_lines)
            if leaf is not None:
                return leaf
        x = res.x[:self.nv]
        chosen = self.split(x, path)
        if chosen is None:
            return ("witness", x)
        pi, k = chosen
        le = self.node(path + [(pi, k, "le")], n_lines)
        if not isinstance(le, dict):
            return le
        ge = self.node(path + [(pi, k, "ge")], n_lines)
        if not isinstance(ge, dict):
            return ge
        names = self.rel.names
        return {"split": {"pi": {names[v]: a for v, a in sorted(pi.items())}, "at": k}, "le": le, "ge": ge}


def prove(sep: Separable, rows: list[int]):
    """("tree", tree) | ("witness", {symbol: value}) | None; see the module docstring."""
    rel = Relaxation(sep)
    search = _Search(rel, rows)
    got = search.node([], len(sep.lines))
    if isinstance(got, dict):
        # the same check as `check(sep, got)`, on the rows already derived from sep
        return ("tree", got) if _check_node(rel, got, [], len(sep.lines)) else None
    if isinstance(got, tuple):
        setting = _decode(rel, got[1])
        return None if setting is None else ("witness", setting)
    return None


def _decode(rel: Relaxation, x) -> dict | None:
    """The setting a whole LP point stands for (the caller re-checks it exactly)."""
    sep = rel.sep
    setting: dict = {}
    for ci, cls in enumerate(sep.classes):
        if cls.mode == "table":
            members = iter(cls.members)
            for p in range(cls.points):
                count = int(round(x[rel.index[f"t{ci}.{p}"]]))
                point = cls.point(p) if count else ()
                for _ in range(count):
                    comp = next(members, None)
                    if comp is None:
                        return None
                    setting.update(zip(comp.symbols, point))
            if next(members, None) is not None:
                return None
            continue
        for mi, comp in enumerate(cls.members):
            for j, (s, kv) in enumerate(zip(comp.symbols, cls.kvs)):
                val = x[rel.index[f"a{ci}.{mi}.{j}"]]
                if kv.kind == "stepped":
                    setting[s] = kv.values[min(max(int(round(val)), 0), len(kv.values) - 1)]
                else:
                    v = min(max(Fraction(float(val)), kv.lo), kv.hi)
                    if not kv.contains(v):
                        return None
                    setting[s] = v
    return setting


def certify(sep: Separable, lines: list, rows: list[int]):
    """(certificate JSON, None), (None, a setting meeting every line exactly), or (None, None)."""
    try:
        got = prove(sep, rows)
    except (ValueError, ZeroDivisionError, OverflowError, MemoryError):
        return None, None
    if got is None:
        return None, None
    kind, what = got
    if kind == "witness":
        values = exact_line_values(sep, what)
        ok = all((v <= 0 if ln.op == "<=" else v < 0) for ln, v in zip(sep.lines, values))
        return None, (what if ok else None)
    return to_json(lines, [lines[i].text for i in rows], what), None


def size(tree: dict) -> tuple[int, int]:
    """(nodes, leaves) of a tree."""
    if "split" not in tree:
        return 1, 1
    a, b = size(tree["le"]), size(tree["ge"])
    return a[0] + b[0] + 1, a[1] + b[1]


def to_json(lines: list, core: list[str], tree: dict) -> dict:
    nodes, leaves = size(tree)
    shown = "; ".join(f"`{t}`" for t in core)
    summary = (f"certificate (checked in exact arithmetic): {shown} cannot hold together at whole settings, though "
               f"a fractional mix of layer choices would meet them; a branch-and-bound tree of {nodes} node(s) "
               f"splits every whole setting into {leaves} region(s), on each of which a weighted sum of the lines "
               f"and the region's splits is positive (`--format json` gives the tree)")
    return {"kind": "branch-and-bound-tree", "checked": True, "lines": [ln.text for ln in lines],
            "core": list(core), "nodes": nodes, "leaves": leaves, "tree": tree, "summary": summary,
            "note": "variables: t<class>.<point> counts the layers of a shape taking a grid point, "
                    "a<class>.<member>.<knob> is an affine knob (a stepped knob's lattice index); each split "
                    "sends every whole point to `le` (pi.x <= at) or `ge` (pi.x >= at + 1); at each leaf, "
                    "sum y x (left - right) over the lines plus sum mu x (the path's splits as <= 0) is > 0 "
                    "everywhere in the relaxed region; checked in exact rational arithmetic"}


__all__ = ["MAX_NODES", "Relaxation", "certify", "check", "prove", "size", "to_json"]
