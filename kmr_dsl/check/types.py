"""Checker types, literal values and domains (knob and parameter types).

Contract:
- `Ty` is the type the checker infers for an expression: a number with a dimension
  (kmr_dsl.units.Dim) and an integrality flag, a bool, a string, an enum (its members),
  data, a model, or `ERROR` — the type of something already reported, which every check
  accepts silently so one mistake gives one diagnostic.
- `literal(node)` folds a literal AST node to (Python value in base units, Ty).
- `build_domain(...)` turns an `int`/`float` type's domain and step into a
  `program.Domain`, reporting KMR205 (empty), KMR207 (step), KMR211 (non-integral bound
  of an int), KMR212 (bounds of different dimensions). An int range without a step keeps
  `step=None`: its values are every integer in it (the knob's type says so), and later
  stages choose whether to enumerate it (`[1, 65536]` should not be, by default).
- `check_default(...)` reports KMR206 (outside the domain or off the step grid) and
  KMR211/KMR212 (wrong type or dimension) for a knob's or parameter's default.
- `to_param(...)` builds a `program.Param` from a rule or meter parameter, including the
  opaque `str` and `list[int | float | str]` parameters (constants handed to the rule's
  implementation; they never enter a requires or an effect, so never a cost model).
- `list_literal(...)` (kmr_dsl.check.lists) folds `[e, ...]`: plain numbers or strings,
  not mixed (KMR242).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kmr_dsl import ast, units
from kmr_dsl.check.lists import LIST_WORDS, coerce_list, list_literal
from kmr_dsl.core import program as P
from kmr_dsl.check.names import did_you_mean
from kmr_dsl.diagnostics import Diagnostic, error
from kmr_dsl.units import Dim


@dataclass(frozen=True, slots=True)
class Ty:
    kind: str                      # num | bool | str | enum | data | model | list | error
    dim: Dim = units.NUMBER        # num only
    integral: bool = False         # num only: every value is an integer
    members: tuple[str, ...] = ()  # enum only
    elem: str = ""                 # list only: "int" | "float" | "str", "" for `[]`

    @property
    def is_error(self) -> bool:
        return self.kind == "error"


NUM = Ty("num")
INT = Ty("num", integral=True)
BOOL = Ty("bool")
STR = Ty("str")
DATA = Ty("data")
MODEL = Ty("model")
ERROR = Ty("error")


def num(dim: Dim = units.NUMBER, integral: bool = False) -> Ty:
    return Ty("num", dim, integral)


def enum(members) -> Ty:
    return Ty("enum", members=tuple(members))


def list_of(elem: str) -> Ty:
    return Ty("list", elem=elem)


def describe(ty: Ty) -> str:
    """Words for messages: `a number`, `bytes`, `an int`, `a bool`, `enum {a, b}` …"""
    if ty.kind == "list":
        return "a list of " + LIST_WORDS[ty.elem]
    if ty.kind == "num":
        if ty.dim != units.NUMBER:
            return units.dim_label(ty.dim)
        return "an int" if ty.integral else "a number"
    return {
        "bool": "a bool", "str": "a string", "data": "data", "model": "a model",
        "enum": "one of {" + ", ".join(ty.members) + "}", "error": "an erroneous value",
    }[ty.kind]


def dim_word(dim: Dim) -> str:
    """`Const.dim` for a base dimension (literals only ever have one)."""
    return units.dim_label(dim)


def literal(node) -> tuple[object, Ty] | None:
    """Fold a literal node; None for a Name (an enum member, resolved by the caller)."""
    if isinstance(node, ast.Number):
        return node.value, (INT if isinstance(node.value, int) else NUM)
    if isinstance(node, ast.Quantity):
        value, dim = units.to_base(node.value, node.unit)
        return value, num(dim, isinstance(value, int))
    if isinstance(node, ast.String):
        return node.value, STR
    if isinstance(node, ast.Bool):
        return node.value, BOOL
    return None


def finite(v) -> bool:
    """`1e400` lexes as a number but is infinite in Python: no domain or budget can use it."""
    return not isinstance(v, float) or math.isfinite(v)


def fmt_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(round(v, 12))
    return str(v)


def fmt_domain(d: P.Domain | None) -> str:
    if d is None:
        return "any value"
    if d.values is not None:
        return "{" + ", ".join(fmt_value(v) for v in d.values) + "}"
    text = f"{'[' if d.lo_closed else '('}{fmt_value(d.lo)}, {fmt_value(d.hi)}{']' if d.hi_closed else ')'}"
    if d.step is not None and not (d.step == 1 and isinstance(d.step, int)):
        text += f" step {fmt_value(d.step)}"
    return text


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(node, kind: str, what: str, diags: list[Diagnostic]) -> tuple[object, Dim] | None:
    """A bound, set value or step: a number of the type's kind, else KMR211."""
    folded = literal(node)
    if folded is None or folded[1].kind != "num":
        shown = f"`{node.id}`" if isinstance(node, ast.Name) else describe(folded[1]) if folded else "this"
        diags.append(error("KMR211", node.span, f"{what} must be a number, not {shown}"))
        return None
    value, ty = folded
    if not finite(value):
        diags.append(error("KMR211", node.span, f"{what} {fmt_value(value)} is not a finite number",
                           hint="write a number below 1e308"))
        return None
    if kind == "int" and not _is_int(value):
        diags.append(error("KMR211", node.span, f"{what} of an int must be a whole number, not {fmt_value(value)}",
                           hint="write a whole number, or make the type float"))
        return None
    # a float type's values are floats even when written `[0, 1]`, so later stages
    # can tell an int knob from a float one by its values alone
    return (float(value) if kind == "float" else value), ty.dim


def build_domain(t: ast.ScalarType, step: ast.Literal | None, owner: str,
                 diags: list[Diagnostic]) -> tuple[P.Domain | None, Dim]:
    """The domain of an int/float knob or parameter (None if it has none or is broken)."""
    d = t.domain
    if d is None:
        if step is not None:
            diags.append(error("KMR207", step.span, f"`{owner}` has a step but no range",
                               hint="a step applies to a range: `in [lo, hi] step s`"))
        return None, units.NUMBER
    if isinstance(d, ast.SetDomain):
        if step is not None:
            diags.append(error("KMR207", step.span, f"`{owner}` is a set of values; a step applies only to a range",
                               hint="drop the step, or write a range `[lo, hi] step s`"))
        vals, dims = [], set()
        for node in d.values:
            got = _number(node, t.kind, "a domain value", diags)
            if got is None:
                return None, units.NUMBER
            if got[0] not in vals:
                vals.append(got[0])
            dims.add(got[1])
        if len(dims) > 1:
            diags.append(error("KMR212", d.span, f"the values of `{owner}` mix "
                               + " and ".join(sorted(units.dim_label(x) for x in dims))))
            return None, units.NUMBER
        return P.Domain(values=tuple(vals)), dims.pop()
    lo, hi = _number(d.lo, t.kind, "the lower bound", diags), _number(d.hi, t.kind, "the upper bound", diags)
    if lo is None or hi is None:
        return None, units.NUMBER
    if lo[1] != hi[1]:
        diags.append(error("KMR212", d.span, f"the bounds of `{owner}` have different units: "
                           f"{units.dim_label(lo[1])} and {units.dim_label(hi[1])}"))
        return None, units.NUMBER
    dim = lo[1]
    st = None
    if step is not None:
        got = _number(step, t.kind, "the step", diags)
        if got is None:
            return None, dim
        if got[1] != dim:
            diags.append(error("KMR212", step.span, f"the step of `{owner}` is {units.dim_label(got[1])} "
                               f"but its range is {units.dim_label(dim)}"))
            return None, dim
        st = got[0]
    domain = P.Domain(lo=lo[0], hi=hi[0], lo_closed=d.lo_closed, hi_closed=d.hi_closed, step=st)
    if _empty(domain, t.kind == "int"):
        diags.append(error("KMR205", d.span, f"the domain {fmt_domain(domain)} of `{owner}` is empty",
                           hint="make the lower bound smaller than the upper bound"
                           + (" (an open end excludes its bound)" if not (d.lo_closed and d.hi_closed) else "")))
        return None, dim
    if st is not None and not _step_ok(domain, diags, step, owner):
        return None, dim
    return domain, dim


def _empty(d: P.Domain, integral: bool = False) -> bool:
    if d.lo > d.hi or (d.lo == d.hi and not (d.lo_closed and d.hi_closed)):
        return True
    if d.step is not None and d.step > 0 and _divides(d):
        # grid points lo + i*step for i in 0..n, minus the excluded ends; counted, not
        # enumerated (an int range of 65536 values is common for batch sizes)
        n = round((d.hi - d.lo) / d.step)
        first, last = (0 if d.lo_closed else 1), (n if d.hi_closed else n - 1)
        return first > last
    if integral and d.step is None:
        lo, hi = int_bounds(d)
        return lo > hi
    return False


def int_bounds(d: P.Domain) -> tuple[int, int]:
    """The least and greatest integer of an interval (an int range without a step is
    every integer in it; `Domain.finite()` leaves it unenumerated on purpose)."""
    lo = math.ceil(d.lo) + (1 if not d.lo_closed and float(d.lo).is_integer() else 0)
    hi = math.floor(d.hi) - (1 if not d.hi_closed and float(d.hi).is_integer() else 0)
    return lo, hi


def _divides(d: P.Domain) -> bool:
    k = (d.hi - d.lo) / d.step
    return abs(k - round(k)) <= 1e-9 * max(1.0, abs(k))


def _step_ok(d: P.Domain, diags, step_node, owner: str) -> bool:
    if d.step <= 0:
        diags.append(error("KMR207", step_node.span, f"the step of `{owner}` must be positive, not {fmt_value(d.step)}"))
        return False
    if not _divides(d):
        n = int((d.hi - d.lo) // d.step)
        last = d.lo + n * d.step
        diags.append(error(
            "KMR207", step_node.span,
            f"step {fmt_value(d.step)} does not divide the range of `{owner}` "
            f"({fmt_value(d.hi)} - {fmt_value(d.lo)} = {fmt_value(round(d.hi - d.lo, 12))})",
            f"the values would run {fmt_value(d.lo)}, {fmt_value(round(d.lo + d.step, 12))}, …, "
            f"{fmt_value(round(last, 12))} and miss the upper bound",
            hint=f"choose a step that divides {fmt_value(round(d.hi - d.lo, 12))}, "
                 f"or end the range at {fmt_value(round(last, 12))}"))
        return False
    return True


def check_default(owner: str, kind: str, domain: P.Domain | None, dim: Dim, members: tuple[str, ...],
                  node: ast.Literal, diags: list[Diagnostic]) -> object:
    """The default's value (base units), or None after reporting why it is not valid."""
    if kind == "enum":
        if isinstance(node, ast.Name) and node.id in members:
            return node.id
        shown = node.id if isinstance(node, ast.Name) else fmt_value(getattr(node, "value", "?"))
        notes = did_you_mean(shown, members) if isinstance(node, ast.Name) else []
        diags.append(error("KMR206", node.span, f"default `{shown}` of `{owner}` is not one of {{{', '.join(members)}}}",
                           *notes, hint="pick one of the members as the default"))
        return None
    if isinstance(node, ast.ListLit) and not kind.startswith("list["):
        diags.append(error("KMR211", node.span, f"default of `{owner}` is a list, but `{owner}` is not a list",
                           hint="write a single value, or declare the parameter `list[int]`, `list[float]` or `list[str]`"))
        return None
    if kind.startswith("list["):
        want = kind[5:-1]
        if not isinstance(node, ast.ListLit):
            diags.append(error("KMR211", node.span, f"default of `{owner}` must be a list of {LIST_WORDS[want]}",
                               hint="write it in brackets, e.g. `= []` or `= [1, 2]`"))
            return None
        got = list_literal(node, diags)
        if got is None:
            return None
        value = coerce_list(got[0], got[1], want)
        if value is None:
            diags.append(error("KMR211", node.span, f"default of `{owner}` must be a list of {LIST_WORDS[want]}, "
                               f"not {describe(list_of(got[1]))}", hint=f"write {LIST_WORDS[want]} only"))
        return value
    folded = literal(node)
    if kind == "str":
        if folded is not None and folded[1].kind == "str":
            return folded[0]
        diags.append(error("KMR211", node.span, f"default of string `{owner}` must be a quoted string",
                           hint='write `= "..."`'))
        return None
    if kind in ("data", "model"):
        diags.append(error("KMR211", node.span, f"a {kind} parameter takes no literal default"))
        return None
    if kind == "bool":
        if folded is not None and folded[1].kind == "bool":
            return folded[0]
        diags.append(error("KMR211", node.span, f"default of bool `{owner}` must be true or false",
                           hint="write `= true` or `= false`"))
        return None
    if folded is None or folded[1].kind != "num":
        shown = f"`{node.id}`" if isinstance(node, ast.Name) else describe(folded[1]) if folded else "this"
        diags.append(error("KMR211", node.span, f"default of `{owner}` must be a number, not {shown}",
                           hint="write a number inside the domain"))
        return None
    value, ty = folded
    if not finite(value):
        diags.append(error("KMR211", node.span, f"default of `{owner}` is not a finite number",
                           hint="write a number below 1e308"))
        return None
    if ty.dim != dim:
        diags.append(error("KMR212", node.span, f"default of `{owner}` is {_dim_words(ty.dim)} "
                           f"but its domain is in {units.dim_label(dim)}",
                           hint=f"write the default with a unit of the domain, e.g. `16 {units.example_unit(dim)}`"
                           if units.example_unit(dim) else "write the default without a unit"))
        return None
    if kind == "int" and not _is_int(value):
        diags.append(error("KMR211", node.span, f"default of int `{owner}` must be a whole number, not {fmt_value(value)}",
                           hint="write a whole number inside the domain"))
        return None
    if domain is not None and not domain.contains(value):
        off_grid = domain.values is None and domain.step is not None and _in_hull(domain, value)
        diags.append(error("KMR206", node.span,
                           f"default {fmt_value(value)} of `{owner}` is "
                           + ("not on the step grid of " if off_grid else "outside ") + fmt_domain(domain),
                           hint="pick a default inside the domain"))
        return None
    return float(value) if kind == "float" and _is_int(value) else value


def _dim_words(dim: Dim) -> str:
    return "a plain number" if dim == units.NUMBER else f"in {units.dim_label(dim)}"


def _in_hull(d: P.Domain, v) -> bool:
    lo_ok = v > d.lo or (v == d.lo and d.lo_closed)
    hi_ok = v < d.hi or (v == d.hi and d.hi_closed)
    return lo_ok and hi_ok


def to_param(p: ast.Param, owner: str, diags: list[Diagnostic]) -> P.Param:
    """A rule or meter parameter; a broken domain or default is reported and dropped."""
    label = f"{owner}.{p.name}"
    t = p.type
    if isinstance(t, ast.ScalarType):
        domain, dim = build_domain(t, None, label, diags)
        if dim != units.NUMBER:
            diags.append(error("KMR212", t.span, f"parameter `{label}` must be a plain number, not {units.dim_label(dim)}",
                               hint="parameters are dimensionless; write the value in base units"))
            domain = None
        default = None if p.default is None else check_default(label, t.kind, domain, units.NUMBER, (), p.default, diags)
        return P.Param(p.name, t.kind, domain, (), default, p.default is not None, p.span)
    if isinstance(t, ast.EnumType):
        default = None if p.default is None else check_default(label, "enum", None, units.NUMBER, t.members, p.default, diags)
        return P.Param(p.name, "enum", None, t.members, default, p.default is not None, p.span)
    if isinstance(t, ast.BoolType):
        default = None if p.default is None else check_default(label, "bool", None, units.NUMBER, (), p.default, diags)
        return P.Param(p.name, "bool", None, (), default, p.default is not None, p.span)
    if isinstance(t, ast.ModelType):
        # the only default a model parameter can have is the unmodified input model
        if p.default is not None and not (isinstance(p.default, ast.Name) and p.default.id == "baseline"):
            diags.append(error("KMR211", p.default.span, f"the default of model parameter `{label}` can only be `baseline`"))
        return P.Param(p.name, "model", None, (), "baseline" if p.default is not None else None,
                       p.default is not None, p.span)
    if isinstance(t, ast.StrType):
        default = None if p.default is None else check_default(label, "str", None, units.NUMBER, (), p.default, diags)
        return P.Param(p.name, "str", None, (), default, p.default is not None, p.span)
    if isinstance(t, ast.ListType):
        default = None if p.default is None else check_default(label, f"list[{t.elem}]", None, units.NUMBER, (),
                                                                 p.default, diags)
        return P.Param(p.name, "list", None, (), default, p.default is not None, p.span, elem=t.elem)
    # the only default a data parameter can have is `none` (the step may leave it out)
    if p.default is not None and not (isinstance(p.default, ast.Name) and p.default.id == P.NO_DATA):
        diags.append(error("KMR211", p.default.span, f"the default of data parameter `{label}` can only be `none`",
                           hint="write `= none` for data a step may leave out, or drop the default"))
    return P.Param(p.name, "data", None, (), P.NO_DATA if p.default is not None else None,
                   p.default is not None, p.span)


def knob_ty(k: P.Knob) -> Ty:
    if k.type == "bool":
        return BOOL
    if k.type == "enum":
        return enum(k.members)
    return num(units.BYTES if k.dim == "bytes" else units.TIME if k.dim == "time" else units.NUMBER,
               k.type == "int")


def param_ty(p: P.Param) -> Ty:
    if p.type in ("int", "float"):
        return INT if p.type == "int" else NUM
    if p.type == "list":
        return list_of(p.elem)
    return {"bool": BOOL, "enum": enum(p.members), "data": DATA, "model": MODEL, "str": STR}[p.type]


__all__ = ["BOOL", "DATA", "ERROR", "INT", "MODEL", "NUM", "STR", "Ty", "build_domain", "check_default",
           "coerce_list", "describe", "enum", "finite", "list_literal", "list_of", "int_bounds", "fmt_domain", "fmt_value", "knob_ty", "literal", "num", "param_ty", "to_param"]
