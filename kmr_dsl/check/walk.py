"""The checker's queries and rewrites of the expression IR (kmr_dsl.core.program).

Contract: built on the one IR walker `kmr_dsl.core.walk` (`nodes`, `rewrite`): the knobs and
meters an expression reads, `on_baseline` (a derived meter read as `baseline.ratio`:
every meter inside reads the baseline model) and `at_layer` (a `for` body's family
reference `s[l]`, lowered once with a placeholder, instantiated for one layer).
"""

from __future__ import annotations

from dataclasses import replace

from kmr_dsl.core import program as P
from kmr_dsl.core.walk import nodes, rewrite

# Marks the loop variable inside a family instance name while a `for` body is lowered
# once; no layer name can contain it, so instantiation cannot touch a real name.
PLACEHOLDER = "\x00"


def knobs(e) -> set[str]:
    """Declared knob names (families by their declared name) an expression reads."""
    return {n.knob for n in nodes(e) if isinstance(n, P.KnobRef)}


def meters(e) -> list[P.MeterRef]:
    return [n for n in nodes(e) if isinstance(n, P.MeterRef)]


def is_analytic(e) -> bool:
    return all(m.analytic for m in meters(e))


def on_baseline(e):
    return rewrite(e, lambda n: replace(n, baseline=True) if isinstance(n, P.MeterRef) else n)


def family_ref(knob: str) -> str:
    return f"{knob}[{PLACEHOLDER}]"


def at_layer(e, layer: str):
    """Instantiate every placeholder family reference for `layer`."""
    def f(n):
        if isinstance(n, P.KnobRef) and n.name == family_ref(n.knob):
            return replace(n, name=f"{n.knob}[{layer}]")
        return n
    return rewrite(e, f)


__all__ = ["PLACEHOLDER", "at_layer", "family_ref", "is_analytic", "knobs", "meters", "on_baseline"]
