"""Witness search by coordinate descent, for budgets no table or affine form covers.

Contract: `search(model, lines, starts)` returns a setting (knob instance name -> exact
value) at which the lines' float values all hold, or None. It proves nothing: the
caller re-checks the setting exactly (rationals) before calling it a witness, and when
nothing is found the next method (Z3) decides as before.

Why: scalar knobs that act on the same layers (25 `prune` amounts applied to every
layer) make one component of 25+ knobs whose grid (11^25 points) no table enumerates
and whose parts are products of the knobs (not affine), so the knapsack cannot take it
and Z3 was left with nonlinear arithmetic over every layer: it did not finish. Such
budgets are met by many settings; finding one only needs a search. From the best of the
given starts (the defaults, each line's minimiser from the bounds), each knob in turn
takes the value of its domain that most reduces the total violation of the lines
(first the number of lines not met, then each line's excess over 0 divided by its
magnitude at the start so that bytes and counts weigh alike, then the total slack), until every line holds or a
whole pass changes nothing.

Cost: at most MAX_PASSES passes of (knobs x sampled values x lines) evaluations of
compiled float closures (numeric.compile_expr), and only when the lines read at most
MAX_KNOBS knobs: a per-layer family on a deep model (thousands of knobs) is the
knapsack's case, never this one's. When the lines have the atoms shape (atoms.py), each
evaluation computes every distinct per-layer count once (equal layers share one) and a
move recomputes only the counts its knob reads, instead of walking every occurrence of
every count in every line (at 100 layers, 6.7 s of CPU down to 0.7 s: docs/benchmarks.md).
"""

from __future__ import annotations

import math

from kmr_dsl.verify import algebra as A
from kmr_dsl.verify.atoms import atomize
from kmr_dsl.verify.numeric import Unevaluable, compile_expr

MAX_KNOBS = 64        # knobs the lines may read for a search to be tried
MAX_VALUES = 33       # values tried per knob and pass (a larger domain is sampled evenly)
MAX_PASSES = 8


def _candidates(kv) -> list:
    """Exact values of one knob to try: its whole domain when small, else an even sample."""
    if kv.finite:
        vals = kv.values
        n = len(vals)
        if n <= MAX_VALUES:
            return list(vals)
        return list(dict.fromkeys(vals[(n - 1) * i // (MAX_VALUES - 1)] for i in range(MAX_VALUES)))
    lo, hi = kv.lo, kv.hi
    pts = [lo + (hi - lo) * i / (MAX_VALUES - 1) for i in range(1, MAX_VALUES - 1)]
    if kv.lo_closed:
        pts.insert(0, lo)
    if kv.hi_closed:
        pts.append(hi)
    return pts


_ATOMIZE = object()


def search(model, lines: list, starts: list[dict], at=_ATOMIZE) -> dict | None:
    """`at`: the lines already atomized (`atomize(exprs, knobs, case_cap=math.inf)`, None
    when they are not of that shape), so a caller that has them pays for them once."""
    if not lines or not all(ln.op in ("<=", "<") and ln.expr is not None for ln in lines):
        return None
    knobs = model.knobs
    syms: set = set()
    if at is not _ATOMIZE and at is not None:
        syms = set(at.cases) | set(at.free)           # every symbol the lines read
    else:
        for ln in lines:
            syms |= A.knob_symbols(ln.expr)
    if len(syms) > MAX_KNOBS or any(s not in knobs.by_symbol for s in syms):
        return None
    order = sorted(syms, key=knobs.sort_key)
    kvs = [knobs.by_symbol[s] for s in order]
    if not all(kv.numeric for kv in kvs):
        return None
    # over atoms (a layer's count after every prune step, read by several lines and
    # several times by each): each is computed once per setting, and a move of one knob
    # recomputes only the atoms that read it
    if at is _ATOMIZE:
        at = atomize([ln.expr for ln in lines], knobs, case_cap=math.inf)
    try:
        if at is None:
            atom_fns = []
            fns = [compile_expr(ln.expr, exact=False) for ln in lines]
        else:
            atom_fns = [(a.symbol, compile_expr(a.expr, exact=False), A.knob_symbols(a.expr)) for a in at.atoms]
            fns = [compile_expr(e, exact=False) for e in at.exprs]
    except (Unevaluable, OverflowError):      # a constant beyond float64: no float search
        return None
    strict = [ln.op == "<" for ln in lines]
    reads = {s: [j for j, (_, _, ks) in enumerate(atom_fns) if s in ks] for s in syms}

    def values(env, moved=None):
        """The lines' float values at env; `moved`: only atoms reading that knob changed
        since the last full evaluation (their values are kept in env)."""
        try:
            for j in (range(len(atom_fns)) if moved is None else reads[moved]):
                sym, f, _ = atom_fns[j]
                env[sym] = float(f(env))
            return [float(f(env)) for f in fns]
        except (Unevaluable, ZeroDivisionError, OverflowError, TypeError, ValueError):
            return None

    envs = []
    for start in starts:
        env = {s: float(v) for s, v in knobs.env(start).items() if s in syms}
        g = values(env)
        if g is not None:
            envs.append((env, g, start))
    if not envs:
        return None
    scale = [max(1.0, max(abs(g[i]) for _, g, _ in envs)) for i in range(len(lines))]

    def cost(g):
        # (lines not met, total violation, minus total slack): lower is better; a strict
        # line is not met at 0
        unmet = sum(1 for gi, st in zip(g, strict) if gi > 0 or (st and gi == 0))
        return (unmet, sum(max(0.0, gi) / s for gi, s in zip(g, scale)), sum(gi / s for gi, s in zip(g, scale)))

    env, g, start = min(envs, key=lambda e: cost(e[1]))
    start_env = knobs.env(start)
    exact = {s: start_env[s] for s in order}
    best = cost(g)
    choices = [_candidates(kv) for kv in kvs]
    for _ in range(MAX_PASSES):
        if best[0] == 0:
            break
        moved = False
        for s, vals in zip(order, choices):
            keep = env[s]
            for v in vals:
                env[s] = float(v)
                trial = values(env, s)
                if trial is None:
                    continue
                c = cost(trial)
                if c < best:
                    best, g, exact[s], keep, moved = c, trial, v, float(v), True
            env[s] = keep
            values(env, s)                    # the atoms back at the kept value
        if not moved:
            break
    if best[0] > 0:
        return None
    setting = dict(knobs.defaults())
    for s in order:
        setting[knobs.by_symbol[s].name] = exact[s]
    return setting


__all__ = ["MAX_KNOBS", "search"]
