"""Relational range reasoning for a knob expression passed to a rule or meter parameter.

Contract: `refine(knobs, ir, lo, hi, lo_closed, hi_closed)` decides whether the numeric
IR expression `ir` stays inside [lo, hi] (ends open or closed) for every setting of the
knobs it reads. It returns `Range("inside")`, `Range("outside", value, setting)` with a
concrete setting and the value it gives, or `Range("unknown")`.

Why: plain interval arithmetic (calls.bounds) forgets that two occurrences of one knob
take the same value, so `0.8 * s - s * s + 0.25` over `s in [0, 1]` looks able to reach
-0.75 although it stays in [0.05, 0.41]. Each piece is bounded by the tighter of
interval arithmetic and affine arithmetic (which keeps linear correlations exactly:
`t + 0.05 * s - 0.05 * s` is t), and the box of knob values is split (the
widest knob first; a finite knob into two halves of its value list) and each piece is
bounded again: the pieces' bounds tighten as they shrink, so a provably-in-range
expression is proved inside after a few splits, and an expression that really leaves
the range is caught at a concrete point (the centre or a corner of a piece), which is
what the diagnostic then shows. At most MAX_BOXES pieces are bounded; past that the
answer is "unknown" and the caller keeps its conservative diagnostic.

Pure Python (the checker imports no solver); evaluation is float64 without directed
rounding, like calls.bounds (a value within rounding of an end counts as reaching it).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

from kmr_dsl.core import program as P

MAX_BOXES = 4000


@dataclass(frozen=True)
class Range:
    verdict: str                     # inside | outside | unknown
    value: float | None = None       # outside: the value at `setting`
    setting: dict | None = None


def _box_of(knobs: dict, names: list[tuple[str, str]]):
    """{instance name: domain part}; instances of one family are separate knobs."""
    box = {}
    for n, decl in names:
        knob = knobs.get(decl)
        if knob is None or knob.type not in ("int", "float") or knob.domain is None:
            return None
        vals = knob.values()
        if vals is not None:
            box[n] = ("set", tuple(sorted(vals)))
        else:
            d = knob.domain
            if d.lo is None or d.hi is None:
                return None
            box[n] = ("int" if knob.type == "int" else "real", (d.lo, d.hi))
    return box


def _knob_names(ir, out: list) -> list:
    if isinstance(ir, P.KnobRef):
        if (ir.name, ir.knob) not in out:
            out.append((ir.name, ir.knob))
    elif isinstance(ir, P.Op):
        for a in ir.args:
            _knob_names(a, out)
    return out


def _hull(part):
    kind, vals = part
    return (vals[0], vals[-1]) if kind == "set" else vals


def _interval(ir, box):
    """Interval bounds of ir over a box (None when not numeric or unbounded)."""
    return interval(ir, lambda ref: _hull(box[ref.name]))


def interval(ir, knob_bounds):
    """Interval bounds of a numeric IR expression, `knob_bounds(KnobRef)` giving each
    knob's (lo, hi) or None (unknown); None when not numeric or unbounded."""
    if isinstance(ir, P.Const):
        v = ir.value
        return (v, v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    if isinstance(ir, P.KnobRef):
        return knob_bounds(ir)
    if not isinstance(ir, P.Op):
        return None
    parts = [interval(a, knob_bounds) for a in ir.args]
    if any(b is None for b in parts):
        return None
    if ir.op == "neg":
        return -parts[0][1], -parts[0][0]
    if ir.op in ("min", "max"):
        f = min if ir.op == "min" else max
        return f(b[0] for b in parts), f(b[1] for b in parts)
    if len(parts) != 2:
        return None
    (a, b), (c, d) = parts
    if ir.op == "+":
        return a + c, b + d
    if ir.op == "-":
        return a - d, b - c
    if ir.op == "*":
        if ir.args[0] == ir.args[1]:          # a square is never negative
            lo = 0 if a <= 0 <= b else min(a * a, b * b)
            return lo, max(a * a, b * b)
        prods = (a * c, a * d, b * c, b * d)
        return min(prods), max(prods)
    if ir.op == "/" and (c > 0 or d < 0):
        quots = (a / c, a / d, b / c, b / d)
        return min(quots), max(quots)
    return None


def _affine(ir, box):
    """An affine form (centre, {knob: coefficient of its unit noise}, error) of ir over a box.

    Each knob is mid + rad * e with e in [-1, 1]; sums keep the noise symbols apart, so
    `t + 0.05 * s - 0.05 * s` is exactly t, which intervals cannot see. Products add the
    product of the radii to the error (standard affine arithmetic). None: not affine-able.
    """
    if isinstance(ir, P.Const):
        v = ir.value
        return (v, {}, 0.0) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    if isinstance(ir, P.KnobRef):
        lo, hi = _hull(box[ir.name])
        return ((lo + hi) / 2, {ir.name: (hi - lo) / 2}, 0.0)
    if not isinstance(ir, P.Op):
        return None
    parts = [_affine(a, box) for a in ir.args]
    if any(x is None for x in parts):
        return None
    if ir.op == "neg":
        c, k, e = parts[0]
        return -c, {n: -v for n, v in k.items()}, e
    if len(parts) != 2 or ir.op not in ("+", "-", "*", "/"):
        return None
    (c1, k1, e1), (c2, k2, e2) = parts
    if ir.op in ("+", "-"):
        sign = 1 if ir.op == "+" else -1
        k = dict(k1)
        for n, v in k2.items():
            k[n] = k.get(n, 0.0) + sign * v
        return c1 + sign * c2, k, e1 + e2
    if ir.op == "/":
        if k2 or e2 or c2 == 0:
            return None
        return c1 / c2, {n: v / c2 for n, v in k1.items()}, e1 / abs(c2)
    k = {n: c2 * v for n, v in k1.items()}
    for n, v in k2.items():
        k[n] = k.get(n, 0.0) + c1 * v
    rad1 = sum(abs(v) for v in k1.values()) + e1
    rad2 = sum(abs(v) for v in k2.values()) + e2
    return c1 * c2, k, abs(c1) * e2 + abs(c2) * e1 + rad1 * rad2


def _bounds(ir, box):
    """The tighter of the interval and the affine enclosure (each is sound)."""
    iv = _interval(ir, box)
    af = _affine(ir, box)
    if af is None:
        return iv
    c, k, e = af
    rad = sum(abs(v) for v in k.values()) + e
    lo, hi = c - rad, c + rad
    if iv is None:
        return lo, hi
    return max(iv[0], lo), min(iv[1], hi)


def _value(ir, point):
    if isinstance(ir, P.Const):
        return ir.value
    if isinstance(ir, P.KnobRef):
        return point[ir.name]
    vals = [_value(a, point) for a in ir.args]
    if any(v is None for v in vals):
        return None
    op = ir.op
    if op == "neg":
        return -vals[0]
    if op == "min":
        return min(vals)
    if op == "max":
        return max(vals)
    a, b = vals
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return None if b == 0 else a / b
    return None


def _points(box):
    """The centre and the two extreme corners of a box (values the knobs really take)."""
    def pick(part, where):
        kind, vals = part
        if kind == "set":
            return vals[{"lo": 0, "hi": -1, "mid": len(vals) // 2}[where]]
        lo, hi = vals
        v = {"lo": lo, "hi": hi, "mid": (lo + hi) / 2}[where]
        return math.floor(v) if kind == "int" and where == "mid" else v
    return [{n: pick(p, w) for n, p in box.items()} for w in ("mid", "lo", "hi")]


def _split(box):
    """Two halves along the widest knob (None when every knob is a single value)."""
    best, width = None, 0.0
    for n, (kind, vals) in box.items():
        w = (len(vals) - 1) if kind == "set" else (vals[1] - vals[0])
        if kind == "set":
            w = (vals[-1] - vals[0]) if len(vals) > 1 else 0
        if kind == "int" and vals[1] - vals[0] < 1:
            w = 0
        if w > width:
            best, width = n, w
    if best is None:
        return None
    kind, vals = box[best]
    if kind == "set":
        half = len(vals) // 2
        parts = [("set", vals[:half]), ("set", vals[half:])]
    elif kind == "int":
        mid = math.floor((vals[0] + vals[1]) / 2)
        parts = [("int", (vals[0], mid)), ("int", (mid + 1, vals[1]))]
    else:
        mid = (vals[0] + vals[1]) / 2
        parts = [("real", (vals[0], mid)), ("real", (mid, vals[1]))]
    return [{**box, best: p} for p in parts]


def refine(knobs: dict, ir, lo, hi, lo_closed: bool = True, hi_closed: bool = True) -> Range:
    names = _knob_names(ir, [])
    box = _box_of(knobs, names)
    if box is None:
        return Range("unknown")

    def inside(v):
        return (v > lo or (v == lo and lo_closed)) and (v < hi or (v == hi and hi_closed))

    # the most-violating pieces first, so a real escape is found early
    heap = [(0.0, 0, box)]
    count = 0
    while heap:
        _, _, b = heapq.heappop(heap)
        count += 1
        if count > MAX_BOXES:
            return Range("unknown")
        bounds = _bounds(ir, b)
        if bounds is None:
            return Range("unknown")
        if inside(bounds[0]) and inside(bounds[1]):
            continue
        for pt in _points(b):
            v = _value(ir, pt)
            if v is not None and not inside(v):
                return Range("outside", v, pt)
        halves = _split(b)
        if halves is None:
            return Range("unknown")
        excess = max(lo - bounds[0], bounds[1] - hi, 0.0)
        for h in halves:
            count_key = -excess
            heapq.heappush(heap, (count_key, id(h), h))
    return Range("inside")


__all__ = ["MAX_BOXES", "Range", "refine"]
