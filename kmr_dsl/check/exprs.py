"""Expressions: resolve names, infer types and units, lower to the checked IR.

Contract: `Lowerer(cx).lower(expr, scope)` returns `(IExpr, Ty)` and reports every
problem to `cx`; it never raises. On an error the type is `ERROR`, which later checks
accept silently, so one mistake yields one diagnostic.

Scopes:
- pipeline scope (steps, budgets, objectives, property checks, derived meters): a bare
  name is a knob (`KnobRef`), a meter (`MeterRef`, defaults filled; a derived meter is
  expanded in place), data (`DataRef`) or a model (`ModelArg`); `baseline.M(...)` reads
  meter M on the unmodified model; `s[l]` is a knob family indexed by the loop variable
  of an enclosing `for` over the same selector (KMR213 otherwise).
- rule scope (requires/effect): a bare name is a parameter (`ParamRef`) or a member of a
  parameter's enum (`EnumLit`); `layer.F` and `model.F` are state fields (`FieldRef`).
  Anything else there is KMR218.
Operators and their units are checked by the `Operators` mixin (kmr_dsl.check.operators).
`min(a, b, ...)`/`max(...)` are built in unless a declaration shadows them. A derived
meter is lowered once, at its declaration (cached in the context), and its IR is reused
wherever it is read; a meter reached again while it is being expanded is KMR225.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kmr_dsl import ast, units
from kmr_dsl.check import calls, walk
from kmr_dsl.core import program as P
from kmr_dsl.core import state
from kmr_dsl.check import types as T
from kmr_dsl.check.context import Context
from kmr_dsl.check.names import did_you_mean
from kmr_dsl.check.operators import Operators
from kmr_dsl.check.selectors import same_selector, show_selector
from kmr_dsl.diagnostics import error

_FIELD_TYPES = {"str": T.STR, "int": T.INT, "float": T.NUM, "bool": T.BOOL}
LAYER_FIELDS = {name: _FIELD_TYPES[t] for name, t in state.LAYER_FIELDS.items()}
MODEL_FIELDS = {name: _FIELD_TYPES[t] for name, t in state.MODEL_FIELDS.items()}
BUILTINS = ("min", "max")


@dataclass(frozen=True)
class Scope:
    kind: str                                         # "pipeline" | "rule"
    params: dict = field(default_factory=dict)        # rule scope: name -> program.Param
    whole_model: bool = False                         # rule scope: the rule has no `accepts`
    for_var: str | None = None
    for_selector: ast.Selector | None = None
    owner: str = ""                                   # rule name, for messages


PIPELINE = Scope("pipeline")


def _err(span) -> tuple:
    return P.Const(0, "number", span), T.ERROR


class Lowerer(Operators):
    def __init__(self, cx: Context):
        self.cx = cx

    # ------------------------------------------------------------ entry
    def lower(self, e, scope: Scope) -> tuple:
        method = getattr(self, "_" + type(e).__name__, None)
        if method is None:
            self.cx.report(error("KMR219", e.span, "this expression is not allowed here"))
            return _err(e.span)
        return method(e, scope)

    def show(self, node) -> str:
        text = self.cx.snippet(node.span)
        return f"`{text}`" if text else "this"

    # ------------------------------------------------------------ literals
    def _Number(self, e, scope):
        return self._Quantity(e, scope)

    def _Quantity(self, e, scope):
        value, ty = T.literal(e)
        if not T.finite(value):
            self.cx.report(error("KMR219", e.span, f"{self.show(e)} is not a finite number",
                                 hint="write a number below 1e308"))
            return _err(e.span)
        return P.Const(value, T.dim_word(ty.dim), e.span), ty

    def _String(self, e, scope):
        return P.Const(e.value, "str", e.span), T.STR

    def _Bool(self, e, scope):
        return P.Const(e.value, "bool", e.span), T.BOOL

    def _ListLit(self, e, scope):
        got = T.list_literal(e, self.cx.diags)
        if got is None:
            return _err(e.span)
        return P.Const(got[0], "list", e.span), T.list_of(got[1])

    # ------------------------------------------------------------ names
    def _Name(self, e, scope):
        if scope.kind == "rule":
            return self._rule_name(e, scope)
        cx = self.cx
        entry = cx.symbols.get(e.id)
        if entry is None:
            if scope.for_var is not None and e.id == scope.for_var:
                cx.report(error("KMR219", e.span, f"the loop variable `{e.id}` names a layer; it is only an index",
                                hint=f"index a knob family with it: `s[{e.id}]`"))
            else:
                cx.report(cx.symbols.undefined(e.id, e.span, "knob", "meter", "data", "model", what="name",
                                               extra=BUILTINS))
            return _err(e.span)
        if entry.kind == "knob":
            knob = cx.knobs.get(e.id)
            if knob is None:
                return _err(e.span)
            if knob.is_family:
                cx.report(error("KMR213", e.span, f"knob family `{e.id}` must be indexed by a layer",
                                hint=f"write `{e.id}[l]` inside `for l in layers(...)` over the family's selector"))
                return _err(e.span)
            return P.KnobRef(e.id, e.id, e.span), T.knob_ty(knob)
        if entry.kind == "meter":
            return self.meter(e.id, (), e.span, baseline=False)
        if entry.kind == "data":
            return P.DataRef(e.id, e.span), T.DATA
        if entry.kind == "model":
            return P.ModelArg(e.id, e.span), T.MODEL
        cx.report(error("KMR219", e.span, f"`{e.id}` is a {entry.kind}, not a value",
                        hint="rules are applied as pipeline steps; pipelines are named by properties"))
        return _err(e.span)

    def _rule_name(self, e, scope):
        p = scope.params.get(e.id)
        if p is not None and p.type in ("str", "list"):
            # opaque constants for the implementation: the verifier has no model of them
            self.cx.report(error("KMR218", e.span, f"`{e.id}` of rule `{scope.owner}` is a {'string' if p.type == 'str' else 'list'}"
                                 " parameter; requires and effect clauses cannot read it",
                                 hint="state the contract with numeric, bool or enum parameters"))
            return _err(e.span)
        if p is not None:
            return P.ParamRef(e.id, e.span), T.param_ty(p)
        for q in scope.params.values():
            if q.type == "enum" and e.id in q.members:
                return P.EnumLit(e.id, e.span), T.enum(q.members)
        if e.id == P.NO_DATA and any(q.type == "data" and q.has_default for q in scope.params.values()):
            return P.EnumLit(P.NO_DATA, e.span), T.enum((P.NO_DATA,))
        members = [m for q in scope.params.values() for m in q.members]
        self.cx.report(error(
            "KMR218", e.span, f"`{e.id}` in rule `{scope.owner}` is neither a parameter nor an enum member",
            *did_you_mean(e.id, list(scope.params) + members),
            hint="a bare name in a rule is one of its parameters; state fields are `layer.F` or `model.F`"))
        return _err(e.span)

    def _BaselineRef(self, e, scope):
        if scope.kind == "rule":
            self.cx.report(error("KMR218", e.span, "a rule's clauses speak about the state, not `baseline`",
                                 hint="read the state as `layer.F` or `model.F`; meters belong in budgets"))
            return _err(e.span)
        return P.ModelArg("baseline", e.span), T.MODEL

    def _LayerRef(self, e, scope):
        return self._scope_ref(e, "layer", scope)

    def _ModelRef(self, e, scope):
        return self._scope_ref(e, "model", scope)

    def _scope_ref(self, e, word, scope):
        code = "KMR218" if scope.kind == "rule" else "KMR219"
        self.cx.report(error(code, e.span, f"`{word}` alone is not a value; read one of its fields",
                             hint=f"write `{word}.FIELD`, e.g. " + ("`layer.bits`" if word == "layer" else "`model.trainable`")))
        return _err(e.span)

    # ------------------------------------------------------------ attributes and calls
    def _Attribute(self, e, scope):
        obj = e.obj
        if isinstance(obj, (ast.LayerRef, ast.ModelRef)):
            return self._field(e, "layer" if isinstance(obj, ast.LayerRef) else "model", scope)
        if isinstance(obj, ast.BaselineRef):
            if scope.kind == "rule":
                return self._BaselineRef(obj, scope)
            return self._baseline_meter(e.name, (), e.span)
        code = "KMR218" if scope.kind == "rule" else "KMR219"
        self.cx.report(error(code, e.span, f"{self.show(e)}: only `baseline.METER`, `layer.FIELD` and "
                             "`model.FIELD` have attributes"))
        return _err(e.span)

    def _field(self, e, where, scope):
        cx = self.cx
        if scope.kind != "rule":
            cx.report(error("KMR219", e.span, f"`{where}.{e.name}` is a state field; it is only meaningful in a rule",
                            hint="budgets and objectives read meters such as `size` or `accuracy(test)`"))
            return _err(e.span)
        fields = LAYER_FIELDS if where == "layer" else MODEL_FIELDS
        if e.name not in fields:
            other = MODEL_FIELDS if where == "layer" else LAYER_FIELDS
            notes = [f"`{e.name}` is a {'model' if where == 'layer' else 'per-layer'} field: write "
                     f"`{'model' if where == 'layer' else 'layer'}.{e.name}`"] if e.name in other \
                else did_you_mean(e.name, fields)
            cx.report(error("KMR218", e.span, f"unknown {where} state field `{e.name}`", *notes,
                            f"{where} fields: " + ", ".join(fields)))
            return _err(e.span)
        if where == "layer" and scope.whole_model:
            cx.report(error("KMR218", e.span, f"rule `{scope.owner}` has no `accepts`, so it has no `layer`",
                            hint="add `accepts KIND, ...` or use `model.` fields only"))
            return _err(e.span)
        return P.FieldRef(where, e.name, e.span), fields[e.name]

    def _Call(self, e, scope):
        cx = self.cx
        f = e.func
        if isinstance(f, ast.Name) and f.id in BUILTINS and cx.symbols.get(f.id) is None:
            return self._minmax(e, f.id, scope)
        if scope.kind == "rule":
            cx.report(error("KMR218", e.span, f"{self.show(f)} cannot be called in a rule; only min and max are built in"))
            return _err(e.span)
        if isinstance(f, ast.Attribute) and isinstance(f.obj, ast.BaselineRef):
            return self._baseline_meter(f.name, e.args, e.span)
        if isinstance(f, ast.Name):
            entry = cx.symbols.get(f.id)
            if entry is not None and entry.kind == "meter":
                return self.meter(f.id, e.args, e.span, baseline=False)
            if entry is None:
                cx.report(cx.symbols.undefined(f.id, f.span, "meter", what="meter", extra=BUILTINS))
            else:
                cx.report(error("KMR219", f.span, f"`{f.id}` is a {entry.kind}; only meters, min and max can be called"))
            return _err(e.span)
        cx.report(error("KMR219", e.span, f"{self.show(f)} cannot be called"))
        return _err(e.span)

    def _minmax(self, e, fn, scope):
        if len(e.args) < 2 or any(a.name is not None for a in e.args):
            self.cx.report(error("KMR219", e.span, f"`{fn}` takes two or more positional arguments"))
            return _err(e.span)
        parts = [self.lower(a.value, scope) for a in e.args]
        ty = parts[0][1]
        for (ir, t), a in zip(parts[1:], e.args[1:]):
            ty = self._same_num(ty, t, e.args[0].value, a.value, e.span, fn)
        return P.Op(fn, tuple(ir for ir, _ in parts), e.span), ty

    def _baseline_meter(self, name, args, span):
        cx = self.cx
        entry = cx.symbols.get(name)
        if entry is None or entry.kind != "meter":
            cx.report(cx.symbols.undefined(name, span, "meter", what="meter"))
            return _err(span)
        return self.meter(name, args, span, baseline=True)

    def meter(self, name, args, span, baseline):
        """A meter read: builtin (args bound, defaults filled) or derived (expanded)."""
        cx = self.cx
        builtin = cx.meters.get(name)
        if builtin is None:
            if args:
                cx.report(error("KMR208", span, f"derived meter `{name}` takes no arguments"))
                return _err(span)
            return self.derived(name, span, baseline)
        bound = calls.meter_args(cx, builtin, args, span)
        if bound is None:
            return _err(span)
        dim = units.BYTES if builtin.dim == "bytes" else units.TIME if builtin.dim == "time" else units.NUMBER
        return P.MeterRef(name, bound, baseline, builtin.analytic, span), T.num(dim)

    def derived(self, name, span, baseline):
        cx = self.cx
        if name in cx.deriving:
            cycle = cx.deriving[cx.deriving.index(name):] + [name]
            cx.report(error("KMR225", span, f"meter `{name}` is defined in terms of itself",
                            "cycle: " + " -> ".join(cycle),
                            hint="define one of these meters without the others"))
            return _err(span)
        if name not in cx.derived:
            decl = cx.symbols.decl(name)
            if not isinstance(decl, ast.DerivedMeter):   # a broken builtin meter
                return _err(span)
            cx.deriving.append(name)
            try:
                cx.derived[name] = self.lower(decl.expr, PIPELINE)
            finally:
                cx.deriving.pop()
        ir, ty = cx.derived[name]
        if ty.is_error:
            return _err(span)
        return (walk.on_baseline(ir) if baseline else ir), ty

    # ------------------------------------------------------------ knob families
    def _Index(self, e, scope):
        cx = self.cx
        if scope.kind == "rule" or not isinstance(e.obj, ast.Name):
            cx.report(error("KMR218" if scope.kind == "rule" else "KMR219", e.span,
                            f"{self.show(e)}: only a knob family can be indexed, as `s[l]`"))
            return _err(e.span)
        name = e.obj.id
        entry = cx.symbols.get(name)
        if entry is None or entry.kind != "knob":
            cx.report(cx.symbols.undefined(name, e.obj.span, "knob", what="knob"))
            return _err(e.span)
        knob = cx.knobs.get(name)
        if knob is None:
            return _err(e.span)
        if not knob.is_family:
            cx.report(error("KMR219", e.span, f"`{name}` is a single knob, not a family; write `{name}` without an index",
                            hint=f"declare a family as `knob {name}[l in layers(KIND)] : ...`"))
            return _err(e.span)
        family_sel = cx.families[name]
        if scope.for_var is None:
            msg, notes = f"knob family `{name}` is indexed outside a `for` block", ()
        elif not (isinstance(e.index, ast.Name) and e.index.id == scope.for_var):
            msg = f"`{name}` must be indexed by the loop variable `{scope.for_var}`"
            notes = (f"{self.show(e.index)} is not the loop variable",)
        elif not same_selector(family_sel, scope.for_selector):
            msg = f"the `for` block iterates a different selector than knob family `{name}`"
            notes = (f"`{name}` is declared over {show_selector(family_sel)}",
                     f"the `for` block iterates {show_selector(scope.for_selector)}")
        else:
            return P.KnobRef(walk.family_ref(name), name, e.span), T.knob_ty(knob)
        cx.report(error("KMR213", e.span, msg, *notes,
                        hint=f"index `{name}` inside `for l in {show_selector(family_sel)} {{ ... }}`"))
        return _err(e.span)


__all__ = ["LAYER_FIELDS", "Lowerer", "MODEL_FIELDS", "PIPELINE", "Scope"]
