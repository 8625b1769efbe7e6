"""Numeric evaluation of the verifier's sympy expressions, exact or fast.

Contract: `compile_expr(expr, exact=True)` turns an expression built by
`kmr_dsl.verify.algebra` into a Python closure `f(env) -> value`, where `env` maps knob
symbols to values (`Fraction`/`bool`/enum index when exact, floats when not).
Exact mode is what confirms witnesses and counterexamples: every number is a
`Fraction` (whole intermediate values are Python ints, exact too), so "the witness meets the budget" is decided without rounding. Float mode
is what `predict` uses for search (about 10x faster); its whole counts and its branches
are still exact: a floor or ceiling evaluates its argument, and a comparison its two
sides, in exact mode (a knob's 0.39015151515151514 is the decimal it shows, below
103/264, while the double nearest 103/264 is below that decimal: compared with the
double, `a <= 103/264` was false, and the count 132 * (1 - a) rounded to 80 where the
runtime keeps 81).

The closure tree mirrors the expression (one closure per node): compiling once and
evaluating many settings is the point. An `Unmodelled` placeholder, a missing symbol,
a division by zero or a fractional power raises `Unevaluable`.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache
from typing import Callable

import sympy as sp
from sympy.core.relational import (Equality, GreaterThan, LessThan, StrictGreaterThan, StrictLessThan,
                                   Unequality)
from sympy.logic.boolalg import And, BooleanFalse, BooleanTrue, Not, Or

from kmr_dsl.verify.algebra import Unmodelled, UnmodelledBool, frac, table_handler


class Unevaluable(Exception):
    """The expression has no value at this setting (or none the verifier can compute)."""


def _const(e, exact):
    v = frac(e)
    if not exact:
        return float(v)
    # a whole constant is a Python int inside the closures: int arithmetic is exact and
    # several times faster than Fraction's (compile_expr turns an int result back into
    # a Fraction, and a negative power of an int goes through Fraction: see _c_pow)
    return v.numerator if v.denominator == 1 else v


def _c_number(e, exact):
    v = _const(e, exact)
    return lambda env: v


def _c_symbol(e, exact):
    if isinstance(e, (Unmodelled, UnmodelledBool)):
        reason = e.name[1:]

        def unmodelled(env):
            raise Unevaluable(f"not modelled: {reason}")
        return unmodelled

    def look(env):
        try:
            return env[e]
        except KeyError:
            raise Unevaluable(f"no value for `{e}`") from None
    return look


def _c_add(e, exact):
    fs = [_compile(a, exact) for a in e.args]
    if len(fs) == 2:
        f0, f1 = fs
        return lambda env: f0(env) + f1(env)

    def run(env):
        total = fs[0](env)
        for f in fs[1:]:
            total = total + f(env)
        return total
    return run


def _c_mul(e, exact):
    fs = [_compile(a, exact) for a in e.args]
    if len(fs) == 2:
        f0, f1 = fs
        return lambda env: f0(env) * f1(env)

    def run(env):
        total = fs[0](env)
        for f in fs[1:]:
            total = total * f(env)
        return total
    return run


def _c_pow(e, exact):
    base, expo = e.args
    if not isinstance(expo, sp.Integer):
        raise Unevaluable(f"non-integer power {expo}")
    fb, n = _compile(base, exact), int(expo)

    def run(env):
        b = fb(env)
        try:
            return (Fraction(b) if n < 0 and type(b) is int else b) ** n
        except ZeroDivisionError:
            raise Unevaluable("division by zero") from None
    return run


def _c_minmax(pick):
    def make(e, exact):
        fs = [_compile(a, exact) for a in e.args]
        return lambda env: pick(f(env) for f in fs)
    return make


def _c_piecewise(e, exact):
    branches = [(_compile(p.args[0], exact), _compile(p.args[1], exact)) for p in e.args]

    def run(env):
        for value, cond in branches:
            if cond(env):
                return value(env)
        raise Unevaluable("no branch of a piecewise expression applies")
    return run


def _c_relation(cmp):
    # both sides exact in float mode too: a condition picks a branch (a count's piece
    # `a <= 103/264`), and the knob's exact value compared with a breakpoint rounded to
    # a double can land on the other side of it (module docstring)
    def make(e, exact):
        fa, fb = _compile(e.args[0], True), _compile(e.args[1], True)
        return lambda env: cmp(fa(env), fb(env))
    return make


def _c_and(e, exact):
    fs = [_compile(a, exact) for a in e.args]
    return lambda env: all(f(env) for f in fs)


def _c_or(e, exact):
    fs = [_compile(a, exact) for a in e.args]
    return lambda env: any(f(env) for f in fs)


def _c_not(e, exact):
    f = _compile(e.args[0], exact)
    return lambda env: not f(env)


def _c_round(down: bool):
    """floor / ceiling (the runtime's whole counts), in both modes of the exact argument:
    the runtime rounds exactly (core/step.py), and a count of k + 1/2 computed in floats
    is off by one wherever the float error crosses the half. Where the setting itself
    holds floats (a search's trial point) the argument is a float: it is first moved 1e-9
    (relative) towards the integer it rounds away from, so a count that is exactly whole
    (5 * 0.7 + 0.5 = 4, computed 3.9999999999999996) rounds as in exact arithmetic."""
    def make(e, exact):
        f = _compile(e.args[0], True)
        if down:
            def floor(env):
                v = f(env)
                return math.floor(v + 1e-9 * max(1.0, abs(v)) if type(v) is float else v)
            return floor

        def ceil(env):
            v = f(env)
            return math.ceil(v - 1e-9 * max(1.0, abs(v)) if type(v) is float else v)
        return ceil
    return make


def _c_bool(value):
    return lambda e, exact: (lambda env: value)


_TABLE: dict[type, Callable] = {
    sp.Rational: _c_number,
    sp.Symbol: _c_symbol,
    sp.Add: _c_add,
    sp.Mul: _c_mul,
    sp.Pow: _c_pow,
    sp.Min: _c_minmax(min),
    sp.Max: _c_minmax(max),
    sp.Piecewise: _c_piecewise,
    sp.floor: _c_round(True),
    sp.ceiling: _c_round(False),
    LessThan: _c_relation(lambda a, b: a <= b),
    StrictLessThan: _c_relation(lambda a, b: a < b),
    GreaterThan: _c_relation(lambda a, b: a >= b),
    StrictGreaterThan: _c_relation(lambda a, b: a > b),
    Equality: _c_relation(lambda a, b: a == b),
    Unequality: _c_relation(lambda a, b: a != b),
    And: _c_and,
    Or: _c_or,
    Not: _c_not,
    BooleanTrue: _c_bool(True),
    BooleanFalse: _c_bool(False),
}
_RESOLVED: dict[type, Callable] = {}


def _compile(e, exact: bool):
    handler = table_handler(_TABLE, _RESOLVED, type(e))
    if handler is None:
        raise Unevaluable(f"cannot evaluate {type(e).__name__}")
    return handler(e, exact)


@lru_cache(maxsize=256)
def compile_expr(expr, exact: bool = True) -> Callable[[dict], object]:
    """A closure computing `expr` for an environment {symbol: value} (cached per expression)."""
    f = _compile(expr, exact)
    if not exact:
        return f

    def run(env):
        v = f(env)
        return Fraction(v) if type(v) is int else v       # (a bool stays a bool)
    return run


def evaluate(expr, env: dict, exact: bool = True):
    """`expr` at one setting."""
    return compile_expr(expr, exact)(env)


def as_number(value) -> float | bool:
    """A value for reports: floats for numbers (ints when integral), bools as they are."""
    if isinstance(value, bool):
        return value
    if isinstance(value, Fraction):
        return int(value) if value.denominator == 1 else float(value)
    return value


__all__ = ["Unevaluable", "as_number", "compile_expr", "evaluate"]
