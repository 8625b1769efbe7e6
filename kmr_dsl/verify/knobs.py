"""Knob instances as the verifier sees them: a symbol, a sort, a domain of exact values.

Contract: `KnobTable(program, pipeline)` lists every knob instance of a pipeline (a
family contributes one instance per layer, named `s[fc1]`) in declaration order, each
a `KnobVar` with one sympy symbol and one of five encodings:

- "set":     an int/float knob over a finite set `{v1, ...}` (case-split in Z3);
- "stepped": a range with a step, or an int range (step 1): values lo + k*step, k integer;
- "real":    a float range without a step (a real interval, open or closed ends);
- "bool":    false/true;
- "enum":    its members; the symbol's value is the member's index.

Values inside the verifier are exact: `Fraction` for numbers, `bool`, and `int` member
indices for enums. `to_num` / `to_user` convert between those and the values users and
the runtime write (`8`, `0.05`, `"nm"`, `True`); `render` gives KMR text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction

import sympy as sp

from kmr_dsl.core.program import CheckedProgram, Knob, Pipeline
from kmr_dsl.verify.algebra import BoolSymbol, EnumSymbol, frac

FINITE_KINDS = ("set", "stepped", "bool", "enum")
SPELLINGS_CAP = 4096     # stepped domains up to this size keep the user's spelling of each value


@dataclass(eq=False)
class KnobVar:
    name: str                       # instance name: `bits` or `s[fc1]`
    knob: Knob                      # its declaration (a family's for every instance)
    kind: str                       # set | stepped | real | bool | enum
    symbol: sp.Symbol
    values: tuple = ()              # finite kinds: every value, increasing (enum: indices)
    lo: Fraction | None = None      # numeric kinds: the declared bounds
    hi: Fraction | None = None
    lo_closed: bool = True
    hi_closed: bool = True
    step: Fraction | None = None    # stepped: values[i] = values[0] + i * step
    order: int = 0                  # position in the table (for deterministic sorting)
    raw: dict = field(default_factory=dict)   # exact value -> the user's spelling of it

    @property
    def finite(self) -> bool:
        return self.kind in FINITE_KINDS

    @property
    def numeric(self) -> bool:
        return self.kind in ("set", "stepped", "real")

    def to_num(self, value):
        """A user value (8, 0.05, "nm", True) as the verifier's exact value."""
        if self.kind == "enum":
            if value not in self.knob.members:
                raise ValueError(f"`{value}` is not a member of knob `{self.name}`")
            return self.knob.members.index(value)
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"knob `{self.name}` is a bool, not {value!r}")
            return value
        v = frac(value)
        if not self.contains(v):
            raise ValueError(f"{value!r} is outside the domain of knob `{self.name}`")
        return v

    def contains(self, v) -> bool:
        if self.kind in ("set", "stepped", "bool", "enum"):
            return v in self.values
        if self.lo is not None and (v < self.lo or (v == self.lo and not self.lo_closed)):
            return False
        if self.hi is not None and (v > self.hi or (v == self.hi and not self.hi_closed)):
            return False
        return True

    def to_user(self, v):
        """The verifier's exact value as the user writes it (int, float, member name, bool)."""
        if self.kind == "enum":
            return self.knob.members[int(v)]
        if self.kind == "bool":
            return bool(v)
        if v in self.raw:
            return self.raw[v]
        v = Fraction(v)
        if self.knob.type == "int" and v.denominator == 1:
            return int(v)
        return float(v)

    def reads_back(self, v) -> bool:
        """Whether `to_user(v)` is read back (`to_num`, the runtime's `step.exact`) as v
        itself: a float is read as the decimal it shows, so 103/264 is not (it is shown
        as 0.39015151515151514, a different number, and may lie across a rounding
        breakpoint from it)."""
        if not self.numeric:
            return True
        try:
            return self.to_num(self.to_user(v)) == v
        except ValueError:
            return False

    def decimals_near(self, v: Fraction):
        """Decimals of up to 15 significant digits next to v (each reads back exactly,
        DBL_DIG), inside the domain: the float v is shown as first, then the decimals
        just below and above v at 15, 14, ... 1 digits (the nearest first)."""
        shown = frac(float(v))
        out = [shown] if shown != v else []
        top = math.floor(math.log10(abs(v))) if v else 0
        for digits in range(15, 0, -1):
            unit = Fraction(10) ** (top + 1 - digits)
            down = math.floor(v / unit) * unit
            out += [down, down + unit] if down != v else [v]
        seen = set()
        for d in out:
            if d not in seen and self.contains(d) and self.reads_back(d):
                seen.add(d)
                yield d

    def render(self, v) -> str:
        """The value as the user writes it, with its unit where the knob has one (`mem =
        1 GB`, `t = 0.25 s`): what a witness or counterexample shows can be pasted back."""
        u = self.to_user(v)
        if isinstance(u, bool):
            return "true" if u else "false"
        if self.knob.dim == "bytes":
            return _bytes(u)
        if self.knob.dim == "time":
            return f"{u} s"
        return str(u)

    def default(self):
        """The declared default; a real knob without one whose lower end is open takes its midpoint."""
        try:
            return self.to_num(self.knob.default_value())
        except ValueError:
            if self.kind == "real" and self.lo is not None and self.hi is not None:
                return (self.lo + self.hi) / 2
            raise

    def value_at(self, k: int) -> Fraction:
        """Lattice point k of a stepped knob (k may lie beyond the domain: a relaxed bound)."""
        return self.values[0] + k * self.step


def _bytes(u) -> str:
    """A byte count in the largest decimal unit that keeps it whole (exact: 1500 B, not 1.5 KB)."""
    if isinstance(u, int) or float(u).is_integer():
        n = int(u)
        for unit, scale in (("GB", 10 ** 9), ("MB", 10 ** 6), ("KB", 10 ** 3)):
            if n and n % scale == 0:
                return f"{n // scale} {unit}"
        return f"{n} B"
    return f"{u} B"


class Lattice(Sequence):
    """The values first + i*step, i in [0, n): a stepped domain held symbolically.

    Why: `knob mem : int in [1 B, 1 GB]` has 10^9 values; every consumer asks for its
    length, ends, membership or an index, and the few that enumerate check `len` first.
    """

    __slots__ = ("first", "step", "n")

    def __init__(self, first: Fraction, step: Fraction, n: int):
        self.first, self.step, self.n = first, step, max(n, 0)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.first + i * self.step

    def __contains__(self, v) -> bool:
        try:
            k = (Fraction(v) - self.first) / self.step
        except (TypeError, ValueError):
            return False
        return k.denominator == 1 and 0 <= k < self.n

    def index(self, v, start=0, stop=None) -> int:
        if v not in self:
            raise ValueError(f"{v} is not in the lattice")
        return int((Fraction(v) - self.first) / self.step)

    def __iter__(self):
        return (self.first + i * self.step for i in range(self.n))

    def __eq__(self, other) -> bool:
        if isinstance(other, Lattice):
            return (self.first, self.step, self.n) == (other.first, other.step, other.n)
        return tuple(self) == tuple(other) if len(other) == self.n else False

    def __hash__(self) -> int:
        return hash((self.first, self.step, self.n))

    def __repr__(self) -> str:
        return f"Lattice({self.first}, {self.step}, {self.n})"


def _stepped_values(knob: Knob):
    d = knob.domain
    lo, hi = frac(d.lo), frac(d.hi)
    step = frac(d.step) if d.step is not None else Fraction(1)
    if step <= 0:
        raise ValueError(f"knob `{knob.name}` has a step of {d.step}, which must be positive")
    first = lo
    if knob.type == "int" and d.step is None:
        first = Fraction(math.ceil(lo))
    n = int(math.floor((hi - first) / step)) + 1
    if first == lo and not d.lo_closed:
        first, n = first + step, n - 1
    if n > 0 and first + (n - 1) * step == hi and not d.hi_closed:
        n -= 1
    return Lattice(first, step, n), step


def make_var(name: str, knob: Knob, order: int) -> KnobVar:
    if knob.type == "bool":
        return KnobVar(name, knob, "bool", BoolSymbol(name), (False, True), order=order)
    if knob.type == "enum":
        return KnobVar(name, knob, "enum", EnumSymbol(name), tuple(range(len(knob.members))), order=order)
    d = knob.domain
    sym = sp.Symbol(name)
    if d.values is not None:
        vals = sorted({frac(v): v for v in d.values}.items())
        raw = dict(vals)
        values = tuple(v for v, _ in vals)
        return KnobVar(name, knob, "set", sym, values, values[0], values[-1], order=order, raw=raw)
    if d.step is not None or knob.type == "int":
        values, step = _stepped_values(knob)
        raw = {}
        shown = d.finite() if d.step is not None and len(values) <= SPELLINGS_CAP else None
        if shown and len(shown) == len(values):
            raw = dict(zip(values, shown))
        return KnobVar(name, knob, "stepped", sym, values, frac(d.lo), frac(d.hi), d.lo_closed, d.hi_closed,
                       step, order=order, raw=raw)
    return KnobVar(name, knob, "real", sym, (), frac(d.lo), frac(d.hi), d.lo_closed, d.hi_closed, order=order)


class KnobTable:
    """Every knob instance of one pipeline, by name and by symbol, in declaration order."""

    def __init__(self, program: CheckedProgram, pipeline: Pipeline):
        self.vars: list[KnobVar] = []
        shapes: dict[str, KnobVar] = {}
        for i, (inst, knob) in enumerate(program.knob_instances(pipeline)):
            proto = shapes.get(knob.name)
            if proto is None:
                var = shapes[knob.name] = make_var(inst, knob, i)
            else:
                # a family's instances share the domain: copy it instead of recomputing
                var = replace(proto, name=inst, symbol=type(proto.symbol)(inst), order=i)
            self.vars.append(var)
        self.by_name = {v.name: v for v in self.vars}
        self.by_symbol = {v.symbol: v for v in self.vars}
        self._defaults: dict | None = None
        self.families: dict[str, list[KnobVar]] = {}
        for v in self.vars:
            self.families.setdefault(v.knob.name, []).append(v)

    def __iter__(self):
        return iter(self.vars)

    def defaults(self) -> dict[str, object]:
        """Every instance at its default (a fresh dict; computed once per table)."""
        if self._defaults is None:
            by_family: dict[str, object] = {}
            out = {}
            for v in self.vars:
                if v.knob.name not in by_family:      # a family's instances share one default
                    by_family[v.knob.name] = v.default()
                out[v.name] = by_family[v.knob.name]
            self._defaults = out
        return dict(self._defaults)

    def complete(self, setting: dict | None) -> dict[str, object]:
        """A user setting (names -> user values; missing knobs take their defaults) as exact values.

        A family's declared name (`s`) sets every instance at once.
        """
        out = self.defaults()
        for name, value in (setting or {}).items():
            if name in self.by_name:
                out[name] = self.by_name[name].to_num(value)
            elif name in self.families:
                for v in self.families[name]:
                    out[v.name] = v.to_num(value)
            else:
                raise ValueError(f"unknown knob `{name}`")
        return out

    def env(self, setting: dict[str, object]) -> dict:
        """An exact setting (name -> value) keyed by symbol, for the evaluators."""
        return {self.by_name[n].symbol: v for n, v in setting.items() if n in self.by_name}

    def to_user(self, setting: dict[str, object]) -> dict[str, object]:
        return {n: self.by_name[n].to_user(v) for n, v in setting.items()}

    def writable(self, setting: dict[str, object], holds) -> dict[str, object] | None:
        """`setting` as one the user and the runtime read back exactly (`to_user`, then
        `to_num`), at which `holds(setting)` is still true; None if none was found.

        Why: a solver's witness or counterexample is an exact rational, often a vertex
        of its constraints: a rounding breakpoint (103/264, where 132 * (1 - a) is k +
        1/2). Shown as a float it is read back as that float's decimal, which may lie
        across the breakpoint, and the run there is not the run the verifier judged.
        Each real knob whose value does not read back is moved, one at a time, to the
        first decimal near it (`KnobVar.decimals_near`) at which `holds` is true."""
        out = dict(setting)
        for name, v in setting.items():
            var = self.by_name.get(name)
            if var is None or var.reads_back(v):
                continue
            if var.kind != "real":
                return None             # a finite domain's value cannot move
            for d in var.decimals_near(Fraction(v)):
                if holds({**out, name: d}):
                    out[name] = d
                    break
            else:
                return None
        return out

    def sort_key(self, symbol) -> tuple:
        var = self.by_symbol.get(symbol)
        return (0, var.order, "") if var else (1, 0, str(symbol))


__all__ = ["FINITE_KINDS", "KnobTable", "Lattice", "KnobVar", "make_var"]
