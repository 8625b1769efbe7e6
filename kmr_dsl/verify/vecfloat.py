"""A term of one variable in floats over many points at once (numpy), for the decoupled
certificate's proposals (multipliers.py).

Contract: `vector(e, a)` returns `(f, constant)`: `f(xs)` gives `e` at every point of the
float array `xs` (the values of the one symbol `a`; a number or truth value when
`constant`), or raises Unevaluable for a node it does not know (the caller falls back to
numeric.compile_expr's float closures, one point at a time).

Why: multipliers.py samples each count's range at up to 129 points per box and line;
through per-point closures that was most of a box's time (the box split asks tens of
boxes).
Nothing exact rests on these values: they only steer the multipliers, which the
certificate then proves in rational arithmetic. floor and ceiling repeat the float
closures' nudge for float arguments (numeric.py), so a count that is exactly whole
rounds as it does exactly.
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from sympy.core.relational import Relational

from kmr_dsl.verify.numeric import Unevaluable

_REL = {"<=": np.less_equal, "<": np.less, ">=": np.greater_equal, ">": np.greater, "==": np.equal,
        "!=": np.not_equal}


def vector(e, a):
    """(f, constant?): a term of one atom `a` as a numpy function of the atom's sample points
    (floats: it guides the proposal only, like numeric.compile_expr's float mode, whose
    whole-count nudge it repeats), sub-terms without the atom folded to a number once."""
    if e == a:
        return (lambda xs: xs), False
    if isinstance(e, sp.Rational):
        v = float(e)
        return (lambda xs: v), True
    if e is sp.true or e is sp.false:
        b = e is sp.true
        return (lambda xs: b), True
    t = type(e)
    parts = [vector(x, a) for x in e.args] if t is not sp.Piecewise else None
    fs = [f for f, _ in parts or ()]
    if t is sp.Add or t is sp.Mul:
        def f(xs, fs=fs, plus=t is sp.Add):
            out = fs[0](xs)
            for g in fs[1:]:
                out = out + g(xs) if plus else out * g(xs)
            return out
    elif t is sp.Pow and e.exp.is_Integer:
        n = float(e.exp)

        def f(xs, g=fs[0]):
            return g(xs) ** n
    elif t is sp.Min or t is sp.Max:
        pick = np.minimum if t is sp.Min else np.maximum

        def f(xs):
            out = fs[0](xs)
            for g in fs[1:]:
                out = pick(out, g(xs))
            return out
    elif t is sp.floor or t is sp.ceiling:
        down = t is sp.floor

        def f(xs, g=fs[0]):
            v = g(xs)
            return np.floor(v + 1e-9 * np.maximum(1.0, np.abs(v))) if down else \
                np.ceil(v - 1e-9 * np.maximum(1.0, np.abs(v)))
    elif t is sp.Piecewise:
        branches = [(vector(v, a), vector(c, a)) for v, c in e.args]
        parts = [p for pair in branches for p in pair]

        def f(xs):
            out, left = np.nan, True
            for (fv, _), (fc, _) in branches:
                c = np.logical_and(fc(xs), left)
                if np.any(c):
                    out = np.where(c, fv(xs), out)
                left = np.logical_and(left, np.logical_not(c))
            if np.any(left):
                raise Unevaluable("no branch of a piecewise expression applies")
            return out
    elif isinstance(e, Relational) and e.rel_op in _REL:
        op = _REL[e.rel_op]

        def f(xs):
            return op(fs[0](xs), fs[1](xs))
    elif t is sp.And or t is sp.Or or t is sp.Not:
        pick = np.logical_and if t is sp.And else np.logical_or

        def f(xs):
            if t is sp.Not:
                return np.logical_not(fs[0](xs))
            out = fs[0](xs)
            for g in fs[1:]:
                out = pick(out, g(xs))
            return out
    else:
        raise Unevaluable(f"no vector form for {t.__name__}")
    if all(c for _, c in parts):
        v = f(None)                   # no atom below: one number (or truth value) for every point
        return (lambda xs: v), True
    return f, False


__all__ = ["vector"]
