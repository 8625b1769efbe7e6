"""Units and dimensions of KMR quantities (spec §2). Imports nothing heavy.

Contract:
- `UNITS` maps every unit the lexer accepts to (factor, dimension): bytes `B KB MB GB`
  are powers of 1000 and `KiB MiB GiB` powers of 1024; time `us ms s` is in seconds;
  `%` is the ratio 0.01; `K M G` are plain count multipliers. `to_base(value, unit)`
  converts a written quantity to its base unit (bytes, seconds, plain number).
- A dimension (`Dim`) is a sorted tuple of (base, exponent) pairs over the bases
  `bytes` and `time`; the empty tuple is a plain number. Products and quotients combine
  exponents, so `size / latency` is bytes/time and `size / baseline.size` is a number.
  Sums and comparisons need equal dimensions (the checker reports KMR212 otherwise).
- `meter_dim` maps a meter's declared dimension (`bytes time count ratio number`) to a
  `Dim`; `dim_label` gives the word used in the checked program's `Const.dim`
  (`bytes`, `time`, `number`) and in messages (`bytes/time` for compound ones).
"""

from __future__ import annotations

from typing import Tuple

Dim = Tuple[Tuple[str, int], ...]

NUMBER: Dim = ()
BYTES: Dim = (("bytes", 1),)
TIME: Dim = (("time", 1),)

# unit -> (factor to the base unit, dimension, divide?) — percent and sub-second times
# divide by a power of ten instead of multiplying by 0.01 / 0.001, because `7 * 0.01` is
# 0.07000000000000001 while `7 / 100` is 0.07: users compare these against measured values.
_TABLE: dict[str, tuple[int, Dim, bool]] = {
    "B": (1, BYTES, False),
    "KB": (1000, BYTES, False),
    "MB": (1000 ** 2, BYTES, False),
    "GB": (1000 ** 3, BYTES, False),
    "KiB": (1024, BYTES, False),
    "MiB": (1024 ** 2, BYTES, False),
    "GiB": (1024 ** 3, BYTES, False),
    "us": (1000 ** 2, TIME, True),
    "ms": (1000, TIME, True),
    "s": (1, TIME, False),
    "%": (100, NUMBER, True),
    "K": (1000, NUMBER, False),
    "M": (1000 ** 2, NUMBER, False),
    "G": (1000 ** 3, NUMBER, False),
}

UNITS: tuple[str, ...] = tuple(_TABLE)

_METER_DIMS: dict[str, Dim] = {
    "bytes": BYTES,
    "time": TIME,
    "count": NUMBER,
    "ratio": NUMBER,
    "number": NUMBER,
}


def to_base(value: int | float, unit: str) -> tuple[int | float, Dim]:
    """`16 KB` -> (16000, BYTES); `25 %` -> (0.25, NUMBER); `2 ms` -> (0.002, TIME).

    Byte and count quantities that come out whole are ints (`1.5 M` is 1500000), so a
    budget in bytes reads as an exact integer; times and ratios stay floats.
    """
    factor, dim, divide = _TABLE[unit]
    if divide:
        return value / factor, dim
    out = value * factor
    if isinstance(out, float) and out.is_integer() and abs(out) < 2 ** 63:
        out = int(out)
    return out, dim


def meter_dim(word: str) -> Dim:
    """A meter declaration's dimension word -> Dim (count and ratio are plain numbers)."""
    return _METER_DIMS[word]


def mul(a: Dim, b: Dim) -> Dim:
    return _combine(a, b, 1)


def div(a: Dim, b: Dim) -> Dim:
    return _combine(a, b, -1)


def _combine(a: Dim, b: Dim, sign: int) -> Dim:
    exps = dict(a)
    for base, e in b:
        exps[base] = exps.get(base, 0) + sign * e
    return tuple(sorted((k, v) for k, v in exps.items() if v != 0))


def dim_label(d: Dim) -> str:
    """`number`, `bytes`, `time`, `bytes/time`, `1/time`, `bytes^2` …"""
    if not d:
        return "number"
    num = [k if e == 1 else f"{k}^{e}" for k, e in d if e > 0]
    den = [k if e == -1 else f"{k}^{-e}" for k, e in d if e < 0]
    top = "*".join(num) or "1"
    return f"{top}/{'*'.join(den)}" if den else top


def suggest(value, d: Dim) -> str:
    """How to write a bare number as a quantity of dimension `d`: `16000 B` or `16 KB`."""
    if d == BYTES:
        if isinstance(value, (int, float)) and value >= 1000:
            return f"`{value:g} B` or `{value / 1000:g} KB`"
        return f"`{value:g} B`" if isinstance(value, (int, float)) else "`16 KB`"
    if d == TIME:
        return f"`{value:g} s` or `{value:g} ms`" if isinstance(value, (int, float)) else "`2 ms`"
    return f"`{value}`"


def example_unit(d: Dim) -> str:
    """A unit to suggest in a hint: `16 KB` for bytes, `2 ms` for time."""
    return {BYTES: "KB", TIME: "ms"}.get(d, "")


def fmt_value(value: float | None, dim: str) -> str:
    """A reading for people, in its dimension's unit: bytes as B/KB/MB/GB (two decimals),
    time as s or ms, counts of 100 or more with separators, else 4 significant digits.
    `dim` is a dimension word (`expr_dim`'s); anything but bytes and time is a plain number."""
    if value is None:
        return "-"
    if dim == "bytes":
        for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
            if abs(value) >= scale:
                return f"{value / scale:.2f} {unit}"
        return f"{value:.0f} B"
    if dim == "time":
        if abs(value) >= 1:
            return f"{value:.3f} s"
        return f"{value * 1e3:.3f} ms"
    if float(value).is_integer() and abs(value) >= 100:
        return f"{int(value):,}"
    return f"{value:.4g}"


__all__ = ["BYTES", "Dim", "NUMBER", "TIME", "UNITS", "dim_label", "div", "example_unit",
           "fmt_value", "meter_dim", "mul", "suggest", "to_base"]
