"""Whole counts over a continuous knob, as a finite choice among its breakpoints.

Contract: `step_ops(knobs)` is the arithmetic (`kmr_dsl.core.step.Ops`) a step's
counts are settled in. It is `algebra.SYMBOLS` except for floor and ceiling: on an
argument that involves no continuous knob they are SYMBOLS' own (a constant folds; over
finite knobs the solver splits the knob, so every floor folds there too); on an
argument `c * r + d` affine in one continuous knob `r` (`c`, `d` constants) they are a
Piecewise over `r` with one piece per whole value the argument takes on `r`'s domain:
floor(c * r + d) = k exactly where k <= c * r + d < k + 1, one comparison of `r`
with a rational per piece. Anything else (two knobs, a product of knobs, more than
MAX_PIECES values) raises `NotModelled`, and the caller makes a kept-weight count a
range of one weight around the unrounded product (verify/settling.py `settle`).

Why not an integer floor: Z3's `to_int` of a real-valued knob expression mixes integer
and real arithmetic, and its answers varied between queries of the same obligation; the
breakpoints keep the problem in linear real arithmetic, where a prediction at any value
of `r` is the runtime's whole count (lowrank keeps ceil(ratio * rank)).
"""

from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction

import sympy as sp

from kmr_dsl.verify import algebra as A
from kmr_dsl.verify.substitution import substitute

# pieces per rounded count: the whole values of one count over one knob's range (a rank,
# a channel count, the kept weights of a small layer); a larger range stays unrounded
MAX_PIECES = 512


def step_ops(knobs):
    """SYMBOLS, with floor and ceiling lowered to breakpoints over continuous knobs."""
    return replace(A.SYMBOLS, floor=lambda x: _round(knobs, x, True), ceil=lambda x: _round(knobs, x, False))


def _round(knobs, x, down: bool, within: dict | None = None):
    """floor / ceiling of `x`; `within` maps a knob symbol to the (lo, hi) its value is
    known to lie in here (a branch of a choice), narrower than its domain."""
    x = A.num(x)
    symbols = A.knob_symbols(x) if isinstance(x, sp.Basic) else set()
    varying = [knobs.by_symbol.get(s) for s in symbols]
    if not any(v is not None and not v.finite for v in varying):
        return A.floor_(x) if down else A.ceil_(x)
    within = within or {}
    choice = _first_choice(x)
    if choice is not None:
        # a count that is a choice (a rank over breakpoints, factorized or not): round it
        # in each branch, under the branch's own condition (P is e_i where c_i is the first
        # condition that holds, so replacing P by e_i there is exact). A branch whose
        # conditions bound a knob is rounded on that part of its range only: a count
        # compounded over a knob (prune twice by `a`) takes a few values per branch
        pairs, known = [], dict(within)
        for value, cond in choice.args:
            here, known = _narrow(knobs, cond, known)
            pairs.append((_round(knobs, substitute(x, {choice: value}), down, here), cond))
        out = None
        for value, cond in reversed(pairs):
            out = value if out is None else A.ite(cond, value, out)
        if _size(out) > MAX_PIECES:
            raise A.NotModelled("a rounded count with too many branches")
        return out
    if len(varying) != 1 or varying[0].lo is None or varying[0].hi is None:
        raise A.NotModelled("a rounded count over several knobs or an unbounded knob")
    var = varying[0]
    c, d = _affine(x, var.symbol)
    lo, hi = within.get(var.symbol, (A.frac(var.lo), A.frac(var.hi)))
    return _pieces(var, c, d, down, lo, hi)


def _narrow(knobs, cond, known: dict) -> tuple[dict, dict]:
    """(the knob ranges where `cond` holds, the ranges where it does not), given `known`,
    for a condition that compares one continuous knob with a number (closed ends: a
    superset, where the rounding is exact all the same); any other condition narrows nothing."""
    if not isinstance(cond, sp.core.relational.Relational):
        return dict(known), dict(known)
    r, bound = cond.lhs, cond.rhs
    flip = False
    if not isinstance(bound, sp.Rational):
        r, bound, flip = bound, r, True
    var = knobs.by_symbol.get(r)
    if var is None or var.finite or var.lo is None or var.hi is None or not isinstance(bound, sp.Rational):
        return dict(known), dict(known)
    lo, hi = known.get(r, (A.frac(var.lo), A.frac(var.hi)))
    e = A.frac(bound)
    below = isinstance(cond, (sp.LessThan, sp.StrictLessThan)) != flip     # r <= e (or r < e)
    if not isinstance(cond, (sp.LessThan, sp.StrictLessThan, sp.GreaterThan, sp.StrictGreaterThan)):
        return dict(known), dict(known)
    holds = (lo, min(hi, e)) if below else (max(lo, e), hi)
    fails = (max(lo, e), hi) if below else (lo, min(hi, e))
    return {**known, r: holds}, {**known, r: fails}


def _first_choice(x):
    """The first Piecewise in a numeric expression, not looking inside conditions."""
    stack = [x]
    while stack:
        e = stack.pop()
        if type(e) is sp.Piecewise:
            return e
        if isinstance(e, sp.Basic) and not A.is_boolean(e):
            stack.extend(reversed(e.args))
    return None


def _size(e) -> int:
    """Leaves of a chain of choices (pieces the solver meets)."""
    return sum(_size(v) for v, _ in e.args) if type(e) is sp.Piecewise else 1


def _affine(x, r) -> tuple[Fraction, Fraction]:
    """(c, d) with x == c * r + d, or NotModelled."""
    try:
        poly = sp.Poly(sp.expand(x), r)
    except sp.PolynomialError as exc:
        raise A.NotModelled(f"a rounded count not affine in its knob: {exc}") from None
    if poly.degree() > 1:
        raise A.NotModelled("a rounded count not affine in its knob")
    coeffs = poly.all_coeffs()
    c, d = (coeffs if len(coeffs) == 2 else [0, coeffs[0]])
    if not (A.is_number(A.num(c)) and A.is_number(A.num(d))):
        raise A.NotModelled("a rounded count with a symbolic coefficient")
    return A.frac(c), A.frac(d)


def _pieces(var, c: Fraction, d: Fraction, down: bool, lo: Fraction, hi: Fraction):
    """floor / ceiling of c * r + d over r in [lo, hi] (the knob's domain, or a branch's
    part of it), as a Piecewise in r."""
    r = var.symbol
    if c == 0:
        return A.num(math.floor(d) if down else math.ceil(d))
    if lo > hi:             # a branch no value of r reaches: any value serves
        lo = hi
    ends = (c * lo + d, c * hi + d)
    f = math.floor if down else math.ceil
    low, high = f(min(ends)), f(max(ends))
    if high - low + 1 > MAX_PIECES:
        raise A.NotModelled(f"a rounded count with {high - low + 1} values over knob `{var.name}`")
    if low == high:
        return A.num(low)
    # walk r upwards: the count rises with r when c > 0, falls when c < 0. Each piece is
    # "the count is k" for the r below the next breakpoint; the last piece is the rest.
    # floor(x) >= k iff x >= k; ceil(x) >= k iff x > k - 1.
    order = list(range(low, high + 1) if c > 0 else range(high, low - 1, -1))
    pairs = []
    for k in order[:-1]:
        if c > 0:
            # floor: k while x < k + 1; ceil: k while x <= k
            edge = (k + 1 - d) / c if down else (k - d) / c
            cond = A.compare("<" if down else "<=", r, A.num(edge))
        else:
            # floor: k while x >= k, i.e. r <= (k - d) / c; ceil: k while x > k - 1
            edge = (k - d) / c if down else (k - 1 - d) / c
            cond = A.compare("<=" if down else "<", r, A.num(edge))
        pairs.append((A.num(k), cond))
    out = A.num(order[-1])
    for value, cond in reversed(pairs):
        out = A.ite(cond, value, out)
    return out


__all__ = ["MAX_PIECES", "step_ops"]
