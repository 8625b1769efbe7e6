"""Infeasibility certificates for budgets, checked in exact rational arithmetic.

Contract: a certificate for "no setting meets the lines L" is a vector y >= 0 of
rationals, one per line of L (lines `g_i <= 0` or `g_i < 0`). It is valid when

    min over every setting of  sum_i y_i g_i  >  0,

because a setting meeting every line would make that sum <= 0. `check(sep, y)`
computes that minimum exactly — a separable sum's minimum is the constant plus each
component's minimum (components share no knob), a table component's minimum is taken
over every point of its grid with rationals, an affine component's at the ends of each
knob's interval — and returns it, or None when it is not positive (or y has a negative
entry). No solver and no float is involved: the certificate is checked independently
of HiGHS, which only proposed y (knapsack.Knapsack.multipliers).

Such a y exists exactly when the LP relaxation of the knapsack is infeasible. When
only the integer problem is infeasible (a duality gap), there is no such certificate:
bbtree.py gives a branch-and-bound tree instead, and past its cap the verdict rests on
the solver's branch and bound; `to_json` records which.
"""

from __future__ import annotations

import heapq
import math
import re
from fractions import Fraction

from kmr_dsl.verify.separable import Separable, exact_values

TOP = 5                              # components a conflict names (the rest are counted)
_LAYER = re.compile(r"\[([^\]]*)\]$")  # the layer of a family instance `s[fc1]`


def _member_minima(sep: Separable, y: list[Fraction]):
    """(class, its members' exact minima of sum_i y_i part_i) per class: a table class's
    members share one minimum (equal up to renaming), an affine member's is taken at the
    ends of its knobs' intervals. Remembered in `sep` per y (every entry of y in the key):
    `check` and `conflict` ask for the same y."""
    key = tuple(y)
    memo = sep.minima
    hit = memo.get(key)
    if hit is None:
        hit = memo[key] = list(_minima(sep, y))
    return hit


def _minima(sep: Separable, y: list[Fraction]):
    n = len(sep.lines)
    # y = a / d with whole a: each point's sum is sum_i a_i v_i over d, so the sums are
    # whole when the values are (Why: int products instead of Fraction ones, ~10x faster
    # at 3,000 layers); lines with y_i = 0 add nothing
    d = math.lcm(*(Fraction(yi).denominator for yi in y)) if y else 1
    a = [(i, int(yi * d)) for i, yi in enumerate(y) if yi]
    for cls in sep.classes:
        if cls.mode == "table":
            best = None
            for p in range(cls.points):
                row = exact_values(cls, n, p)
                total = 0
                for i, ai in a:
                    v = row[i]
                    total += ai * (v.numerator if v.denominator == 1 else v)
                if best is None or total < best:
                    best = total
            yield cls, [Fraction(best) / d] * len(cls.members)
            continue
        out = []
        for _ in cls.members:
            total = sum((yi * k0 for yi, (k0, _) in zip(y, cls.affine)), Fraction(0))
            for j, kv in enumerate(cls.kvs):
                a_j = sum((yi * coefs[j] for yi, (_, coefs) in zip(y, cls.affine)), Fraction(0))
                lo = kv.values[0] if kv.kind == "stepped" else kv.lo
                hi = kv.values[-1] if kv.kind == "stepped" else kv.hi
                total += min(a_j * lo, a_j * hi)      # an open end is approached, never passed
            out.append(total)
        yield cls, out


def minimum(sep: Separable, y: list[Fraction]) -> Fraction:
    """The exact minimum of sum_i y_i g_i over every setting (sep's lines, in order)."""
    total = sum((yi * Fraction(c) for yi, c in zip(y, sep.consts)), Fraction(0))
    for cls, minima in _member_minima(sep, y):
        total += minima[0] * len(minima) if cls.mode == "table" else sum(minima, Fraction(0))
    return total


def conflict(sep: Separable, y: list[Fraction], knobs, top: int = TOP) -> dict:
    """The components (a layer's knobs, or knobs shared by layers) that even at their best
    add the most to sum_i y_i g_i: what makes the lines unreachable together, largest
    first (declaration order among equals); knobs are named by their instance (`s[fc1]`)
    from the KnobTable `knobs`; `components` counts them all, so a 3,000-layer model
    still lists `top` entries."""
    # by value, largest first, then declaration order: only the values the top reach are
    # ordered (a table class's members share one minimum: 3,000 layers are a few values)
    by_value: dict = {}
    count = 0
    for cls, minima in _member_minima(sep, y):
        count += len(minima)
        if cls.mode == "table":
            by_value.setdefault(minima[0], []).extend(cls.members)
            continue
        for comp, best in zip(cls.members, minima):
            by_value.setdefault(best, []).append(comp)
    found = []
    for best in sorted(by_value, reverse=True):
        if len(found) >= top:
            break
        comps = heapq.nsmallest(top - len(found), by_value[best], key=lambda c: knobs.sort_key(c.symbols[0]))
        found += [(best, c.symbols) for c in comps]
    shown = []
    for best, symbols in found:
        names = [knobs.by_symbol[s].name for s in symbols]
        layers = {m.group(1) for m in (_LAYER.search(n) for n in names) if m}
        shown.append({"knobs": names, "layer": layers.pop() if len(layers) == 1 and all("[" in n for n in names)
                      else None, "at_best": str(best)})
    return {"components": count, "top": shown,
            "note": "each component's smallest possible share of the certificate's weighted sum, largest first"}


def check(sep: Separable, y: list[Fraction]) -> Fraction | None:
    """The certified positive minimum, or None when y is not a valid certificate."""
    if len(y) != len(sep.lines) or any(yi < 0 for yi in y) or not any(y):
        return None
    bound = minimum(sep, y)
    return bound if bound > 0 else None


def to_json(lines: list, y: list[Fraction] | None, bound: Fraction | None, z3_confirms: bool = False) -> dict:
    if y is None:
        return {"kind": "branch-and-bound", "checked": False, "z3_confirms": z3_confirms,
                "lines": [ln.text for ln in lines],
                "note": "the LP relaxation is feasible; infeasibility rests on the MILP solver's exhaustive "
                        "branch and bound, with every line loosened by its tolerance"
                        + ("; Z3 found the same lines unsatisfiable on its exact encoding" if z3_confirms else "")}
    return {"kind": "lagrangian", "checked": True, "lines": [ln.text for ln in lines],
            "multipliers": [str(v) for v in y], "bound": str(bound),
            "note": "sum of multiplier x (left - right) over the lines is at least `bound` > 0 for every knob "
                    "setting; checked in exact rational arithmetic"}


def from_json(cert: dict) -> list[Fraction]:
    return [Fraction(v) for v in cert["multipliers"]]


__all__ = ["check", "conflict", "from_json", "minimum", "to_json"]
