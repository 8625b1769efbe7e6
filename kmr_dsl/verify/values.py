"""The kinds of value the verifier computes with besides sympy's numbers and propositions.

Contract: knob symbols by sort (`BoolSymbol`, `EnumSymbol`; a numeric knob is a plain
`sympy.Symbol`), enum members and enum knobs as values (`EnumValue`, `EnumKnob`),
placeholders for what the abstract state cannot represent (`Unmodelled`,
`UnmodelledBool`, `placeholder`, and the `NotModelled` error), and a step's data or
model argument (`Opaque`). kmr_dsl.verify.algebra builds expressions over them and
names them too, so callers read them as `algebra.X`.

Knob symbols come in three classes so that later stages know a symbol's sort without
a side table: `sympy.Symbol` for numeric knobs, `BoolSymbol` for bool knobs (used as
a condition) and `EnumSymbol` for enum knobs (its value is the member's index).
`EnumValue` is not sympy: an enum member or string constant that only ever meets
`==`/`!=`, folded away before anything reaches sympy.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp


class BoolSymbol(sp.Symbol):
    """A bool knob: a proposition, used where a condition is expected."""


class EnumSymbol(sp.Symbol):
    """An enum knob; its value is the index of the chosen member in `members`."""


@dataclass(frozen=True)
class EnumValue:
    """An enum member (or a string constant): compared by name, never computed with."""
    member: str


@dataclass(frozen=True)
class EnumKnob:
    """An enum knob as a value: its symbol and its members, in declaration order."""
    symbol: EnumSymbol
    members: tuple[str, ...]


class Unmodelled(sp.Symbol):
    """A placeholder for a value the abstract state cannot represent (its name says why).

    Anything that depends on it is reported UNKNOWN: the evaluators and the Z3 lowering
    refuse it rather than guess.
    """


class UnmodelledBool(BoolSymbol):
    """A placeholder for a condition the abstract state cannot represent."""


class NotModelled(Exception):
    """An expression the abstract state cannot represent (reported as UNKNOWN, never guessed)."""


def placeholder(reason: str, boolean: bool):
    """An `Unmodelled` (or, for a condition, `UnmodelledBool`) value named by `reason`."""
    cls = UnmodelledBool if boolean else Unmodelled
    return cls(f"?{reason}")


@dataclass(frozen=True)
class Opaque:
    """A data or model argument of a step: legal as an argument, never computed with."""
    what: str


__all__ = ["BoolSymbol", "EnumKnob", "EnumSymbol", "EnumValue", "NotModelled", "Opaque", "Unmodelled",
           "UnmodelledBool", "placeholder"]
