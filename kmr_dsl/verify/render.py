"""KMR text for what the verifier reports: IR expressions, constraints, knob settings.

Contract: `render_ir(expr)` writes a checked-program expression back as KMR source
(minimal parentheses, quantities with their units); `render_constraint` prefers the
program's own source text when the span points into a file the program holds.
`render_setting` writes a setting as `bits = 8, s[fc1] = 0.5`, compressing a family
whose instances all share a value to `s[l] = 0.5 for all 12 layers`.
"""

from __future__ import annotations

from kmr_dsl.core.program import (Const, Constraint, DataRef, EnumLit, FieldRef, If, KnobRef, MeterRef, ModelArg,
                                   Op, ParamRef)

_PREC = {"or": 1, "and": 2, "not": 3, "<=": 4, "<": 4, ">=": 4, ">": 4, "==": 4, "!=": 4,
         "+": 5, "-": 5, "*": 6, "/": 6, "neg": 7}
_ATOM = 9


def _number(v) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(v) if isinstance(v, float) else str(v)


def _quantity(value, dim: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if dim == "bytes":
        for unit, k in (("GB", 10 ** 9), ("MB", 10 ** 6), ("KB", 10 ** 3)):
            if value >= k and (value / k) == int(value / k):
                return f"{int(value / k)} {unit}"
        return f"{_number(value)} B"
    if dim == "time":
        for unit, k in (("s", 1), ("ms", 1e-3), ("us", 1e-6)):
            if value >= k:
                return f"{_number(round(value / k, 9))} {unit}"
    return _number(value)


def _render(e, parent: int) -> str:
    text, prec = _render_prec(e)
    return f"({text})" if prec < parent else text


def _render_prec(e) -> tuple[str, int]:
    if isinstance(e, Const):
        return _quantity(e.value, e.dim), _ATOM
    if isinstance(e, KnobRef):
        return e.name, _ATOM
    if isinstance(e, (ParamRef, DataRef, ModelArg)):
        return e.name, _ATOM
    if isinstance(e, EnumLit):
        return e.member, _ATOM
    if isinstance(e, FieldRef):
        return f"{e.scope}.{e.field}", _ATOM
    if isinstance(e, MeterRef):
        name = ("baseline." if e.baseline else "") + e.name
        if e.args:
            args = ", ".join(f"{k} = {getattr(v, 'name', v)}" for k, v in e.args)
            name += f"({args})"
        return name, _ATOM
    if isinstance(e, If):
        return f"if {_render(e.cond, 1)} then {_render(e.then, 1)} else {_render(e.orelse, 0)}", 0
    if isinstance(e, Op):
        op = e.op
        if op in ("min", "max"):
            return f"{op}({', '.join(_render(a, 0) for a in e.args)})", _ATOM
        if op == "not":
            return f"not {_render(e.args[0], _PREC['not'])}", _PREC["not"]
        if op == "neg":
            return f"-{_render(e.args[0], _PREC['neg'])}", _PREC["neg"]
        p = _PREC[op]
        # left-associative: the right operand of - and / needs parentheses at equal precedence
        first = _render(e.args[0], p)
        rest = [_render(a, p + 1 if op in ("-", "/") or p == 4 else p) for a in e.args[1:]]
        return f" {op} ".join([first, *rest]), p
    return str(e), _ATOM


def render_ir(e) -> str:
    return _render(e, 0)


def render_constraint(c: Constraint, sources: dict[str, str] | None = None) -> str:
    """The budget line as written (from the source when available), else re-rendered."""
    span = c.span
    text = (sources or {}).get(span.file) if span is not None else None
    if text and span.line == span.end_line:
        lines = text.splitlines()
        if 1 <= span.line <= len(lines):
            piece = lines[span.line - 1][span.col - 1:span.end_col - 1].strip()
            if piece:
                return piece
    return f"{render_ir(c.left)} {c.op} {render_ir(c.right)}"


def render_setting(setting: dict, knobs, limit: int = 12) -> str:
    """`name = value` pairs (exact values), families compressed when uniform."""
    if not setting:
        return "any setting"
    by_family: dict[str, list[tuple[str, object]]] = {}
    order: list[str] = []
    for name in sorted(setting, key=lambda n: knobs.by_name[n].order):
        fam = knobs.by_name[name].knob.name
        if fam not in by_family:
            order.append(fam)
        by_family.setdefault(fam, []).append((name, setting[name]))
    parts = []
    for fam in order:
        members = by_family[fam]
        var0 = knobs.by_name[members[0][0]]
        values = {v for _, v in members}
        total = len(knobs.families.get(fam, ()))
        if var0.knob.is_family and len(members) > 1 and len(values) == 1:
            where = f"all {total} layers" if len(members) == total else f"{len(members)} layers"
            parts.append(f"{fam}[{var0.knob.family_var}] = {var0.render(members[0][1])} for {where}")
            continue
        for name, v in members:
            parts.append(f"{name} = {knobs.by_name[name].render(v)}")
    if len(parts) > limit:
        parts = parts[:limit] + [f"... ({len(parts) - limit} more)"]
    return ", ".join(parts)


__all__ = ["render_constraint", "render_ir", "render_setting"]
