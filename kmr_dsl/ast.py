"""The surface AST: what the parser produces, before names or types are checked.

Contract: every node is a frozen, slotted dataclass with a `span`; children are
tuples. Spans do not take part in equality (`field(compare=False)`), so two programs
that differ only in layout compare equal — the `fmt` round-trip property relies on it.
Class names match the grammar's rule names (grammar/kmr.lark). Literal numbers are
folded to Python values (`int` when written without a point or exponent); a leading
minus in a domain or default is folded into the literal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from kmr_dsl.diagnostics import Span


def _span():
    return field(compare=False, repr=False)


# ---------------------------------------------------------------- expressions

@dataclass(frozen=True, slots=True)
class Number:
    value: int | float
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Quantity:
    """A number with a unit: `16 KB`, `2 ms`, `25%`, `1.5 M`."""
    value: int | float
    unit: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class String:
    value: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Bool:
    value: bool
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Name:
    id: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class BaselineRef:
    """`baseline`: the unmodified input model (in budgets: `baseline.size`)."""
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class LayerRef:
    """`layer` inside a rule declaration."""
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class ModelRef:
    """`model` inside a rule declaration."""
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Attribute:
    obj: "Expr"
    name: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Arg:
    """A call argument; `name` is None for a positional one."""
    name: str | None
    value: "Expr"
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Call:
    func: "Expr"
    args: tuple[Arg, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Index:
    obj: "Expr"
    index: "Expr"
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Unary:
    op: str            # "-" or "not"
    operand: "Expr"
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Binary:
    op: str            # + - * / and or
    left: "Expr"
    right: "Expr"
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Compare:
    op: str            # <= < >= > == !=
    left: "Expr"
    right: "Expr"
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class IfExpr:
    cond: "Expr"
    then: "Expr"
    orelse: "Expr"
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class ListLit:
    """`[1, 2, 3]` or `["lm_head", "re:.*gate$"]`: only as an argument or a parameter
    default (the checker wants every item a number or every item a string)."""
    items: tuple["Expr", ...]
    span: Span = _span()


Expr = Union[Number, Quantity, String, Bool, Name, BaselineRef, LayerRef, ModelRef,
             Attribute, Call, Index, Unary, Binary, Compare, IfExpr, ListLit]
Literal = Union[Number, Quantity, String, Bool, Name]


# ---------------------------------------------------------------- types and domains

@dataclass(frozen=True, slots=True)
class RangeDomain:
    lo: Literal
    hi: Literal
    lo_closed: bool
    hi_closed: bool
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class SetDomain:
    values: tuple[Literal, ...]
    span: Span = _span()


Domain = Union[RangeDomain, SetDomain]


@dataclass(frozen=True, slots=True)
class ScalarType:
    """`int` or `float`, with a domain (knobs always have one; parameters may not)."""
    kind: str          # "int" | "float"
    domain: Domain | None
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class BoolType:
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class EnumType:
    members: tuple[str, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class DataType:
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class ModelType:
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class StrType:
    """`str`: an opaque string parameter (never enters a cost model)."""
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class ListType:
    """`list[int]`, `list[float]`, `list[str]`: an opaque list parameter."""
    elem: str          # "int" | "float" | "str"
    span: Span = _span()


Type = Union[ScalarType, BoolType, EnumType, DataType, ModelType, StrType, ListType]


# ---------------------------------------------------------------- selectors

@dataclass(frozen=True, slots=True)
class Selector:
    """`layers(Linear, Conv2d, name = "encoder.*", exclude = ["lm_head", "re:.*gate$"])`.

    `kinds` may be written as a list (`layers([Linear, Conv2d])`); it is kept flat.
    `names` / `exclude` are None when not given, else the patterns (a single string is
    a one-pattern tuple); a pattern is a glob, or a regular expression after `re:`.
    """
    kinds: tuple[str, ...]
    names: tuple[String, ...] | None
    exclude: tuple[String, ...] | None
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class AllSelector:
    """`all`: every layer the rule accepts."""
    span: Span = _span()


# ---------------------------------------------------------------- declarations

@dataclass(frozen=True, slots=True)
class ImportDecl:
    path: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class LoaderCall:
    name: str
    args: tuple[Arg, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class ModelDecl:
    name: str
    loader: LoaderCall
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class DataDecl:
    name: str
    loader: LoaderCall
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Family:
    """`[l in layers(Linear)]` on a knob: one knob per selected layer."""
    var: str
    selector: Selector
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class KnobDecl:
    name: str
    family: Family | None
    type: Type
    step: Literal | None
    default: Literal | None
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    type: Type
    default: Literal | None
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class DerivedMeter:
    """`meter ratio = baseline.size / size`."""
    name: str
    expr: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class BuiltinMeter:
    """`meter latency(batch : int in [1, 4096] = 1) : time empirical impl "m:f"`."""
    name: str
    params: tuple[Param, ...]
    dimension: str     # bytes | time | count | ratio | number
    kind: str          # analytic | empirical
    impl: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class AcceptsClause:
    kinds: tuple[str, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class RequiresClause:
    expr: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Target:
    """`layer.bits` or `model.trainable` on the left of an effect."""
    scope: str         # "layer" | "model"
    field: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class EffectClause:
    target: Target
    expr: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class ImplClause:
    path: str
    span: Span = _span()


Clause = Union[AcceptsClause, RequiresClause, EffectClause, ImplClause]


@dataclass(frozen=True, slots=True)
class RuleDecl:
    name: str
    params: tuple[Param, ...]
    clauses: tuple[Clause, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Step:
    rule: str
    args: tuple[Arg, ...]
    selector: Selector | AllSelector | None
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class ForBlock:
    var: str
    selector: Selector
    steps: tuple[Step, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class BudgetBlock:
    constraints: tuple[Expr, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Objective:
    direction: str     # maximize | minimize
    expr: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class SearchClause:
    strategy: str
    args: tuple[Arg, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class ReportClause:
    """`report accuracy(test), size`: measured and shown, never used to choose."""
    meters: tuple[Expr, ...]
    span: Span = _span()


PipelineItem = Union[Step, ForBlock, BudgetBlock, Objective, SearchClause, ReportClause]


@dataclass(frozen=True, slots=True)
class PipelineDecl:
    name: str
    model: str
    items: tuple[PipelineItem, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class PropertyDecl:
    name: str
    pipeline: str
    forall: tuple[str, ...]
    checks: tuple[Expr, ...]
    span: Span = _span()


Decl = Union[ImportDecl, ModelDecl, DataDecl, KnobDecl, DerivedMeter, BuiltinMeter,
             RuleDecl, PipelineDecl, PropertyDecl]


@dataclass(frozen=True, slots=True)
class Program:
    file: str
    decls: tuple[Decl, ...]
    span: Span = _span()


def quote(value: str) -> str:
    """A string value as KMR source writes it (the inverse of the parser's unquoting):
    `"` and a backslash that would otherwise escape (before `"` or `\\`, or last) are
    escaped; any other backslash stays as written, so `"re:.*mlp\\.gate$"` reads as the
    regular expression it looks like."""
    out = []
    for i, c in enumerate(value):
        if c == '"':
            out.append('\\"')
        elif c == "\\" and (i + 1 == len(value) or value[i + 1] in '"\\'):
            out.append("\\\\")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'
