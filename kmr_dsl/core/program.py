"""The checked program: what the checker hands to the verifier, the runtime and search.

Contract: everything here is resolved and typed. Names point at their declarations,
quantities are in base units (bytes, seconds, plain numbers; `25%` is 0.25, `16 KB` is
16000), derived meters are expanded in place, knob families are expanded to one knob
instance per selected layer (instance name `s[fc1]`), `for` blocks are expanded to one
step per layer in order, and every selector is resolved to the real layer names of the
pipeline's model. Expressions are a small IR (below), not the surface AST.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from kmr_dsl.diagnostics import Span
from kmr_dsl.facts import LoaderSpec, ModelFacts


def _span():
    # A default, so classes whose other fields have defaults (Knob, Param) can still end
    # with `span`; the checker always passes the real one.
    return field(default=Span.unknown(), compare=False, repr=False)


# ---------------------------------------------------------------- expression IR

@dataclass(frozen=True, slots=True)
class Const:
    """A literal in base units. `dim` is "bytes", "time", "number" or "bool"/"str"/"list"
    (a list's value is a tuple of numbers or of strings: an opaque rule argument)."""
    value: int | float | bool | str
    dim: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class KnobRef:
    """A knob instance: `sparsity`, or `s[fc1]` for a family member."""
    name: str
    knob: str            # the declared knob's name (`s` for `s[fc1]`)
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class ParamRef:
    """A rule parameter inside a rule's requires/effect."""
    name: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class FieldRef:
    """`layer.bits` / `model.trainable` inside a rule's requires/effect."""
    scope: str           # "layer" | "model"
    field: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class EnumLit:
    """An enum member, e.g. `dynamic`; compared with enum knobs and parameters by name."""
    member: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class MeterRef:
    """A meter reading: `size`, `accuracy(test)`, `baseline.latency(batch = 8)`.

    args: the meter's arguments with defaults filled in, as (name, value) pairs, sorted;
    values are Python literals, or `DataRef` for a dataset argument.
    """
    name: str
    args: tuple[tuple[str, object], ...]
    baseline: bool
    analytic: bool
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class DataRef:
    name: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class ModelArg:
    """A model passed as a rule argument: a declared model's name, or "baseline"."""
    name: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Op:
    """Arithmetic, boolean and comparison operators, and min/max.

    op is one of: + - * / neg and or not <= < >= > == != min max
    """
    op: str
    args: tuple["IExpr", ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class If:
    cond: "IExpr"
    then: "IExpr"
    orelse: "IExpr"
    span: Span = _span()


IExpr = Union[Const, KnobRef, ParamRef, FieldRef, EnumLit, MeterRef, DataRef, ModelArg, Op, If]

COMPARISONS = ("<=", "<", ">=", ">", "==", "!=")


# ---------------------------------------------------------------- knobs

@dataclass(frozen=True, slots=True)
class Domain:
    """A finite or interval domain of an int/float knob or parameter.

    Exactly one of `values` (a finite set) or the interval `lo..hi` is given; `step`
    (with an interval) makes it finite: lo, lo+step, ..., up to hi (honouring open ends).
    """
    values: tuple | None = None
    lo: float | None = None
    hi: float | None = None
    lo_closed: bool = True
    hi_closed: bool = True
    step: float | None = None

    def finite(self) -> tuple | None:
        """Every value when the domain is finite, in increasing order; else None."""
        if self.values is not None:
            return tuple(sorted(self.values))
        if self.step is None or self.lo is None or self.hi is None:
            return None
        n = round((self.hi - self.lo) / self.step)
        vals = []
        for i in range(n + 1):
            v = self.lo + i * self.step
            v = round(v, 12)
            if isinstance(self.step, int) and isinstance(self.lo, int):
                v = int(v)
            if (i == 0 and not self.lo_closed) or (i == n and not self.hi_closed):
                continue
            vals.append(v)
        return tuple(vals)

    def contains(self, v) -> bool:
        if self.values is not None:
            return any(v == x for x in self.values)
        if self.lo is not None and (v < self.lo or (v == self.lo and not self.lo_closed)):
            return False
        if self.hi is not None and (v > self.hi or (v == self.hi and not self.hi_closed)):
            return False
        if self.step is not None and self.lo is not None:
            k = (v - self.lo) / self.step
            return abs(k - round(k)) < 1e-9
        return True


@dataclass(frozen=True, slots=True)
class Knob:
    """A declared knob. For a family, `layers` lists the layer names it has instances for."""
    name: str
    type: str                      # "int" | "float" | "bool" | "enum"
    domain: Domain | None          # int/float only
    members: tuple[str, ...] = ()  # enum only
    default: object = None         # a Python value; None when no default was given
    dim: str = "number"
    family_var: str | None = None
    layers: tuple[str, ...] = ()   # family only
    span: Span = _span()

    @property
    def is_family(self) -> bool:
        return self.family_var is not None

    def instances(self) -> tuple[str, ...]:
        if not self.is_family:
            return (self.name,)
        return tuple(f"{self.name}[{layer}]" for layer in self.layers)

    def values(self) -> tuple | None:
        """All values of a finite knob (bool, enum, set, stepped range); None if continuous."""
        if self.type == "bool":
            return (False, True)
        if self.type == "enum":
            return self.members
        return self.domain.finite() if self.domain else None

    def default_value(self):
        """The default, or the first value of the domain (lower bound) when none is given."""
        if self.default is not None:
            return self.default
        vals = self.values()
        if vals:
            return vals[0]
        return self.domain.lo


# ---------------------------------------------------------------- rules and meters

# the default of a `data` parameter that may be left out (`calibration : data = none`):
# its value then, an enum member of its own; `requires P != none` asks for the data
NO_DATA = "none"


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    # "int" | "float" | "bool" | "enum" | "data" | "model" | "str" | "list"
    type: str
    domain: Domain | None = None
    members: tuple[str, ...] = ()
    default: object = None         # Python value (a tuple for a list), "baseline" for a model param, NO_DATA, or None
    has_default: bool = False
    span: Span = _span()
    elem: str = ""                 # list only: "int" | "float" | "str"


@dataclass(frozen=True, slots=True)
class Effect:
    scope: str                     # "layer" | "model"
    field: str
    expr: IExpr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    params: tuple[Param, ...]
    accepts: tuple[str, ...] | None   # None: whole-model rule
    requires: tuple[IExpr, ...]
    effects: tuple[Effect, ...]
    impl: str
    span: Span = _span()

    def param(self, name: str) -> Param | None:
        for p in self.params:
            if p.name == name:
                return p
        return None


@dataclass(frozen=True, slots=True)
class Meter:
    """A standard (builtin) meter. Derived meters are expanded where they are used."""
    name: str
    params: tuple[Param, ...]
    dim: str                       # bytes | time | number
    analytic: bool
    impl: str
    span: Span = _span()


# ---------------------------------------------------------------- pipelines

@dataclass(frozen=True, slots=True)
class ModelDecl:
    name: str
    loader: LoaderSpec
    facts: ModelFacts | None       # None only when the model could not be loaded
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class DataDecl:
    name: str
    loader: LoaderSpec
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Step:
    """One rule application. `args` holds every parameter (defaults filled in) as IR:
    Const / KnobRef / EnumLit / arithmetic over knobs, DataRef, ModelArg."""
    rule: Rule
    args: tuple[tuple[str, IExpr], ...]
    layers: tuple[str, ...]        # selected layer names; () for a whole-model rule
    span: Span = _span()

    def arg(self, name: str) -> IExpr:
        for k, v in self.args:
            if k == name:
                return v
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class Constraint:
    op: str                        # <= < >= > == !=
    left: IExpr
    right: IExpr
    analytic: bool                 # every meter in it is analytic
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Objective:
    direction: str                 # maximize | minimize
    expr: IExpr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Search:
    strategy: str                  # budgeted | random | tpe
    options: tuple[tuple[str, object], ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class ReportItem:
    """One item of `report accuracy(test), size`: measured on the result of `run` and on
    the best result of `search`, shown in the reports, never used to choose a setting."""
    text: str                      # as written, the label in reports
    expr: IExpr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Pipeline:
    name: str
    model: ModelDecl
    steps: tuple[Step, ...]
    budget: tuple[Constraint, ...]
    objective: Objective | None
    search: Search | None
    knobs: tuple[str, ...]         # declared knobs this pipeline uses (in declaration order)
    span: Span = _span()
    report: tuple[ReportItem, ...] = ()


@dataclass(frozen=True, slots=True)
class Property:
    name: str
    pipeline: str
    forall: tuple[str, ...]        # knob names drawn; the others stay at their defaults
    checks: tuple[Constraint, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class CheckedProgram:
    file: str
    knobs: dict[str, Knob]
    rules: dict[str, Rule]
    meters: dict[str, Meter]
    models: dict[str, ModelDecl]
    data: dict[str, DataDecl]
    pipelines: dict[str, Pipeline]
    properties: dict[str, Property]
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def knob_instances(self, pipeline: Pipeline) -> list[tuple[str, Knob]]:
        """Every knob instance of a pipeline, in declaration order."""
        return [(inst, self.knobs[k]) for k in pipeline.knobs for inst in self.knobs[k].instances()]

    def default_setting(self, pipeline: Pipeline) -> dict[str, object]:
        return {inst: knob.default_value() for inst, knob in self.knob_instances(pipeline)}
