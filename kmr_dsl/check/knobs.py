"""Knob declarations -> program.Knob.

Contract: `check_knob(cx, decl)` returns the knob, or None when its type or domain is
broken (reported: KMR205 empty domain, KMR206 default outside the domain or off its
step grid, KMR207 step, KMR211/KMR212 wrong type or unit). A knob's dimension comes from
the units of its domain (`knob mem : int in [1 MB, 64 MB]` is in bytes); its values are
stored in base units. A family's selector is remembered in `cx.families`; its instances
(`Knob.layers`) are filled in once the pipelines that use it have resolved it against
their models (kmr_dsl.check.pipelines).
"""

from __future__ import annotations

from kmr_dsl import ast, units
from kmr_dsl.core import program as P
from kmr_dsl.check import types as T
from kmr_dsl.diagnostics import error


def check_knob(cx, decl: ast.KnobDecl) -> P.Knob | None:
    t = decl.type
    if isinstance(t, ast.ScalarType):
        domain, dim = T.build_domain(t, decl.step, decl.name, cx.diags)
        if domain is None:
            return None
        default = None
        if decl.default is not None:
            default = T.check_default(decl.name, t.kind, domain, dim, (), decl.default, cx.diags)
        knob = P.Knob(decl.name, t.kind, domain, (), default, units.dim_label(dim),
                      decl.family.var if decl.family else None, (), decl.span)
    else:
        if decl.step is not None:
            cx.report(error("KMR207", decl.step.span, f"`{decl.name}` is not a number range; it takes no step",
                            hint="drop the step"))
        if isinstance(t, ast.EnumType):
            if len(set(t.members)) != len(t.members):
                cx.report(error("KMR205", t.span, f"enum `{decl.name}` lists a member twice",
                                hint="list each member once"))
            kind, members = "enum", tuple(dict.fromkeys(t.members))
        else:
            kind, members = "bool", ()
        default = None
        if decl.default is not None:
            default = T.check_default(decl.name, kind, None, units.NUMBER, members, decl.default, cx.diags)
        knob = P.Knob(decl.name, kind, None, members, default, "number",
                      decl.family.var if decl.family else None, (), decl.span)
    if decl.family is not None:
        cx.families[decl.name] = decl.family.selector
    # a knob whose default was rejected (reported) is still usable by the rest of the check
    return knob


__all__ = ["check_knob"]
