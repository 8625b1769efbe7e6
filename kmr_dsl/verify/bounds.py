"""Sound cheap bounds on budget lines, computed before any solver is asked.

Why: measured here (FACTS.md), Z3 on the case-split encoding needs 12 s to prove a
400-layer budget infeasible and 184 s at 1000 layers. Budget lines are sums of
per-layer terms, and terms that share no knob are independent, so

    min g = const + sum over groups of min(group)

where the groups are the connected components of "these terms share a knob". Each
group's minimum is taken over the product of its own knobs' domains (a handful of
knobs, usually one sparsity and one bits per layer): every point of a finite grid is
evaluated (exact: the minimum is attained, and its minimiser is a witness candidate),
a real interval is cut into PIECES sub-intervals evaluated with interval arithmetic,
and a grid larger than CAP has its largest domains replaced by their hull. Each of
these is a lower bound, so `lb > 0` proves the line infeasible; the same walk gives an
upper bound for vacuity (`ub < 0`: every setting meets the line). Real knobs also get
a grid of points whose best value is a witness candidate.

Groups of the same shape (one per layer, differing only in constants) are evaluated
together as one numpy batch: 1000 layers cost one walk of one expression. Inside one
group of many terms (knobs shared by every layer: one group over all layers), each
distinct term is evaluated once and the terms of one shape as one batch
(intervals.ieval_sum), with the same floats as walking the whole sum.

`relax` drops bounds for unsat cores: {knob declaration name: {"lo", "hi"}} extends
that knob's domain to -inf/+inf on that side (a tail interval; lattice points or
geometric steps beyond the bound as point candidates).

Floating point: values are float64. A verdict is only drawn from a *widened* bound
(intervals.py: float ties may go either way) whose margin exceeds MARGIN times the
magnitude of the terms (rounding is ~1e-13 of it); the precise, unwidened bound is
used to find minimisers and to guide core minimisation, and every minimiser is
re-checked (widened, else exactly with rationals) before anyone calls it a witness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from kmr_dsl.verify.decomposition import Decomposition, Group
from kmr_dsl.verify.intervals import ieval, ieval_sum
from kmr_dsl.verify.knobs import KnobTable, KnobVar

PIECES = 8          # sub-intervals of a real knob's interval
CAP = 4096          # grid points per group before domains are coarsened to their hull
MARGIN = 1e-7       # relative margin a float bound must clear before it decides anything
TAIL_STEPS = 10     # witness points beyond a relaxed bound: 1, 2, 4, ... 512 steps out


# ---------------------------------------------------------------- cells and points

_DOMAINS: dict = {}


def _domain(kv: KnobVar, sides: set, points: bool):
    """Cells (or points) of a knob, shared by every instance of a family (same object)."""
    key = (id(kv.knob), kv.kind, tuple(sorted(sides)), points)
    hit = _DOMAINS.get(key)
    if hit is not None and hit[0] is kv.knob:
        return hit[1]
    value = _points(kv, sides) if points else _cells(kv, sides)
    if len(_DOMAINS) > 4096:
        _DOMAINS.clear()
    _DOMAINS[key] = (kv.knob, value)
    return value


def _cells(kv: KnobVar, sides: set) -> tuple[list[tuple[float, float]], list | None]:
    """Boxes covering the (possibly relaxed) domain; the exact values when all are points."""
    if kv.finite and len(kv.values) > CAP:
        # a huge lattice (`int in [1 B, 1 GB]`): its hull in PIECES cells, never its points
        lo, hi = float(kv.values[0]), float(kv.values[-1])
        width = (hi - lo) / PIECES
        cells = [(lo + i * width, lo + (i + 1) * width) for i in range(PIECES)]
    elif kv.finite and not sides:
        vals = [Fraction(int(v)) if isinstance(v, bool) else Fraction(v) for v in kv.values]
        return [(float(v), float(v)) for v in vals], list(kv.values)
    elif kv.finite:
        lo, hi = float(kv.values[0]), float(kv.values[-1])
        cells = [(float(v), float(v)) for v in kv.values]
    else:
        lo, hi = float(kv.lo), float(kv.hi)
        width = (hi - lo) / PIECES
        cells = [(lo + i * width, lo + (i + 1) * width) for i in range(PIECES)]
    if "lo" in sides:
        cells.insert(0, (-np.inf, lo))
    if "hi" in sides:
        cells.append((hi, np.inf))
    return cells, None


def _points(kv: KnobVar, sides: set) -> list:
    """Exact candidate values: the domain's points (reals: ends and a grid), tails when relaxed."""
    if kv.finite and len(kv.values) > CAP:
        n = len(kv.values) - 1
        pts = list(dict.fromkeys(kv.values[n * i // PIECES] for i in range(PIECES + 1)))
    elif kv.finite:
        pts = list(kv.values)
    else:
        lo, hi = kv.lo, kv.hi
        inner = [lo + (hi - lo) * Fraction(i, PIECES) for i in range(1, PIECES)]
        first = lo if kv.lo_closed else lo + (hi - lo) / 1024
        last = hi if kv.hi_closed else hi - (hi - lo) / 1024
        pts = [first, *inner, last]
    if sides and kv.numeric:
        step = kv.step if kv.kind == "stepped" else max(kv.hi - kv.lo, Fraction(1)) / PIECES
        if kv.kind == "set":
            step = max(kv.values[-1] - kv.values[0], Fraction(1)) / PIECES
        lo, hi = Fraction(pts[0]), Fraction(pts[-1])
        if "hi" in sides:
            pts += [hi + step * 2 ** j for j in range(TAIL_STEPS)]
        if "lo" in sides:
            pts = [lo - step * 2 ** j for j in reversed(range(TAIL_STEPS))] + pts
    return pts


@dataclass
class GroupResult:
    lb: float
    ub: float
    exact: bool                       # lb/ub are attained at grid points
    argmin: tuple | None = None       # exact values per symbol of the best point found
    argmax: tuple | None = None
    best: float = np.inf              # the value at argmin (float)


def _tail(kv: KnobVar, side: str, points: bool):
    """Only the part of a relaxed domain beyond `side` (cells, or lattice/geometric points)."""
    key = (id(kv.knob), kv.kind, "tail", side, points)
    hit = _DOMAINS.get(key)
    if hit is not None and hit[0] is kv.knob:
        return hit[1]
    if points:
        full, inner = _points(kv, {side}), _points(kv, set())
        value = full[:len(full) - len(inner)] if side == "lo" else full[len(inner):]
    else:
        lo = float(kv.values[0] if kv.finite else kv.lo)
        hi = float(kv.values[-1] if kv.finite else kv.hi)
        value = ([(-np.inf, lo)] if side == "lo" else [(hi, np.inf)], None)
    _DOMAINS[key] = (kv.knob, value)
    return value


def _evaluate(groups: list[Group], knobs: KnobTable, relax: dict, points: bool,
              fixed: dict | None = None, tail: tuple[str, str] | None = None,
              widen: bool = False) -> list[GroupResult]:
    """Bounds (or best points) of every group, batching groups of the same shape.

    fixed: one setting (symbol -> exact value) instead of the domains; tail: (family,
    side) — that family's instances range only over the part beyond that bound.
    """
    batches: dict = {}
    by_symbol = knobs.by_symbol
    # a family's instances share one domain: look it up once per declaration
    decl_doms: dict = {}
    by_decls: dict = {}
    for gi, g in enumerate(groups):
        shape, consts = g.shape()
        if fixed is not None:
            # one setting: classes by the values' identities (`fixed` keeps them alive; a
            # setting repeats a domain's own value objects), the domains made once per
            # class. Why: hashing and converting Fractions per group: ~2x slower
            vals = [fixed[s] for s in g.symbols]
            batch = batches.setdefault((id(shape), (1,) * len(vals)), {})
            key = (tuple(consts), tuple(map(id, vals)))
            cls = batch.get(key)
            if cls is None:
                cls = batch[key] = (gi, consts, [[v] if points else ([(float(v), float(v))], [v]) for v in vals], [])
            cls[3].append(gi)
            continue
        # the domains are the declarations': groups over the same declarations share them
        # (and their counts and key), found once per call (Why: a symbol's KnobVar is a
        # Python-hashed look-up per symbol; bound_line ~3x faster at 3,000 layers)
        hit = None if g.decls is None else by_decls.get(g.decls)
        if hit is None:
            doms = []
            for s in g.symbols:
                kv = by_symbol[s]
                dk = (id(kv.knob), kv.kind)
                dom = decl_doms.get(dk)
                if dom is None:
                    if tail is not None and kv.knob.name == tail[0]:
                        dom = _tail(kv, tail[1], points)
                    else:
                        dom = _domain(kv, relax.get(kv.knob.name, set()), points)
                    decl_doms[dk] = dom
                doms.append(dom)
            counts = tuple(len(d) if points else len(d[0]) for d in doms)
            # groups with equal constants over the same domains have equal results: the
            # batch evaluates each such class once (a chain of 3000 layers of 4 shapes: a
            # few rows instead of 3000). Domains are compared by identity (a family's
            # instances share one object, alive for this call).
            hit = (doms, counts, tuple(map(id, doms)))
            if g.decls is not None:
                by_decls[g.decls] = hit
        doms, counts, dkey = hit
        batch = batches.setdefault((id(shape), counts), {})
        cls = batch.get((tuple(consts), dkey))
        if cls is None:
            cls = batch[(tuple(consts), dkey)] = (gi, consts, doms, [])
        cls[3].append(gi)
    out: list[GroupResult | None] = [None] * len(groups)
    for (_, counts), classes in batches.items():
        members = list(classes.values())
        for m, res in zip(members, _run_batch(groups, [c[:3] for c in members], counts, points, widen)):
            out[m[0]] = res[1]
            for gi in m[3][1:]:
                out[gi] = res[1]          # never changed after it is made: shared
    return out


def _run_batch(groups, members, counts, points: bool, widen: bool):
    k = len(counts)
    counts = list(counts)
    hull = [False] * k
    total = math.prod(counts)       # exact: np.prod wraps around past 2^63 (25 knobs of 11 values)
    while total > CAP:
        # coarsen the largest domain to one cell (its hull) or, for points, to its ends,
        # and with many knobs (2^25 ends) to its first point: points are only candidates
        j = max((i for i in range(k) if counts[i] > (2 if points else 1)), key=lambda i: counts[i], default=None)
        keep = 2 if points else 1
        if j is None and points:
            j = next((i for i in range(k) if counts[i] > 1), None)
            keep = 1
        if j is None:
            break
        hull[j] = keep if points else True
        total //= counts[j]
        counts[j] = keep
        total *= counts[j]
    idx = np.indices(counts).reshape(k, -1) if k else np.zeros((0, 1), dtype=int)
    n = len(members)
    env, rep = {}, groups[members[0][0]]
    for j, s in enumerate(rep.symbols):
        first = members[0][2][j]
        shared = all(m[2][j] is first for m in members)     # one family: the same domain object
        rows = [first] if shared else [m[2][j] for m in members]
        lo = np.empty((len(rows), counts[j]))
        hi = np.empty((len(rows), counts[j]))
        for r, dom in enumerate(rows):
            if points:
                vals = dom if not hull[j] else [dom[0], dom[-1]][:hull[j]]
                lo[r] = hi[r] = [float(v) for v in vals]
            else:
                cells = dom[0]
                if hull[j]:
                    cells = [(min(c[0] for c in cells), max(c[1] for c in cells))]
                lo[r] = [c[0] for c in cells]
                hi[r] = [c[1] for c in cells]
        env[s] = (lo[:, idx[j]], hi[:, idx[j]])
    const_cols = np.array([c for _, c, _ in members], dtype=float).reshape(n, -1)
    if rep.parts:
        # a sum of terms (one per layer and part): equal terms evaluated once, the same floats
        lo, hi = ieval_sum(rep.expr.args, rep.parts, env, const_cols, widen)
    else:
        cols = iter([const_cols[:, [i]] for i in range(const_cols.shape[1])])
        lo, hi = ieval(rep.expr, env, cols, widen)
    size = idx.shape[1]
    lo = np.broadcast_to(np.asarray(lo, dtype=float), (n, size))
    hi = np.broadcast_to(np.asarray(hi, dtype=float), (n, size))
    amin, amax = lo.argmin(axis=1), hi.argmax(axis=1)
    rows = np.arange(n)
    lbs, ubs = lo[rows, amin].tolist(), hi[rows, amax].tolist()
    exact = points or (not any(hull) and all(members[0][2][j][1] is not None for j in range(k)))
    for m, (gi, _, doms) in enumerate(members):
        res = GroupResult(lbs[m], ubs[m], exact, best=lbs[m])
        if exact:
            def pick(col, doms=doms):
                out = []
                for j in range(k):
                    vals = doms[j] if points else doms[j][1]
                    if points and hull[j]:
                        vals = [vals[0], vals[-1]][:hull[j]]
                    out.append(vals[idx[j][col]])
                return tuple(out)
            res.argmin, res.argmax = pick(amin[m]), pick(amax[m])
        yield gi, res


# ---------------------------------------------------------------- lines

@dataclass
class LineBound:
    lb: float                     # no setting makes g smaller (up to MARGIN)
    ub: float                     # no setting makes g larger
    scale: float                  # magnitude of the terms, for MARGIN
    argmin: dict = field(default_factory=dict)    # symbol -> exact value: the best point found
    argmax: dict = field(default_factory=dict)
    exact: bool = False           # lb/ub attained (all groups finite and small)
    groups: list = field(default_factory=list, repr=False)   # per-group results

    def surely_positive(self) -> bool:
        return self.lb > MARGIN * max(self.scale, 1.0)

    def surely_negative(self) -> bool:
        return self.ub < -MARGIN * max(self.scale, 1.0)


def _combine(decomp: Decomposition, res: list[GroupResult]) -> LineBound:
    const = float(decomp.const)
    lb = const + sum(r.lb for r in res)
    ub = const + sum(r.ub for r in res)
    # math.isfinite: the bounds are Python floats, and numpy's per-scalar call cost ~10x more
    scale = abs(const) + sum(max(abs(r.lb), abs(r.ub)) for r in res if math.isfinite(r.lb) and math.isfinite(r.ub))
    argmin = {s: v for g, r in zip(decomp.groups, res) if r.argmin is not None for s, v in zip(g.symbols, r.argmin)}
    argmax = {s: v for g, r in zip(decomp.groups, res) if r.argmin is not None for s, v in zip(g.symbols, r.argmax)}
    return LineBound(lb, ub, scale, argmin, argmax, exact=all(r.exact for r in res), groups=res)


def sound_bound(decomp: Decomposition, knobs: KnobTable, precise: LineBound, relax: dict | None = None) -> LineBound:
    """A bound it is safe to conclude from: the precise one when its comparisons are exact."""
    return precise if decomp.exact_compare else bound_line(decomp, knobs, relax, widen=True)


def bound_line(decomp: Decomposition, knobs: KnobTable, relax: dict | None = None,
               widen: bool = False) -> LineBound:
    """Lower and upper bounds of the expression over the (relaxed) domains, and its best points.

    widen=False is precise (float ties are ties: right minimisers); only widen=True
    bounds are sound enough to conclude infeasibility or vacuity from (intervals.py).
    """
    relax = relax or {}
    res = _evaluate(decomp.groups, knobs, relax, points=False, widen=widen)
    need_points = [i for i, r in enumerate(res) if not r.exact]
    if need_points:
        pres = _evaluate([decomp.groups[i] for i in need_points], knobs, relax, points=True)
        for i, p in zip(need_points, pres):
            res[i] = GroupResult(res[i].lb, res[i].ub, False, p.argmin, p.argmax, p.best)
    return _combine(decomp, res)


def relax_line(decomp: Decomposition, knobs: KnobTable, base: LineBound, relax: dict, family: str,
               side: str) -> LineBound:
    """`base` (the bound under `relax`) with `family`'s `side` dropped too.

    Only the new tail is evaluated — the relaxed domain is the old one plus the tail —
    and only for groups that contain the family.
    """
    decl = id(knobs.families[family][0].knob)

    def reads(g) -> bool:
        if g.decls is not None:
            return decl in g.decls
        return any(knobs.by_symbol[s].knob.name == family for s in g.symbols)

    idx = [i for i, g in enumerate(decomp.groups) if reads(g)]
    sub = [decomp.groups[i] for i in idx]
    cells = _evaluate(sub, knobs, relax, points=False, tail=(family, side))
    pts = _evaluate(sub, knobs, relax, points=True, tail=(family, side))
    res = list(base.groups)
    made: dict = {}       # results are shared by a class's groups: each combination made once
    for i, c, p in zip(idx, cells, pts):
        old = res[i]
        key = (id(old), id(c), id(p))
        new = made.get(key)
        if new is None:
            better = p.best < old.best or old.argmin is None
            new = made[key] = GroupResult(min(old.lb, c.lb), max(old.ub, c.ub), False,
                                          p.argmin if better else old.argmin,
                                          old.argmax if old.argmax is not None else p.argmax,
                                          min(old.best, p.best))
        res[i] = new
    return _combine(decomp, res)


def point_range(decomp: Decomposition, knobs: KnobTable, env: dict) -> tuple[float, float, float]:
    """(lo, hi, scale) enclosing the expression's value at one setting (env: symbol -> exact value)."""
    res = _evaluate(decomp.groups, knobs, {}, points=False, fixed=env, widen=not decomp.exact_compare)
    const = float(decomp.const)
    scale = abs(const) + sum(max(abs(r.lb), abs(r.ub)) for r in res)
    return const + sum(r.lb for r in res), const + sum(r.ub for r in res), scale


__all__ = ["CAP", "LineBound", "MARGIN", "PIECES", "bound_line", "point_range", "relax_line", "sound_bound"]
