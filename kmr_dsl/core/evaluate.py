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

from kmr_dsl import units
from kmr_dsl.core.program import (
    Const, Constraint, DataRef, EnumLit, FieldRef, If, KnobRef, MeterRef, ModelArg, Op, ParamRef,
)
from kmr_dsl.core.walk import Dispatch, nodes

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


_EVAL = Dispatch("the numeric evaluator")


def evaluate(expr, env: Env):
    """The value of an IR expression; a node with no rule raises `walk.Unsupported`."""
    return _EVAL(expr, env)


@_EVAL.register(Const)
def _const(expr, env):
    return expr.value


@_EVAL.register(KnobRef)
def _knob(expr, env):
    if expr.name not in env.knobs:
        raise KeyError(f"no value for knob `{expr.name}`")
    return env.knobs[expr.name]


@_EVAL.register(EnumLit)
def _enum(expr, env):
    return expr.member


@_EVAL.register(ParamRef)
def _param(expr, env):
    return env.params[expr.name]


@_EVAL.register(FieldRef)
def _field(expr, env):
    return env.fields[(expr.scope, expr.field)]


@_EVAL.register(MeterRef)
def _meter(expr, env):
    if env.meter is None:
        raise KeyError(f"no meter reading for `{expr.name}`")
    return env.meter(expr)


@_EVAL.register(DataRef, ModelArg)
def _resolved(expr, env):
    return env.resolve(expr) if env.resolve else expr


@_EVAL.register(If)
def _if(expr, env):
    return evaluate(expr.then if evaluate(expr.cond, env) else expr.orelse, env)


@_EVAL.register(Op)
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
    for e in nodes(expr):
        if isinstance(e, MeterRef) and e not in out:
            out.append(e)
    return out


def expr_dim(expr, program) -> str:
    """The dimension word (`bytes`, `time`, else `number`) of an expression's value, for
    showing it: literals carry theirs, meters and knobs their declarations'; sums take
    their operands' (the checker made them equal), products and quotients combine them
    (`size / baseline.size` is a number, `size / latency` neither bytes nor time)."""
    dim = _dim(expr, program)
    return "bytes" if dim == units.BYTES else "time" if dim == units.TIME else "number"


_WORDS = {"bytes": units.BYTES, "time": units.TIME}     # a declaration's word; the rest are numbers


def _dim(e, program):
    if isinstance(e, Const):
        return _WORDS.get(e.dim, units.NUMBER)
    if isinstance(e, MeterRef):
        meter = program.meters.get(e.name)
        return None if meter is None else _WORDS.get(meter.dim, units.NUMBER)
    if isinstance(e, KnobRef):
        knob = program.knobs.get(e.knob)
        return None if knob is None else _WORDS.get(knob.dim, units.NUMBER)
    if isinstance(e, If):
        return _dim(e.then, program)
    if isinstance(e, Op) and e.op in ("*", "/"):
        dims = [_dim(a, program) for a in e.args]
        if any(d is None for d in dims):
            return None
        out = dims[0]
        for d in dims[1:]:
            out = units.mul(out, d) if e.op == "*" else units.div(out, d)
        return out
    if isinstance(e, Op) and e.op in ("+", "-", "min", "max", "neg"):
        return next((d for d in (_dim(a, program) for a in e.args) if d is not None), None)
    return None
