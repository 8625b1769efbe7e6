"""Z3 variables for knob instances: their encodings, domains, decoding and pinning.

Contract: `KnobVariables(knobs, naive=False)` creates, on first use, the Z3 variables of
each knob instance, and states the knobs' domains: `structural()` (always asserted),
`bounds(var)` (the lo/hi sides of a numeric knob's domain, which feasibility tracks as
unsat-core members), `domain()` (both), `decode(model)` (a Z3 model back to an exact
setting) and `pin(setting)` (constraints fixing one). `lower.Encoding` extends it with
the lowering of expressions.

Encodings (split mode, the default):
- set knob `{4, 8, 16, 32}`: one Bool indicator per value, exactly one true; its value
  is the chain If(b=4, 4, If(b=8, 8, ...)); enum knobs likewise (value = member index);
- stepped knob: an Int k with value lo + k*step (k in [0, n-1] are its bounds), so a
  stepped float is still linear arithmetic over an integer;
- real knob: a Real with its interval's ends as bounds; bool knob: a Bool.
naive=True (the benchmark's baseline): sets and enums are one Int/Real with a
disjunction of equalities, stepped floats are relaxed to a Real over their hull.
"""

from __future__ import annotations

from fractions import Fraction

import z3

from kmr_dsl.verify.algebra import NotModelled
from kmr_dsl.verify.knobs import KnobTable, KnobVar

_NUMERALS: dict = {}
_NUMERALS_CONTEXT: list = [None]      # the Z3 context the numerals were made in


def _z(v):
    """A Z3 term for a lowered value (Python constants become Z3 constants, cached per
    Z3 context: each `verify` has its own, report.own_context)."""
    if isinstance(v, bool):
        return z3.BoolVal(v)
    if isinstance(v, (int, Fraction)):
        ctx = z3.main_ctx()
        if _NUMERALS_CONTEXT[0] is not ctx:
            _NUMERALS.clear()
            _NUMERALS_CONTEXT[0] = ctx
        hit = _NUMERALS.get(v)
        if hit is None:
            if len(_NUMERALS) > 100_000:
                _NUMERALS.clear()
            f = Fraction(v)
            hit = _NUMERALS[v] = z3.RealVal(f"{f.numerator}/{f.denominator}")
        return hit
    return v


def _is_const(v) -> bool:
    return isinstance(v, (bool, int, Fraction))



class KnobVariables:
    def __init__(self, knobs: KnobTable, naive: bool = False):
        self.knobs = knobs
        self.naive = naive
        self._vars: dict[str, dict] = {}

    def _var(self, kv: KnobVar) -> dict:
        got = self._vars.get(kv.name)
        if got is not None:
            return got
        n = kv.name
        if kv.kind == "bool":
            got = {"bool": z3.Bool(n)}
            got["value"] = got["bool"]
        elif self.naive and kv.kind in ("set", "stepped", "enum"):
            integral = kv.knob.type in ("int", "enum") or kv.kind == "enum"
            x = z3.Int(n) if integral else z3.Real(n)
            got = {"x": x, "value": z3.ToReal(x) if integral else x}
        elif kv.kind in ("set", "enum"):
            inds = [z3.Bool(f"{n}={kv.render(v)}") for v in kv.values]
            value = _z(Fraction(kv.values[-1]))
            for ind, v in zip(reversed(inds[:-1]), reversed(kv.values[:-1])):
                value = z3.If(ind, _z(Fraction(v)), value)
            got = {"inds": inds, "value": value}
        elif kv.kind == "stepped":
            k = z3.Int(f"k:{n}")
            got = {"k": k, "value": _z(kv.values[0]) + _z(kv.step) * z3.ToReal(k)}
        else:
            x = z3.Real(n)
            got = {"x": x, "value": x}
        self._vars[kv.name] = got
        return got

    def used(self) -> list[KnobVar]:
        return sorted((self.knobs.by_name[n] for n in self._vars), key=lambda v: v.order)

    def structural(self) -> list:
        """Constraints that are part of a knob's type: exactly one value of a set or enum."""
        out = []
        for kv in self.used():
            var = self._vars[kv.name]
            if "inds" in var:
                out.append(z3.PbEq([(i, 1) for i in var["inds"]], 1))
            elif self.naive and kv.kind in ("set", "enum"):
                out.append(z3.Or([var["value"] == _z(Fraction(v)) for v in kv.values]))
        return out

    def bounds(self, kv: KnobVar) -> list[tuple[str, object]]:
        """(side, constraint) for the lo and hi ends of a numeric knob's domain (none for sets)."""
        var = self._var(kv)
        if kv.kind == "stepped" and not self.naive:
            return [("lo", var["k"] >= 0), ("hi", var["k"] <= len(kv.values) - 1)]
        if kv.kind == "stepped":      # naive: the lattice relaxed to its real hull
            return [("lo", var["value"] >= _z(kv.values[0])), ("hi", var["value"] <= _z(kv.values[-1]))]
        if kv.kind == "real":
            x = var["x"]
            out = []
            if kv.lo is not None:
                out.append(("lo", x >= _z(kv.lo) if kv.lo_closed else x > _z(kv.lo)))
            if kv.hi is not None:
                out.append(("hi", x <= _z(kv.hi) if kv.hi_closed else x < _z(kv.hi)))
            return out
        return []

    def domain(self) -> list:
        """Every used knob's full domain: structural constraints and both bounds."""
        return self.structural() + [c for kv in self.used() for _, c in self.bounds(kv)]

    def decode(self, model) -> dict[str, object]:
        """The setting a Z3 model chooses, as exact values (unused knobs: their defaults)."""
        out = self.knobs.defaults()
        for kv in self.used():
            var = self._vars[kv.name]
            if "bool" in var:
                out[kv.name] = z3.is_true(model.eval(var["bool"], model_completion=True))
            elif "inds" in var:
                for ind, v in zip(var["inds"], kv.values):
                    if z3.is_true(model.eval(ind, model_completion=True)):
                        out[kv.name] = v
                        break
            elif "k" in var:
                out[kv.name] = kv.value_at(model.eval(var["k"], model_completion=True).as_long())
            else:
                value = _fraction(model.eval(var["value"], model_completion=True))
                out[kv.name] = int(value) if kv.kind == "enum" else value
        return out

    def pin(self, setting: dict[str, object]) -> list:
        """Constraints that fix every used knob to its value in an exact setting."""
        out = []
        for kv in self.used():
            var, v = self._vars[kv.name], setting[kv.name]
            if "bool" in var:
                out.append(var["bool"] == z3.BoolVal(bool(v)))
            elif "inds" in var:
                out.extend(ind if val == v else z3.Not(ind) for ind, val in zip(var["inds"], kv.values))
            elif "k" in var:
                out.append(var["k"] == int((Fraction(v) - kv.values[0]) / kv.step))
            else:
                out.append(var["value"] == _z(Fraction(v)))
        return out


def _fraction(v) -> Fraction:
    if z3.is_rational_value(v):
        return Fraction(v.numerator_as_long(), v.denominator_as_long())
    if z3.is_algebraic_value(v):
        return Fraction(v.approx(20).as_fraction())
    if z3.is_int_value(v):
        return Fraction(v.as_long())
    raise NotModelled(f"solver value {v} is not a number")



__all__ = ["KnobVariables", "_fraction", "_is_const", "_z"]
