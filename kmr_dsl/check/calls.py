"""Arguments of rule steps and meter reads: binding, types and domains.

Contract:
- `bind(...)` maps a call's arguments to parameters: positional ones in order (before
  any named one), named ones by name. Unknown or repeated names are KMR208 (with a
  "did you mean" and the parameter list); a parameter without a default that is not
  given is KMR209.
- `step_args(...)` checks every argument of a rule step and returns every parameter,
  defaults filled in, as IR in parameter order. An argument of the wrong kind is KMR211
  (a string for a float, a float knob for an int, data for a model, …); a value outside
  the parameter's domain is KMR210 — for a literal (or a constant expression) its value,
  for a knob its whole domain (a knob in [0, 1] cannot feed `amount in [0, 1)`), for
  arithmetic over knobs its interval bounds when they provably leave the domain. Enum
  parameters take a member by name (`method = channel`; a member of the parameter's
  own enum wins over any declaration of that name) or an enum knob whose members the
  parameter accepts. `str` and `list[T]` parameters take literals only (a string; a
  list literal of T, non-empty unless the default is `[]`): KMR211 for a wrong kind,
  KMR242 for an empty or mixed list.
- `meter_args(...)` does the same for a meter read, whose arguments are literals or data
  names, and returns them as sorted (name, value) pairs, defaults filled in.
"""

from __future__ import annotations

from kmr_dsl import ast, units
from kmr_dsl.check import ranges
from kmr_dsl.core import program as P
from kmr_dsl.check import types as T
from kmr_dsl.check.names import describe_kind, did_you_mean
from kmr_dsl.diagnostics import error


TRAINING_OPTIONS = ("optimizer", "momentum", "weight_decay", "schedule", "epochs", "lr", "batch_size")


def bind(cx, params: tuple[P.Param, ...], args: tuple[ast.Arg, ...], callee: str, span) -> dict[str, ast.Arg]:
    given: dict[str, ast.Arg] = {}
    names = [p.name for p in params]
    listing = f"`{callee}` takes: " + (", ".join(names) if names else "no arguments")
    seen_named = False
    for i, arg in enumerate(args):
        if arg.name is None:
            if seen_named:
                cx.report(error("KMR208", arg.span, f"positional argument after a named one in `{callee}`",
                                hint="name the argument: `NAME = value`"))
                continue
            if i >= len(params):
                cx.report(error("KMR208", arg.span, f"`{callee}` takes {len(params)} argument(s); this one is extra",
                                listing))
                continue
            name = params[i].name
        else:
            seen_named = True
            name = arg.name
            if name not in names:
                trains = [r for r, rule in getattr(cx, "rules", {}).items() if rule.param(name) is not None
                          and rule.param("data") is not None] if name in TRAINING_OPTIONS else []
                notes = ([f"`{callee}` does not train; `{name}` is an option of the training rules: "
                          + ", ".join(sorted(trains))] if trains else [])
                cx.report(error("KMR208", arg.span, f"`{callee}` has no parameter `{name}`",
                                *did_you_mean(name, names), listing, *notes,
                                hint=f"pass `{name}` to a training step (e.g. finetune) instead" if trains else None))
                continue
        if name in given:
            cx.report(error("KMR208", arg.span, f"argument `{name}` of `{callee}` is given twice",
                            hint="pass each argument once"))
            continue
        given[name] = arg
    for p in params:
        if p.name not in given and not p.has_default:
            cx.report(error("KMR209", span, f"`{callee}` needs the argument `{p.name}`",
                            f"`{p.name}` is {_param_words(p)} and has no default",
                            hint=f"pass it: `{callee}({p.name} = ...)`"))
    return given


def _param_words(p: P.Param) -> str:
    if p.type in ("int", "float"):
        return f"{'an' if p.type == 'int' else 'a'} {p.type} in {T.fmt_domain(p.domain)}" if p.domain else f"a {p.type}"
    if p.type == "enum":
        return "one of {" + ", ".join(p.members) + "}"
    if p.type == "list":
        return "a list of " + T.LIST_WORDS[p.elem]
    return {"bool": "a bool", "data": "data", "model": "a model", "str": "a string"}[p.type]


def default_ir(p: P.Param, span):
    if p.type == "enum":
        return P.EnumLit(p.default, span)
    if p.type == "model":
        return P.ModelArg("baseline", span)
    if p.type == "data":
        return P.EnumLit(P.NO_DATA, span)
    if p.type in ("str", "list"):
        return P.Const(p.default, p.type, span)
    return P.Const(p.default, "bool" if p.type == "bool" else "number", span)


# ---------------------------------------------------------------- rule steps

def step_args(lowerer, rule: P.Rule, args: tuple[ast.Arg, ...], span, scope) -> tuple | None:
    cx = lowerer.cx
    given = bind(cx, rule.params, args, rule.name, span)
    out, ok = [], True
    for p in rule.params:
        arg = given.get(p.name)
        if arg is None:
            if not p.has_default:
                ok = False
            elif p.default is not None:
                out.append((p.name, default_ir(p, p.span)))
            else:
                ok = False          # the parameter's own default was broken (reported)
            continue
        value = _step_value(lowerer, rule.name, p, arg.value, scope)
        if value is None:
            ok = False
        else:
            out.append((p.name, value))
    return tuple(out) if ok else None


def _wrong(cx, node, callee, p, shown, what, hint=None):
    cx.report(error("KMR211", node.span, f"`{p.name}` of `{callee}` takes {_param_words(p)}, but {shown} is {what}",
                    hint=hint))


def _step_value(lowerer, callee: str, p: P.Param, node, scope):
    cx = lowerer.cx
    shown = lowerer.show(node)
    if p.type == "enum":
        return _enum_value(lowerer, callee, p, node, scope)
    if p.type in ("str", "list"):
        return _opaque_value(lowerer, callee, p, node, scope)
    if p.type == "data" and isinstance(node, ast.Name) and cx.symbols.kind(node.id) is None:
        cx.report(cx.symbols.undefined(node.id, node.span, "data", what="data"))
        return None
    ir, ty = lowerer.lower(node, scope)
    if ty.is_error:
        return None
    if p.type == "data":
        if ty.kind != "data":
            _wrong(cx, node, callee, p, shown, T.describe(ty), "pass a `data` declaration's name")
            return None
        return ir
    if p.type == "model":
        if ty.kind != "model":
            _wrong(cx, node, callee, p, shown, T.describe(ty), "pass a `model` declaration's name or `baseline`")
            return None
        return ir
    if p.type == "bool":
        if ty.kind != "bool":
            _wrong(cx, node, callee, p, shown, T.describe(ty), "pass `true`, `false` or a bool knob")
            return None
        return ir
    if ty.kind != "num":
        _wrong(cx, node, callee, p, shown, T.describe(ty))
        return None
    if ty.dim != units.NUMBER:
        cx.report(error("KMR212", node.span, f"`{p.name}` of `{callee}` is a plain number, but {shown} is "
                        f"{units.dim_label(ty.dim)}", hint="pass a dimensionless value"))
        return None
    if p.type == "int" and not ty.integral:
        _wrong(cx, node, callee, p, shown, "not a whole number" if not isinstance(ir, P.KnobRef) else "a float knob",
               "pass a whole number or an int knob")
        return None
    if p.domain is not None and not _within(cx, callee, p, node, ir, shown):
        return None
    if p.type == "float" and isinstance(ir, P.Const) and isinstance(ir.value, int):
        return P.Const(float(ir.value), ir.dim, ir.span)     # `amount = 0` reaches the impl as 0.0
    return ir


def _opaque_value(lowerer, callee, p, node, scope):
    """A `str` or `list[T]` argument: a constant (a string literal; a list literal of
    the element type, non-empty unless the parameter's default is `[]`)."""
    cx = lowerer.cx
    shown = lowerer.show(node)
    if p.type == "str":
        if isinstance(node, ast.String):
            return P.Const(node.value, "str", node.span)
        if isinstance(node, ast.ListLit):
            _wrong(cx, node, callee, p, shown, "a list", "pass one quoted string")
            return None
        ir, ty = lowerer.lower(node, scope)
        if not ty.is_error:
            _wrong(cx, node, callee, p, shown, T.describe(ty), f'pass a quoted string: `{p.name} = "..."`')
        return None
    if not isinstance(node, ast.ListLit):
        if isinstance(node, (ast.String, ast.Number, ast.Unary)):
            _wrong(cx, node, callee, p, shown, "a single value", f"put it in brackets: `{p.name} = [{cx.snippet(node.span)}]`")
        else:
            ir, ty = lowerer.lower(node, scope)
            if not ty.is_error:
                _wrong(cx, node, callee, p, shown, T.describe(ty), "write a list literal `[...]`")
        return None
    got = T.list_literal(node, cx.diags)
    if got is None:
        return None
    values, elem = got
    if not values and p.default != ():
        cx.report(error("KMR242", node.span, f"`{p.name}` of `{callee}` needs at least one item",
                        hint=f"list the {T.LIST_WORDS[p.elem]} it should use, or leave `{p.name}` out"
                             + (" to keep its default" if p.has_default else "")))
        return None
    value = T.coerce_list(values, elem, p.elem)
    if value is None:
        _wrong(cx, node, callee, p, shown, T.describe(T.list_of(elem)), f"write {T.LIST_WORDS[p.elem]} only")
        return None
    return P.Const(value, "list", node.span)


def _enum_value(lowerer, callee, p, node, scope):
    cx = lowerer.cx
    listing = "{" + ", ".join(p.members) + "}"
    if isinstance(node, ast.String):
        _wrong(cx, node, callee, p, lowerer.show(node), "a string",
               f"write the member without quotes: `{p.name} = {node.value}`")
        return None
    if isinstance(node, ast.Name) and node.id in p.members:
        # a member of the parameter's own enum wins over a declaration of the same name
        # elsewhere (a pipeline called `channel` must not hide `method = channel`)
        return P.EnumLit(node.id, node.span)
    if isinstance(node, ast.Name):
        entry = cx.symbols.get(node.id)
        if entry is None:
            cx.report(error("KMR210", node.span, f"`{node.id}` is not a value of `{p.name}` of `{callee}`",
                            *did_you_mean(node.id, p.members), f"`{p.name}` takes one of {listing}"))
            return None
    ir, ty = lowerer.lower(node, scope)
    if ty.is_error:
        return None
    if ty.kind != "enum":
        _wrong(cx, node, callee, p, lowerer.show(node), T.describe(ty), f"pass a member of {listing} by name")
        return None
    extra = [m for m in ty.members if m not in p.members]
    if extra:
        cx.report(error("KMR210", node.span, f"{lowerer.show(node)} can be `{extra[0]}`, which `{p.name}` of "
                        f"`{callee}` does not accept", f"`{p.name}` takes one of {listing}",
                        hint="declare the knob with only the members the parameter accepts"))
        return None
    return ir


# ---------------------------------------------------------------- domains

def _within(cx, callee, p: P.Param, node, ir, shown) -> bool:
    d = p.domain
    label = f"`{p.name}` of `{callee}` takes {T.fmt_domain(d)}"
    if isinstance(ir, P.KnobRef):
        knob = cx.knobs.get(ir.knob)
        if knob is None or knob.domain is None:
            return True
        witness = escape(knob, d)
        if witness is None:
            return True
        cx.report(error("KMR210", node.span, f"knob `{ir.knob}` can leave the domain of `{p.name}` of `{callee}`",
                        f"`{ir.knob}` ranges over {T.fmt_domain(knob.domain)}; {label}",
                        f"e.g. {ir.knob} = {T.fmt_value(witness)} is outside",
                        hint="narrow the knob's domain to fit the parameter"))
        return False
    b = bounds(cx, ir)
    if b is None:
        return True
    lo, hi = b
    if lo == hi:
        if d.contains(lo) or (p.type == "float" and d.contains(float(lo))):
            return True
        what = shown if _is_literal(node) else f"{shown} = {T.fmt_value(lo)}"
        cx.report(error("KMR210", node.span, f"{what} is outside the domain of `{p.name}` of `{callee}`", label,
                        hint="pass a value inside the parameter's domain"))
        return False
    hull_lo = min(d.values) if d.values is not None else d.lo
    hull_hi = max(d.values) if d.values is not None else d.hi
    bad = lo if lo < hull_lo else hi if hi > hull_hi else None
    if bad is None:
        return True
    # intervals forget that two occurrences of a knob are one value: split the knobs' box
    refined = ranges.refine(cx.knobs, ir, hull_lo, hull_hi, _lo_closed(d), _hi_closed(d))
    if refined.verdict == "inside":
        return True
    if refined.verdict == "outside":
        at = ", ".join(f"{k} = {T.fmt_value(v)}" for k, v in refined.setting.items())
        cx.report(error("KMR210", node.span, f"{shown} is {T.fmt_value(refined.value)} at {at}, outside the domain "
                        f"of `{p.name}` of `{callee}`", label, hint="narrow the knobs it uses or rewrite the expression"))
        return False
    cx.report(error("KMR210", node.span, f"{shown} can reach {T.fmt_value(bad)}, outside the domain of "
                    f"`{p.name}` of `{callee}`", label, hint="narrow the knobs it uses or rewrite the expression"))
    return False


def _is_literal(node) -> bool:
    while isinstance(node, ast.Unary) and node.op == "-":
        node = node.operand
    return isinstance(node, (ast.Number, ast.Quantity))


def escape(knob: P.Knob, d: P.Domain):
    """A value of the knob outside the domain `d`, or None if its domain fits inside."""
    vals = knob.values()
    if vals is not None:
        return next((v for v in vals if not d.contains(v)), None)
    k = knob.domain
    if knob.type == "int" and k is not None and k.lo is not None:
        lo, hi = T.int_bounds(k)
        if hi - lo <= 100_000:        # every integer the knob takes, when that is cheap
            return next((v for v in range(lo, hi + 1) if not d.contains(v)), None)
    if k is None or k.lo is None:
        return None
    if k.lo < _lo(d) or (k.lo == _lo(d) and k.lo_closed and not _lo_closed(d)):
        return k.lo if k.lo_closed else (k.lo + min(_lo(d), k.hi)) / 2
    if k.hi > _hi(d) or (k.hi == _hi(d) and k.hi_closed and not _hi_closed(d)):
        return k.hi if k.hi_closed else (k.hi + max(_hi(d), k.lo)) / 2
    if d.values is not None or d.step is not None:
        # a continuous knob inside a finite domain still takes the values in between
        for v in (k.lo, k.hi, (k.lo + k.hi) / 2, k.lo + (k.hi - k.lo) * 0.3719):
            if not d.contains(v):
                return v
    return None


def _lo(d):
    return min(d.values) if d.values is not None else d.lo


def _hi(d):
    return max(d.values) if d.values is not None else d.hi


def _lo_closed(d):
    return True if d.values is not None else d.lo_closed


def _hi_closed(d):
    return True if d.values is not None else d.hi_closed


def bounds(cx, ir) -> tuple[float, float] | None:
    """Interval bounds of a numeric IR expression over the knobs' domains (None: unknown)."""
    def knob_bounds(ref):
        knob = cx.knobs.get(ref.knob)
        if knob is None or knob.type not in ("int", "float") or knob.domain is None:
            return None
        vals = knob.values()
        return (min(vals), max(vals)) if vals else (_lo(knob.domain), _hi(knob.domain))
    return ranges.interval(ir, knob_bounds)


# ---------------------------------------------------------------- meters

def meter_args(cx, meter: P.Meter, args, span) -> tuple | None:
    given = bind(cx, meter.params, args, meter.name, span)
    out, ok = [], True
    for p in meter.params:
        arg = given.get(p.name)
        if arg is None:
            if p.has_default and p.default is not None:
                out.append((p.name, P.ModelArg("baseline", span) if p.type == "model" else p.default))
            else:
                ok = False
            continue
        value = _meter_value(cx, meter.name, p, arg.value)
        if value is None:
            ok = False
        else:
            out.append((p.name, value))
    return tuple(sorted(out, key=lambda kv: kv[0])) if ok else None


def _meter_value(cx, callee: str, p: P.Param, node):
    if p.type in ("data", "model"):
        if isinstance(node, ast.Name) and cx.symbols.kind(node.id) == p.type:
            return P.DataRef(node.id, node.span) if p.type == "data" else P.ModelArg(node.id, node.span)
        if isinstance(node, ast.BaselineRef) and p.type == "model":
            return P.ModelArg("baseline", node.span)
        if isinstance(node, ast.Name) and cx.symbols.kind(node.id) is None:
            cx.report(cx.symbols.undefined(node.id, node.span, p.type, what=p.type))
            return None
        kind = cx.symbols.kind(node.id) if isinstance(node, ast.Name) else None
        what = f"`{node.id}` is {describe_kind(kind)}" if kind else f"this is not the name of {describe_kind(p.type)}"
        cx.report(error("KMR211", node.span, f"`{p.name}` of meter `{callee}` takes {_param_words(p)}, but {what}",
                        hint=f"pass the name of a `{p.type}` declaration"))
        return None
    if p.type == "enum":
        if isinstance(node, ast.Name) and node.id in p.members:
            return node.id
        cx.report(error("KMR210", node.span, f"`{p.name}` of meter `{callee}` takes one of {{{', '.join(p.members)}}}"))
        return None
    folded = T.literal(node.operand) if isinstance(node, ast.Unary) and node.op == "-" else T.literal(node)
    if folded is None or folded[1].kind not in ("num", "bool"):
        cx.report(error("KMR211", node.span, f"`{p.name}` of meter `{callee}` takes a literal {p.type}",
                        hint="meter arguments are written as literals, e.g. `latency(batch = 8)`"))
        return None
    value, ty = folded
    if isinstance(node, ast.Unary):
        value = -value
    if (p.type == "bool") != (ty.kind == "bool") or (p.type == "int" and not ty.integral):
        cx.report(error("KMR211", node.span, f"`{p.name}` of meter `{callee}` takes {_param_words(p)}, "
                        f"not {T.describe(ty)}"))
        return None
    if ty.kind == "num" and ty.dim != units.NUMBER:
        cx.report(error("KMR212", node.span, f"`{p.name}` of meter `{callee}` is a plain number, not "
                        f"{units.dim_label(ty.dim)}"))
        return None
    if p.domain is not None and not p.domain.contains(value):
        cx.report(error("KMR210", node.span, f"{T.fmt_value(value)} is outside the domain of `{p.name}` of meter "
                        f"`{callee}`", f"`{p.name}` takes {T.fmt_domain(p.domain)}"))
        return None
    return float(value) if p.type == "float" else value


__all__ = ["bind", "bounds", "default_ir", "escape", "meter_args", "step_args"]
