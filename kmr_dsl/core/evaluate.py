"""Numeric evaluation of the checked-program IR (kmr_dsl.core.program).

Contract: `evaluate(expr, env)` computes an IR expression with plain Python numbers
and booleans. The environment answers knob instances (`env.knobs`), meter readings
(`env.meter(MeterRef) -> float`), rule parameters and state fields (for contracts),
and resolves data/model arguments (`env.resolve`). No torch, z3 or sympy here: the
runtime, search and property tests share this one evaluator, so a budget line means
the same thing everywhere.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Callable

from kmr_dsl.core.program import (
    Const, Constraint, DataRef, EnumLit, FieldRef, If, KnobRef, MeterRef, ModelArg, Op, ParamRef,
)

_BINARY = {
    "+": operator.add, "-": operator.sub, "*": operator.mul,
    "<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt,
    "==": lambda a, b: _equal(a, b), "!=": lambda a, b: not _equal(a, b),
}


def _equal(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(a)), abs(float(b)))
    return a == b


@dataclass
class Env:
    knobs: dict = field(default_factory=dict)
    meter: Callable[[MeterRef], float] | None = None
    params: dict = field(default_factory=dict)
    fields: dict = field(default_factory=dict)     # ("layer", "bits") -> value
    resolve: Callable[[object], object] | None = None


def evaluate(expr, env: Env):
    if isinstance(expr, Const):
        return expr.value
    if isinstance(expr, KnobRef):
        if expr.name not in env.knobs:
            raise KeyError(f"no value for knob `{expr.name}`")
        return env.knobs[expr.name]
    if isinstance(expr, EnumLit):
        return expr.member
    if isinstance(expr, ParamRef):
        return env.params[expr.name]
    if isinstance(expr, FieldRef):
        return env.fields[(expr.scope, expr.field)]
    if isinstance(expr, MeterRef):
        if env.meter is None:
            raise KeyError(f"no meter reading for `{expr.name}`")
        return env.meter(expr)
    if isinstance(expr, (DataRef, ModelArg)):
        return env.resolve(expr) if env.resolve else expr
    if isinstance(expr, If):
        return evaluate(expr.then if evaluate(expr.cond, env) else expr.orelse, env)
    if isinstance(expr, Op):
        return _op(expr, env)
    raise TypeError(f"cannot evaluate {type(expr).__name__}")


def _op(expr: Op, env: Env):
    op, args = expr.op, expr.args
    if op == "and":
        return all(bool(evaluate(a, env)) for a in args)
    if op == "or":
        return any(bool(evaluate(a, env)) for a in args)
    if op == "not":
        return not evaluate(args[0], env)
    if op == "neg":
        return -evaluate(args[0], env)
    values = [evaluate(a, env) for a in args]
    if op == "min":
        return min(values)
    if op == "max":
        return max(values)
    if op == "/":
        return values[0] / values[1] if values[1] != 0 else float("inf")
    return _BINARY[op](values[0], values[1])


def holds(constraint: Constraint, env: Env) -> bool:
    left, right = evaluate(constraint.left, env), evaluate(constraint.right, env)
    return bool(_BINARY[constraint.op](left, right))


def margin(constraint: Constraint, env: Env) -> float:
    """How far a line is from failing, in its own units (>= 0 holds, < 0 fails)."""
    left, right = float(evaluate(constraint.left, env)), float(evaluate(constraint.right, env))
    if constraint.op in ("<=", "<"):
        return right - left
    if constraint.op in (">=", ">"):
        return left - right
    return -abs(left - right)


def meter_key(ref: MeterRef) -> str:
    """The name a reading is reported under: `size`, `accuracy(test)` (a lone data
    argument by its name), `latency(batch=8)`. Run reports, search journals and property
    failures all key meters this way."""
    if not ref.args:
        return ref.name
    parts = []
    for name, value in ref.args:
        shown = value.name if isinstance(value, (DataRef, ModelArg)) else value
        parts.append(str(shown) if isinstance(value, DataRef) and len(ref.args) == 1 else f"{name}={shown}")
    return f"{ref.name}({', '.join(parts)})"


def meter_refs(expr) -> list[MeterRef]:
    """Every meter reading inside an expression, in order, without duplicates."""
    out: list[MeterRef] = []

    def walk(e):
        if isinstance(e, MeterRef):
            if e not in out:
                out.append(e)
        elif isinstance(e, Op):
            for a in e.args:
                walk(a)
        elif isinstance(e, If):
            walk(e.cond), walk(e.then), walk(e.orelse)
        elif isinstance(e, Constraint):
            walk(e.left), walk(e.right)

    walk(expr)
    return out
