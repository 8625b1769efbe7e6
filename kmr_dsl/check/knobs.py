"""Knob declarations -> program.Knob.

Contract: `check_knob(cx, decl)` returns the knob, or None when its type or domain is
broken (reported: KMR205 empty domain, KMR206 default outside the domain or off its
step grid, KMR207 step, KMR211/KMR212 wrong type or unit). A knob's dimension comes from
the units of its domain (`knob mem : int in [1 MB, 64 MB]` is in bytes); its values are
stored in base units. A family's selector is remembered in `cx.families`; its instances
(`Knob.layers`) are filled in once the pipelines that use it have resolved it against
their models (kmr_dsl.check.pipelines).

`unused_families(cx, file)` warns (KMR214, a warning: nothing depends on the family)
about a family of `file` that no pipeline uses and whose selector matches no layer of
any model the check loaded: most likely a typo in the selector, which would otherwise
pass silently. A used family is checked by its `for` loop (KMR214, an error).
"""

from __future__ import annotations

import dataclasses

from kmr_dsl import ast, units
from kmr_dsl.check import selectors
from kmr_dsl.core import program as P
from kmr_dsl.check import types as T
from kmr_dsl.diagnostics import error, warning


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


def _referenced_families(decls) -> set[str]:
    """Names indexed anywhere (`s[l]`) or listed in a property's `forall`, found with an
    explicit stack over the AST's dataclass fields."""
    found: set[str] = set()
    stack = list(decls)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Index) and isinstance(node.obj, ast.Name):
            found.add(node.obj.id)
        elif isinstance(node, ast.PropertyDecl):
            found.update(node.forall)
        if isinstance(node, (tuple, list)):
            stack.extend(node)
        elif dataclasses.is_dataclass(node) and not isinstance(node, type):
            stack.extend(getattr(node, f.name) for f in dataclasses.fields(node) if f.compare)
    return found


def unused_families(cx, file: str) -> None:
    loaded = {name: facts for name, facts in cx.loaded_facts().items() if facts is not None}
    if not loaded:
        return
    used = _referenced_families([e.decl for e in cx.symbols.entries.values()])
    for name, knob in cx.knobs.items():
        sel = cx.families.get(name)
        if sel is None or name in used or name in cx.family_layers or knob.span.file != file:
            continue
        if any(selectors.match(facts, sel.kinds, sel) for facts in loaded.values()):
            continue
        model, facts = next(iter(loaded.items()))
        which = f"model `{model}`" if len(loaded) == 1 else f"any of the models {', '.join(sorted(loaded))}"
        cx.report(warning("KMR214", sel.span, f"the selector of knob family `{name}` matches no layer of {which}",
                          "no pipeline uses the family yet, so nothing fails now",
                          *selectors.model_notes(facts, model, sel.kinds, sel.names is not None),
                          hint="fix the selector's kinds or name pattern, or remove the family"))


__all__ = ["check_knob", "unused_families"]
