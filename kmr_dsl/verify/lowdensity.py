"""Lower ends of densities the state knows only as an upper bound (N:M on a sparse layer).

Contract: N:M pruning (`prune(method = nm)`, `sparsegpt(n, m)`) keeps, in every group of
m weights, the n largest of the group's non-zeros: on a dense layer exactly n / m of
them (kmr_dsl/core/step.py settles the tail groups), on a sparse layer at most
min(density, n / m) — how many depends on where the zeros are, which a check does not
know. The state's density (the rule's effect) is then an upper bound, exact for every
`<=` line and for `size`'s upper end; `State.low` holds a lower bound beside it for
the lines that need the count to be large (`nonzero >= X`, `size >= X`: verify/budget.py
reads `nonzero` as a range [cost.NONZERO_LOW, nonzero] while any layer has one).

`low_after(value, rho, low_before)`: the lower end of a density effect. `value` is the
effect with the layer's old density as the symbol `rho`: a `min(rho, c)` in it is
exact only where the layer is surely dense (its lower end is 1), else its lower end is
0 (a group of m non-zeros may hold fewer than n of them... or none); every other
effect of the standard rules is monotone in the old density (`density * (1 - amount)`,
a branch that keeps it), so the lower end follows the old lower end through it.
"""

from __future__ import annotations

import sympy as sp

from kmr_dsl.verify import algebra as A


def low_after(value, rho, low_before):
    """The lower end of `value` (an effect over `rho`, the old density) given the old lower end."""
    if not isinstance(value, sp.Basic) or rho not in value.free_symbols:
        return value
    mins = [m for m in value.atoms(sp.Min) if rho in m.free_symbols]
    if mins:
        dense = A.compare(">=", low_before, 1)
        value = value.xreplace({m: A.ite(dense, m, 0) for m in mins})
    return value.xreplace({rho: A.num(low_before)})


def reads_min(value, rho) -> bool:
    """Whether an effect over `rho` takes a `min` with the old density (N:M's kept share)."""
    return isinstance(value, sp.Basic) and any(rho in m.free_symbols for m in value.atoms(sp.Min))


__all__ = ["low_after", "reads_min"]
