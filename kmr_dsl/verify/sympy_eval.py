"""The verifier's evaluator of checked IR expressions over sympy (the numeric one is
kmr_dsl.core.evaluate; both are `Dispatch` tables, kmr_dsl.core.walk).

Contract: `eval_ir(expr, Ctx(knobs, params, layer, model, meter))` is the sympy value
of an IR expression in one state (knobs becoming their symbols; an enum-valued one an
`algebra.EnumValue` or `EnumKnob`); a data or model argument is an `algebra.Opaque`,
and what the state cannot express raises `algebra.NotModelled`. Stepping
(verify/stepping.py) evaluates rule clauses and effects with it, the budget lines
(verify/budget.py) their expressions over meters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kmr_dsl.core.memo import ByIdentity
from kmr_dsl.core.program import Const, DataRef, EnumLit, FieldRef, If, IExpr, KnobRef, MeterRef, NO_DATA, ModelArg, Op, \
    ParamRef
from kmr_dsl.core.walk import Dispatch, Unsupported
from kmr_dsl.verify import algebra as A
from kmr_dsl.verify.algebra import Opaque as _Opaque
from kmr_dsl.verify.knobs import KnobTable


@dataclass
class Ctx:
    knobs: KnobTable
    params: dict[str, object] = field(default_factory=dict)
    layer: dict[str, object] | None = None
    model: dict[str, object] | None = None
    meter: object = None          # callable(MeterRef) -> sympy value, for budget lines


_ARITH = {"+": A.add, "-": A.sub, "*": A.mul, "/": A.div, "min": A.min_, "max": A.max_}


def eval_ir(e: IExpr, ctx: Ctx):
    """The sympy value of an IR expression (EnumValue/EnumKnob for enum-valued ones)."""
    try:
        return _EVAL(e, ctx)
    except Unsupported as exc:
        raise A.NotModelled(str(exc)) from None


# rules are shared by every step that applies them: convert each literal once
CONSTANTS = ByIdentity("IR literals as sympy", "Const node", limit=10_000)


def _e_const(e, ctx):
    value = CONSTANTS.find(e)
    if value is None:
        value = CONSTANTS.put(e, A.EnumValue(e.value) if isinstance(e.value, str) else A.num(e.value))
    return value


def _e_knob(e, ctx):
    var = ctx.knobs.by_name.get(e.name)
    if var is None:
        raise A.NotModelled(f"knob `{e.name}` is not a knob of this pipeline")
    if var.kind == "enum":
        return A.EnumKnob(var.symbol, var.knob.members)
    return var.symbol


def _e_param(e, ctx):
    if e.name not in ctx.params:
        raise A.NotModelled(f"parameter `{e.name}` has no value")
    value = ctx.params[e.name]
    if isinstance(value, _Opaque):
        raise A.NotModelled(f"parameter `{e.name}` ({value.what}) used in a contract expression")
    return value


def _e_field(e, ctx):
    scope = ctx.layer if e.scope == "layer" else ctx.model
    if scope is None:
        raise A.NotModelled(f"`{e.scope}.{e.field}` outside a {e.scope} rule")
    if e.field not in scope:
        raise A.NotModelled(f"`{e.scope}.{e.field}` is not a state field")
    return scope[e.field]


def _e_meter(e, ctx):
    if ctx.meter is None:
        raise A.NotModelled(f"meter `{e.name}` inside a rule contract")
    return ctx.meter(e)


def _e_if(e, ctx):
    cond = eval_ir(e.cond, ctx)
    # evaluate only the branch a constant condition selects: the other may not be modelled
    if cond is A.TRUE:
        return eval_ir(e.then, ctx)
    if cond is A.FALSE:
        return eval_ir(e.orelse, ctx)
    return A.ite(cond, eval_ir(e.then, ctx), eval_ir(e.orelse, ctx))


_EVAL = Dispatch("the verifier's state model")
for _cls, _handler in {
    Const: _e_const, KnobRef: _e_knob, EnumLit: lambda e, ctx: A.EnumValue(e.member), ParamRef: _e_param,
    FieldRef: _e_field, MeterRef: _e_meter, DataRef: lambda e, ctx: _Opaque(f"data {e.name}"),
    ModelArg: lambda e, ctx: _Opaque(f"model {e.name}"), If: _e_if, Op: lambda e, ctx: _eval_op(e, ctx),
}.items():
    _EVAL.register(_cls)(_handler)


def _eval_op(e: Op, ctx: Ctx):
    op = e.op
    if op == "and":
        out = A.TRUE
        for a in e.args:
            out = A.and_(out, eval_ir(a, ctx))
            if out is A.FALSE:       # short-circuit like the runtime evaluator
                break
        return out
    if op == "or":
        out = A.FALSE
        for a in e.args:
            out = A.or_(out, eval_ir(a, ctx))
            if out is A.TRUE:
                break
        return out
    if op == "not":
        return A.not_(eval_ir(e.args[0], ctx))
    if op == "neg":
        return A.neg(eval_ir(e.args[0], ctx))
    if op in ("==", "!=") and any(isinstance(a, EnumLit) and a.member == NO_DATA for a in e.args):
        # `P != none` where the step passed data: given (data left out is the member `none`)
        refs = [a for a in e.args if isinstance(a, ParamRef)]
        if refs and isinstance(ctx.params.get(refs[0].name), _Opaque):
            return A.FALSE if op == "==" else A.TRUE
    vals = [eval_ir(a, ctx) for a in e.args]
    odd = [v for v in vals if isinstance(v, (_Opaque, A.EnumValue, A.EnumKnob))]
    if odd:
        if any(isinstance(v, _Opaque) for v in odd):
            raise A.NotModelled(f"a data or model argument used with `{op}`")
        if op not in ("==", "!="):
            raise A.NotModelled(f"an enum used with `{op}`")
        eq = A.enum_equal(vals[0], vals[1])
        return eq if op == "==" else A.not_(eq)
    if op in A.RELATIONS:
        return A.compare(op, vals[0], vals[1])
    if op in _ARITH:
        out = vals[0]
        for v in vals[1:]:
            out = _ARITH[op](out, v)
        return out
    raise A.NotModelled(f"operator `{op}`")


__all__ = ["CONSTANTS", "Ctx", "eval_ir"]
