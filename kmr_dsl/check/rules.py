"""Rule and builtin-meter declarations -> program.Rule / program.Meter.

Contract: `check_rule(lowerer, decl)` always returns a `Rule` (best effort, so steps
that use a broken rule are still checked) and reports KMR218 for what is wrong with the
declaration itself: a repeated parameter, more than one `accepts` or `impl`, no `impl`,
an impl that is not "module:function", a `requires` that is not a condition, an effect
on an unknown, read-only (`kind`, `params`) or repeated field, an effect whose value
has the wrong type, `layer.F` in a rule without `accepts`, and (through the rule scope
of kmr_dsl.check.exprs) unknown fields and bare names that are neither parameters nor
enum members. Parameter domains and defaults are checked like knobs' (KMR205-KMR207).
`check_meter(decl, cx)` builds a builtin meter (`count` and `ratio` are numbers).
"""

from __future__ import annotations

import re

from kmr_dsl import ast, units
from kmr_dsl.core import program as P
from kmr_dsl.check import types as T
from kmr_dsl.check.exprs import LAYER_FIELDS, MODEL_FIELDS, Scope
from kmr_dsl.check.names import did_you_mean, name_span
from kmr_dsl.diagnostics import error

# The layer fields an effect may not assign: the kind is the module's class, and the
# parameter count follows from the shape, rank and adapters the other fields describe.
READ_ONLY = ("kind", "params")
IMPL = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def _params(cx, params: tuple[ast.Param, ...], owner: str) -> tuple[P.Param, ...]:
    out, seen = [], set()
    for p in params:
        if p.name in seen:
            cx.report(error("KMR218", p.span, f"parameter `{p.name}` of `{owner}` is declared twice",
                            hint="rename or remove one of them"))
            continue
        seen.add(p.name)
        out.append(T.to_param(p, owner, cx.diags))
    return tuple(out)


def _impl_ok(cx, path: str, span, what: str) -> None:
    if not IMPL.fullmatch(path):
        cx.report(error("KMR218", span, f"{what} impl \"{path}\" is not of the form \"module:function\"",
                        hint='write e.g. impl "my_rules:apply"'))


def check_rule(lowerer, decl: ast.RuleDecl) -> P.Rule:
    cx = lowerer.cx
    params = _params(cx, decl.params, decl.name)
    accepts = [c for c in decl.clauses if isinstance(c, ast.AcceptsClause)]
    impls = [c for c in decl.clauses if isinstance(c, ast.ImplClause)]
    for extra in accepts[1:]:
        cx.report(error("KMR218", extra.span, f"rule `{decl.name}` has more than one `accepts` clause",
                        hint="list every kind in one clause: `accepts Linear, Conv2d`"))
    for extra in impls[1:]:
        cx.report(error("KMR218", extra.span, f"rule `{decl.name}` has more than one `impl` clause",
                        hint="keep one `impl`; a rule has one implementation"))
    if not impls:
        cx.report(error("KMR218", name_span(decl, cx.text(decl.span.file)), f"rule `{decl.name}` has no `impl` clause",
                        hint='bind the Python function that performs it: impl "module:function"'))
    else:
        _impl_ok(cx, impls[0].path, impls[0].span, f"rule `{decl.name}`")
    kinds = tuple(dict.fromkeys(k for c in accepts for k in c.kinds)) if accepts else None
    scope = Scope("rule", {p.name: p for p in params}, whole_model=kinds is None, owner=decl.name)
    requires, effects, targets = [], [], {}
    for clause in decl.clauses:
        if isinstance(clause, ast.RequiresClause):
            ir, ty = lowerer.lower(clause.expr, scope)
            if not ty.is_error and ty.kind != "bool":
                cx.report(error("KMR218", clause.expr.span, f"`requires` needs a condition, not {T.describe(ty)}",
                                hint="write a comparison or a bool, e.g. `requires layer.bits >= 16`"))
            requires.append(ir)
        elif isinstance(clause, ast.EffectClause):
            effect = _effect(lowerer, decl, clause, scope, targets)
            if effect is not None:
                effects.append(effect)
    return P.Rule(decl.name, params, kinds, tuple(requires), tuple(effects),
                  impls[0].path if impls else "", decl.span)


def _effect(lowerer, decl, clause: ast.EffectClause, scope: Scope, targets: dict) -> P.Effect | None:
    cx = lowerer.cx
    t = clause.target
    fields = LAYER_FIELDS if t.scope == "layer" else MODEL_FIELDS
    ir, ty = lowerer.lower(clause.expr, scope)
    if t.field not in fields:
        cx.report(error("KMR218", t.span, f"an effect cannot assign unknown {t.scope} field `{t.field}`",
                        *did_you_mean(t.field, fields), f"{t.scope} fields: " + ", ".join(fields)))
        return None
    if t.scope == "layer" and scope.whole_model:
        cx.report(error("KMR218", t.span, f"rule `{decl.name}` has no `accepts`, so it cannot change `layer.{t.field}`",
                        hint="add `accepts KIND, ...` or change a `model.` field"))
        return None
    if t.scope == "layer" and t.field in READ_ONLY:
        cx.report(error("KMR218", t.span, f"`layer.{t.field}` is read from the model; an effect cannot assign it",
                        hint="change out_features, in_features, density, bits, rank, adapter_rank or frozen instead"))
        return None
    key = (t.scope, t.field)
    if key in targets:
        cx.report(error("KMR218", t.span, f"`{t.scope}.{t.field}` is assigned twice in rule `{decl.name}`",
                        f"first assigned at {targets[key]}", hint="combine them into one effect with `if ... then ... else ...`"))
        return None
    targets[key] = t.span
    want = fields[t.field]
    if not ty.is_error:
        if want.kind != ty.kind or (ty.kind == "num" and ty.dim != units.NUMBER):
            cx.report(error("KMR218", clause.expr.span, f"`{t.scope}.{t.field}` is {T.describe(want).replace('an int', 'a number')}, "
                            f"but the effect gives {T.describe(ty)}"))
            return None
    return P.Effect(t.scope, t.field, ir, clause.span)


def check_meter(cx, decl: ast.BuiltinMeter) -> P.Meter:
    params = _params(cx, decl.params, decl.name)
    _impl_ok(cx, decl.impl, decl.span, f"meter `{decl.name}`")
    dim = units.dim_label(units.meter_dim(decl.dimension))
    return P.Meter(decl.name, params, dim, decl.kind == "analytic", decl.impl, decl.span)


__all__ = ["READ_ONLY", "check_meter", "check_rule"]
