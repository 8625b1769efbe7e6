"""List literals `[e, ...]`: the constants of `list[T]` parameters, pattern-free.

Contract: `list_literal(node, diags)` folds a list literal to (values, element kind):
every item a plain number (an optional leading minus) or every item a string; an item
that is anything else (a knob, a meter, a unit, an expression) or a list that mixes
numbers and strings is KMR242 at the item. A list of ints and floats is a list of
floats; `[]` has the element kind "". `coerce_list` fits a folded list to a `list[T]`
parameter (ints widen to floats). Whether an empty list is allowed is the caller's
decision (a `list[T]` argument needs an item unless its default is `[]`).
"""

from __future__ import annotations

import math

from kmr_dsl import ast
from kmr_dsl.diagnostics import Diagnostic, error

LIST_WORDS = {"int": "whole numbers", "float": "numbers", "str": "strings", "": "nothing (an empty list)"}


def _item(node):
    """(value, "int" | "float" | "str") for a list item, or None when it is not a plain
    literal number (an optional leading minus) or string."""
    negative = isinstance(node, ast.Unary) and node.op == "-"
    inner = node.operand if negative else node
    if isinstance(inner, ast.String) and not negative:
        return inner.value, "str"
    if isinstance(inner, ast.Number) and not (isinstance(inner.value, float) and not math.isfinite(inner.value)):
        v = -inner.value if negative else inner.value
        return v, "int" if isinstance(v, int) and not isinstance(v, bool) else "float"
    return None


def list_literal(node: ast.ListLit, diags: list[Diagnostic]) -> tuple[tuple, str] | None:
    """Fold `[e, ...]` to (values, elem kind); KMR242 for an item that is not a plain
    number or string, and for a list that mixes numbers and strings. A list of ints and
    floats is a list of floats."""
    values, kinds = [], []
    for item in node.items:
        got = _item(item)
        if got is None:
            diags.append(error("KMR242", item.span, "a list item must be a plain number or a string",
                               "lists are constants: knobs, meters, units and expressions are not allowed in them",
                               hint='write literal items, e.g. `[1, 2, 4]` or `["lm_head", "re:.*gate$"]`'))
            return None
        values.append(got[0])
        kinds.append(got[1])
    if "str" in kinds and len(set(kinds)) > 1:
        first = kinds.index("str")
        other = next(i for i, k in enumerate(kinds) if k != "str")
        bad = node.items[max(first, other)]
        diags.append(error("KMR242", bad.span, "this list mixes numbers and strings",
                           f"item {min(first, other) + 1} is {'a string' if kinds[min(first, other)] == 'str' else 'a number'}, "
                           f"item {max(first, other) + 1} is {'a string' if kinds[max(first, other)] == 'str' else 'a number'}",
                           hint="make every item a number, or every item a quoted string"))
        return None
    elem = "" if not kinds else "str" if kinds[0] == "str" else "float" if "float" in kinds else "int"
    if elem == "float":
        values = [float(v) for v in values]
    return tuple(values), elem


def coerce_list(values: tuple, elem: str, want: str) -> tuple | None:
    """The list as a `list[want]` value (ints widen to floats), or None if it is not one."""
    if not values:
        return ()
    if elem == want:
        return values
    if want == "float" and elem == "int":
        return tuple(float(v) for v in values)
    return None


__all__ = ["LIST_WORDS", "coerce_list", "list_literal"]
