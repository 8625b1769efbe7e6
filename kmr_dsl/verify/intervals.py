"""Interval evaluation of the verifier's expressions over boxes of knob values, with numpy.

Contract: `ieval(expr, env, consts)` evaluates `expr` where every knob symbol is a
pair of arrays (lo, hi) — a batch of boxes — and returns (lo, hi) arrays that enclose
every value the expression takes inside each box (conditions return two boolean
arrays: "can be true", "can be false"). Degenerate boxes (lo == hi) give the value
itself. The result is a sound enclosure up to floating-point rounding; callers only
act on margins far larger than the rounding (see bounds.py), and every witness found
this way is re-checked with exact rationals.

Batching: `consts` is an iterator over constant columns; when a batch evaluates many
expressions of the same shape (one per layer), each constant leaf is a column holding
that constant for every member, consumed in pre-order. `shape_of` computes the shape
key and the constants of an expression in that same order; `values_key` (with
`symbols_key`) builds on it the key of a set of values up to renaming of knobs, by which
layers of one shape share a template (verify/template.py). `ieval_sum` evaluates a sum of
terms (a group over knobs every layer shares) with each distinct term evaluated once and
the same floats as `ieval` of the sum.

widen=True (sound): comparisons are widened by a relative 1e-9, so a tie computed in
floats never excludes a branch the exact value would take. widen=False (precise):
a float tie counts as an exact tie (`bits <= 8` at bits = 8 takes one branch); this is
what finds minimisers. Nothing is concluded from a precise evaluation unless
`exact_comparisons` shows its comparisons are exact in float64 (then precise = sound),
or it is re-checked widened or with exact rationals (bounds.py).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import sympy as sp
from sympy.core.relational import (Equality, GreaterThan, LessThan, StrictGreaterThan, StrictLessThan,
                                   Unequality)
from sympy.functions.elementary.piecewise import ExprCondPair
from sympy.logic.boolalg import And, BooleanAtom, BooleanFalse, BooleanTrue, Not, Or

from kmr_dsl.verify.algebra import (BoolSymbol, EnumKnob, EnumValue, NotModelled, Opaque, Unmodelled,
                                    UnmodelledBool)

EPS = 1e-9
# array elements one ieval_sum evaluation makes per node (128 KB of float64): 4 rows of
# 4,096 boxes. Larger arrays leave the cache: 100 distinct layers took 11 s at 2^20,
# 4.7 s here, 8 s one row at a time (docs/benchmarks.md)
CHUNK = 1 << 14
_EXACT = 2 ** 53
INF = np.inf


def shape_of(e, slots: dict, consts: list, compared: list | None = None):
    """A hashable shape of `e`, filling `consts` (pre-order) and `slots` (symbol -> slot,
    assigned in order of first appearance). Two terms with equal shapes differ only in
    their constants and in which knobs fill the slots, so they evaluate as one batch.

    `compared` collects what the comparisons inside compare: each knob symbol compared
    directly with a constant or a knob, or False for a comparison of computed values or
    with a constant that is not a binary fraction (see `exact_comparisons`)."""
    t = type(e)
    if compared is not None and t in _RELATIONS:
        a, b = e.args
        if isinstance(a, (sp.Symbol, sp.Rational)) and isinstance(b, (sp.Symbol, sp.Rational)):
            for x in (a, b):
                if isinstance(x, sp.Symbol):
                    compared.append(x)
                elif x.q & (x.q - 1):
                    compared.append(False)
        else:
            compared.append(False)
    if t is sp.Integer or isinstance(e, sp.Rational):
        p, q = e.p, e.q
        # int / int: correctly rounded, and far cheaper than float(e); a constant float64
        # cannot hold exactly stays a Fraction, so equal constant lists mean equal terms
        if q & (q - 1) == 0 and -_EXACT < p < _EXACT:
            consts.append(p / q)
        else:
            try:
                p / q               # the float bounds need every constant within float64's range
            except OverflowError:
                raise NotModelled(f"the constant {e} is beyond the range of float64") from None
            consts.append(Fraction(p, q))
        return "c"
    if isinstance(e, sp.Symbol):
        if isinstance(e, (Unmodelled, UnmodelledBool)):
            raise NotModelled(f"not modelled: {e.name[1:]}")
        slot = slots.get(e)
        if slot is None:
            slot = slots[e] = len(slots)
        return ("s", slot, isinstance(e, BoolSymbol))
    if t is BooleanTrue or t is BooleanFalse:
        return t is BooleanTrue
    if t is sp.Pow:
        if not isinstance(e.args[1], sp.Integer):
            raise NotModelled(f"non-integer power {e.args[1]}")
        # the exponent is part of the shape, not a hole: ieval reads it off the tree
        return ("Pow", shape_of(e.args[0], slots, consts, compared), int(e.args[1]))
    return (t.__name__, tuple([shape_of(a, slots, consts, compared) for a in e.args]))


_RELATIONS = (LessThan, StrictLessThan, GreaterThan, StrictGreaterThan, Equality, Unequality)


def values_key(values, slots: dict) -> tuple | None:
    """A hashable key of (name, value) pairs up to renaming of knob symbols (the one
    "template key": verify/stepping.py keys a step's inputs by it, verify/cost.py a layer's
    fields): constants as themselves, a symbolic value as its shape and constants
    (`shape_of`), its symbols numbered in order of first appearance in `slots` (shared
    across calls, so several dicts make one key). None when a value has no such key (a
    placeholder the state cannot express, a data argument's reason that may name a
    symbol)."""
    out = []
    try:
        for f, v in values:
            if isinstance(v, sp.Rational):
                out.append((f, v.p, v.q))
            elif isinstance(v, BooleanAtom):
                out.append((f, bool(v)))
            elif isinstance(v, EnumValue):
                out.append((f, v.member))
            elif isinstance(v, Opaque):
                out.append((f, "opaque", v.what))
            elif isinstance(v, EnumKnob):
                out.append((f, "enum", v.members, shape_of(v.symbol, slots, [])))
            elif isinstance(v, sp.Basic):
                consts: list = []
                out.append((f, shape_of(v, slots, consts), tuple(consts)))
            else:
                return None
    except NotModelled:
        return None
    return tuple(out)


class HashedKey(tuple):
    """A template key that hashes once: a step's inputs or a layer's fields are looked up
    under it many times (every clause, effect, settled count and meter of the layer), and
    a nested tuple's hash is recomputed on every lookup (Fractions' in Python code).
    Equality stays the tuple's; keys interned per model (`intern_key`) compare by identity."""

    def __new__(cls, items):
        self = super().__new__(cls, items)
        self._hash = tuple.__hash__(self)
        return self

    def __hash__(self):
        return self._hash


def intern_key(table: dict, what: str, key: tuple) -> HashedKey:
    """`key` as the one HashedKey `table` holds for it (equal keys: one object)."""
    key = HashedKey(key)
    return table.setdefault((what, key), key)


def symbols_key(slots: dict, knobs) -> tuple:
    """Each slot's symbol class and knob declaration (`knobs`: the KnobTable, or None):
    values whose keys match read knobs of the same declarations (the same domains)."""
    by_symbol = knobs.by_symbol if knobs is not None else {}
    return tuple((type(s), id(by_symbol[s].knob) if s in by_symbol else None) for s in slots)


def exact_comparisons(compared, knobs) -> bool:
    """Whether every comparison in a term is exact in float64 without widening.

    True when each compares two leaves — knob values or constants — that are all binary
    fractions (p / 2^k): float64 holds those exactly (for the sizes knob domains and
    layer shapes have), so the float comparison is the exact one. Computed operands or
    decimal values like 0.05 need the widened (sound) evaluation instead.
    """
    for x in compared:
        if x is False:
            return False
        kv = knobs.by_symbol.get(x)
        if kv is None or not kv.finite:
            return False
        # a family's instances share one domain: decide it once per declaration
        hit = _BINARY.get(id(kv.knob))
        if hit is None or hit[0] is not kv.knob:
            hit = _BINARY[id(kv.knob)] = (kv.knob, _all_binary(kv.values))
        if not hit[1]:
            return False
    return True


_BINARY: dict = {}


def _all_binary(values) -> bool:
    """Every value a binary fraction; a lattice first + i*step is when its ends and step are
    and it stays below 2^53 (float64 is exact there)."""
    if hasattr(values, "step") and len(values) > 64:
        return (_binary(values[0]) and _binary(values.step) and abs(values[0]) < 2 ** 52
                and abs(values[-1]) < 2 ** 52)
    return all(_binary(v) for v in values)


def _binary(v) -> bool:
    if isinstance(v, bool):
        return True
    q = v.denominator if hasattr(v, "denominator") else 1
    return q & (q - 1) == 0 and abs(v) < 2 ** 52


def _mul(a, b):
    alo, ahi = a
    blo, bhi = b
    with np.errstate(invalid="ignore"):
        prods = [alo * blo, alo * bhi, ahi * blo, ahi * bhi]
    # 0 * inf is nan; the exact product of a zero-width zero and an unbounded factor is 0
    prods = [np.where(np.isnan(p), 0.0, p) for p in prods]
    return np.minimum.reduce(prods), np.maximum.reduce(prods)


def _recip(a):
    lo, hi = a
    safe = (lo > 0) | (hi < 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rlo = np.where(safe, 1.0 / hi, -INF)
        rhi = np.where(safe, 1.0 / lo, INF)
    return rlo, rhi


def _tol(a, b, widen):
    if not widen:
        return 0.0
    t = EPS * (np.abs(a[0]) + np.abs(a[1]) + np.abs(b[0]) + np.abs(b[1]) + 1.0)
    return np.where(np.isfinite(t), t, 0.0)


def _le(a, b, strict, widen):
    t = _tol(a, b, widen)
    can_true = a[0] < b[1] + t if strict else a[0] <= b[1] + t
    can_false = a[1] >= b[0] - t if strict else a[1] > b[0] - t
    return can_true, can_false


def _eq(a, b, widen):
    t = _tol(a, b, widen)
    can_true = (a[0] <= b[1] + t) & (b[0] <= a[1] + t)
    point = (a[0] == a[1]) & (b[0] == b[1]) & (np.abs(a[0] - b[0]) <= t)
    return can_true, ~point | ~can_true


def ieval(e, env: dict, consts, widen: bool = True):
    """(lo, hi) of a number or (can_true, can_false) of a condition; see the module docstring."""
    t = type(e)
    if isinstance(e, sp.Rational):
        c = next(consts)
        return c, c
    if isinstance(e, sp.Symbol):
        if isinstance(e, (Unmodelled, UnmodelledBool)):
            raise NotModelled(f"not modelled: {e.name[1:]}")
        lo, hi = env[e]
        if isinstance(e, BoolSymbol):
            return hi >= 0.5, lo <= 0.5
        return lo, hi
    if t is sp.Add:
        vals = [ieval(a, env, consts, widen) for a in e.args]
        return sum(v[0] for v in vals), sum(v[1] for v in vals)
    if t is sp.Mul:
        out = ieval(e.args[0], env, consts, widen)
        for a in e.args[1:]:
            out = _mul(out, ieval(a, env, consts, widen))
        return out
    if t is sp.Pow:
        base = ieval(e.args[0], env, consts, widen)
        n = int(e.args[1])
        out = base
        for _ in range(abs(n) - 1):
            out = _mul(out, base)
        return out if n > 0 else _recip(out)
    if t is sp.Min or t is sp.Max:
        f = np.minimum if t is sp.Min else np.maximum
        vals = [ieval(a, env, consts, widen) for a in e.args]
        lo, hi = vals[0]
        for v in vals[1:]:
            lo, hi = f(lo, v[0]), f(hi, v[1])
        return lo, hi
    if t is sp.Piecewise:
        return _piecewise(e, env, consts, widen)
    if t is sp.floor or t is sp.ceiling:
        return _round(t is sp.floor, ieval(e.args[0], env, consts, widen), widen)
    if t in (LessThan, StrictLessThan):
        a, b = ieval(e.args[0], env, consts, widen), ieval(e.args[1], env, consts, widen)
        return _le(a, b, t is StrictLessThan, widen)
    if t in (GreaterThan, StrictGreaterThan):
        a, b = ieval(e.args[0], env, consts, widen), ieval(e.args[1], env, consts, widen)
        return _le(b, a, t is StrictGreaterThan, widen)
    if t in (Equality, Unequality):
        a, b = ieval(e.args[0], env, consts, widen), ieval(e.args[1], env, consts, widen)
        ct, cf = _eq(a, b, widen)
        return (ct, cf) if t is Equality else (cf, ct)
    if t is And or t is Or:
        vals = [ieval(a, env, consts, widen) for a in e.args]
        if t is And:
            return np.logical_and.reduce([v[0] for v in vals]), np.logical_or.reduce([v[1] for v in vals])
        return np.logical_or.reduce([v[0] for v in vals]), np.logical_and.reduce([v[1] for v in vals])
    if t is Not:
        ct, cf = ieval(e.args[0], env, consts, widen)
        return cf, ct
    if t is BooleanTrue:
        return True, False
    if t is BooleanFalse:
        return False, True
    raise NotModelled(f"no interval rule for {t.__name__}")


def ieval_sum(terms, parts, env: dict, const_cols, widen: bool = True):
    """(lo, hi) of the sum of `terms`: the same floats as `ieval` of their Add, with each
    distinct term evaluated once.

    parts[i] = (shape, slots, count) of terms[i]: its shape (interned: compared by
    identity), the positions of its symbols in its group, and how many constants it reads;
    `const_cols` (batch members x constants) holds every term's constants, term by term.
    Terms of one shape over the same knobs are one evaluation, with a leading axis of one
    row per distinct constant vector: a term equal to an earlier one (a layer of a shape
    seen before, its counts after 25 prunes included) reuses that row. Every operation is
    elementwise, so a row holds exactly the floats the tree walk computes for that term,
    and the rows are added in term order: the result is the walk's, bit for bit.

    Why: 25 scalar prune knobs on every layer make one group whose expression is the sum
    over all layers; walking it evaluated every layer's nested counts again, over
    thousands of boxes, in every bound the verifier asks for (docs/benchmarks.md).
    """
    classes: dict = {}
    where = []
    off = 0
    for i, (shape, slots, count) in enumerate(parts):
        block = const_cols[:, off:off + count]
        off += count
        cls = classes.get((id(shape), slots))
        if cls is None:
            cls = classes[(id(shape), slots)] = [terms[i], {}, []]
        row = cls[1].setdefault(block.tobytes(), len(cls[2]))
        if row == len(cls[2]):
            cls[2].append(block)
        where.append((cls, row))
    assert off == const_cols.shape[1] and len(terms) == len(parts)
    # rows per evaluation: many distinct layers must not make arrays of (layers x boxes)
    boxes = max((np.shape(v[0])[-1] for v in env.values() if np.ndim(v[0])), default=1)
    step = max(1, CHUNK // (const_cols.shape[0] * boxes))
    for cls in classes.values():
        out = []
        for first in range(0, len(cls[2]), step):
            stacked = np.stack(cls[2][first:first + step])      # distinct terms x members x constants
            cols = iter([stacked[:, :, [c]] for c in range(stacked.shape[2])])
            out.append(ieval(cls[0], env, cols, widen))
        cls.append(out)
    lo = hi = 0
    for cls, row in where:
        tlo, thi = cls[3][row // step]
        row %= step
        lo = lo + (tlo[row if tlo.shape[0] > 1 else 0] if np.ndim(tlo) == 3 else tlo)
        hi = hi + (thi[row if thi.shape[0] > 1 else 0] if np.ndim(thi) == 3 else thi)
    return lo, hi


def _round(down: bool, v, widen: bool):
    """floor / ceiling of an enclosure. A value computed within EPS of an integer may be
    that integer exactly (5 * 0.7 + 0.5): widened, each end rounds to the side that keeps
    the exact value inside; unwidened, to the integer it is that close to."""
    lo, hi = v
    f = np.floor if down else np.ceil
    tol_lo, tol_hi = _round_tol(lo), _round_tol(hi)
    if widen:
        return f(lo - tol_lo), f(hi + tol_hi)
    sign = 1.0 if down else -1.0
    return f(lo + sign * tol_lo), f(hi + sign * tol_hi)


def _round_tol(x):
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(x), EPS * np.maximum(1.0, np.abs(x)), 0.0)


def _piecewise(e, env, consts, widen):
    reach = True                     # some box point can get this far down the chain
    lo = hi = None
    for pair in e.args:
        assert type(pair) is ExprCondPair
        value = ieval(pair.args[0], env, consts, widen)
        ct, cf = ieval(pair.args[1], env, consts, widen)
        taken = np.logical_and(reach, ct)
        blo = np.where(taken, value[0], INF)
        bhi = np.where(taken, value[1], -INF)
        lo = blo if lo is None else np.minimum(lo, blo)
        hi = bhi if hi is None else np.maximum(hi, bhi)
        reach = np.logical_and(reach, cf)
    return lo, hi


__all__ = ["EPS", "exact_comparisons", "ieval", "ieval_sum", "shape_of", "symbols_key", "values_key"]
