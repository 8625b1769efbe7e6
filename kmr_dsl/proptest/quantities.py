"""Readable quantities for test reports: `70.1 KB`, `1.25 ms`, `0.9513`.

Contract: `show(value, dim)` formats a number in the dimension the checker gave it
(`bytes` with decimal units as the language writes them, `time` in s/ms/us, anything
else as a plain number with up to 6 significant digits); `expr_dim(expr, program)` is
the dimension of an IR expression (a meter's declared dimension, a constant's or a
knob's, propagated through arithmetic: `10% * baseline.size` is bytes,
`baseline.size / size` a number); `plural(n, noun)` counts. No torch here.
"""

from __future__ import annotations

from kmr_dsl.core.program import CheckedProgram, Const, If, KnobRef, MeterRef, Op

_BYTES = ((1e9, "GB"), (1e6, "MB"), (1e3, "KB"))
_TIME = ((1.0, "s"), (1e-3, "ms"), (1e-6, "us"))


def _num(value: float) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    value = float(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def show(value, dim: str = "number") -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _num(value) if isinstance(value, bool) else str(value)
    if dim == "bytes":
        for scale, unit in _BYTES:
            if abs(value) >= scale:
                return f"{value / scale:.1f} {unit}"
        return f"{_num(value)} B"
    if dim == "time":
        for scale, unit in _TIME:
            if abs(value) >= scale:
                return f"{value / scale:.3g} {unit}"
        return f"{value / 1e-6:.3g} us"
    return _num(value)


def plural(count: int, noun: str) -> str:
    """`1 example`, `20 examples`."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def expr_dim(expr, program: CheckedProgram) -> str:
    if isinstance(expr, MeterRef):
        meter = program.meters.get(expr.name)
        return meter.dim if meter is not None else "number"
    if isinstance(expr, Const):
        return expr.dim if expr.dim in ("bytes", "time") else "number"
    if isinstance(expr, KnobRef):
        knob = program.knobs.get(expr.knob)
        return knob.dim if knob is not None else "number"
    if isinstance(expr, If):
        return expr_dim(expr.then, program)
    if isinstance(expr, Op):
        dims = [expr_dim(a, program) for a in expr.args]
        if expr.op == "/":
            return "number" if len(set(dims)) == 1 else dims[0]
        if expr.op in ("+", "-", "*", "neg", "min", "max"):
            return next((d for d in dims if d != "number"), "number")
    return "number"


__all__ = ["expr_dim", "plural", "show"]
