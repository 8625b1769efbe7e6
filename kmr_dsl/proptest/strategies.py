"""Hypothesis strategies for knob and rule-parameter domains, ordered for shrinking.

Contract: `value_strategy(type, domain, members)` draws from exactly the values a knob
or parameter admits, and its *simplest* value (what Hypothesis shrinks towards) is the
first value of the domain in the order users read it:
- a finite domain (a set `{v1, v2}` or a stepped range) is `sampled_from` its values in
  increasing order, so a shrunk setting is the smallest failing value;
- an enum is `sampled_from` its members in declaration order; a bool is false first;
- an int range is `integers(lo, hi)` (open ends excluded), which shrinks towards the
  value nearest 0;
- a float range is `floats(lo, hi)` honouring open ends, no NaN or infinity (Hypothesis
  shrinks towards its simplest float in the range: whole numbers, then short fractions);
- no domain at all: unbounded integers or finite floats.
`knob_strategy(knob)` draws one knob instance; `setting_strategy(program, names)` draws
every instance of the named knobs (a knob family draws each instance) as a dict that
keeps the declaration order. This module imports hypothesis only (no torch).
"""

from __future__ import annotations

import math

from hypothesis import strategies as st

from kmr_dsl.core.program import CheckedProgram, Domain, Knob, Param


def value_strategy(kind: str, domain: Domain | None, members: tuple = ()) -> st.SearchStrategy:
    """Every value of an int/float/bool/enum domain, simplest (first) value first."""
    if kind == "bool":
        return st.sampled_from((False, True))
    if kind == "enum":
        return st.sampled_from(tuple(members))
    if domain is None:
        return st.integers() if kind == "int" else st.floats(allow_nan=False, allow_infinity=False)
    finite = domain.finite()
    if finite is not None:
        values = tuple(int(v) if kind == "int" else v for v in finite)
        return st.sampled_from(values)
    if kind == "int":
        return st.integers(min_value=_int_bound(domain.lo, domain.lo_closed, math.ceil, 1),
                           max_value=_int_bound(domain.hi, domain.hi_closed, math.floor, -1))
    return st.floats(min_value=domain.lo, max_value=domain.hi,
                     exclude_min=domain.lo is not None and not domain.lo_closed,
                     exclude_max=domain.hi is not None and not domain.hi_closed,
                     allow_nan=False, allow_infinity=False)


def _int_bound(bound, closed: bool, to_int, inward: int) -> int | None:
    """The first whole number inside an end of a range (an open end excludes its bound)."""
    if bound is None:
        return None
    value = int(to_int(bound))
    return value + inward if value == bound and not closed else value


def knob_strategy(knob: Knob) -> st.SearchStrategy:
    return value_strategy(knob.type, knob.domain, knob.members)


_ELEMENTS = {"int": st.integers(-8, 8), "float": st.floats(-8.0, 8.0, allow_nan=False),
             "str": st.text("abcxyz_.", max_size=6)}


def param_strategy(param: Param) -> st.SearchStrategy:
    """A rule parameter's values (data and model are built by the caller). `str` and
    `list[T]` parameters are opaque constants no contract reads: their default when they
    have one (a program passes a constant there), else small values of their type (a
    list is never empty: the checker wants an item)."""
    if param.type in ("data", "model"):
        raise ValueError(f"parameter `{param.name}` of type {param.type} has no value strategy")
    if param.type in ("str", "list") and param.has_default:
        return st.just(param.default)
    if param.type == "str":
        return _ELEMENTS["str"]
    if param.type == "list":
        return st.lists(_ELEMENTS[param.elem or "int"], min_size=1, max_size=3).map(tuple)
    return value_strategy(param.type, param.domain, param.members)


def setting_strategy(program: CheckedProgram, names) -> st.SearchStrategy:
    """A dict {knob instance: value} for every instance of the named knobs, in order."""
    parts = {}
    for name in names:
        knob = program.knobs[name]
        for inst in knob.instances():
            parts[inst] = knob_strategy(knob)
    return st.fixed_dictionaries(parts)


def show_value(value) -> str:
    """A value as KMR source writes it: `true`, `magnitude`, `0.25`, `8`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return f"{value:.1f}"
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(show_value(v) for v in value) + "]"
    if isinstance(value, str) and not value.isidentifier():
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def show_setting(setting: dict) -> str:
    """`sparsity = 0.0, bits = 32` (an empty setting reads `the defaults`)."""
    if not setting:
        return "the defaults"
    return ", ".join(f"{name} = {show_value(value)}" for name, value in setting.items())


__all__ = ["knob_strategy", "param_strategy", "setting_strategy", "show_setting", "show_value", "value_strategy"]
