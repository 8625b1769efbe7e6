"""Which layers' densities the state knows only in total: global pruning's pools.

Contract: global magnitude pruning ranks the weights of all its selected layers together
(kmr_dsl/rules/prune.py): the kept total of the selection is exact, each layer's share
depends on the real weights, which a check does not have (facts can be written by hand,
and training steps before it change them). The state gives each layer the average
density (the effect `layer.density * (1 - amount)`), so every sum over the whole
selection — the `nonzero` meter — is exact. A later step that changes the density of
some of those layers as a function of it (a per-layer `prune`, N:M), or changes only
some of them (lowrank making one dense), would compound the average where the runtime
compounds each layer's own share: the result is not known from the state.

`step_pools(pools, selection, changed, reads_density, global_)` follows one step:
- `pools`: layer -> the frozenset of layers it was ranked with (its pool), before the step;
- `selection`: the step's selected layers with a weight; `changed`: those whose density
  the step changed; `reads_density`: those whose new density is computed from the old;
- `global_`: whether the step ranks its selection together: True, False, or None when a
  knob decides (an enum knob over `method`).
It returns (the pools after the step, the layers whose new density the state cannot
know). A global step whose selection holds every pool it changes keeps the totals exact
(the new pool is its selection); a step that sets the density of every layer of a pool
without reading it (lowrank to dense) dissolves the pool; anything else on a pooled
layer is reported (verify/state.py turns it into an UNKNOWN, never a guess).
"""

from __future__ import annotations

from kmr_dsl.verify import algebra as A


def step_pools(pools: dict, selection: list, changed: list, reads_density: set,
               global_: bool | None) -> tuple[dict, list]:
    out = dict(pools)
    touched = {pools[l] for l in changed if l in pools}
    chosen, moved = set(selection), set(changed)
    unknown: list = []
    if touched:
        ranked_together = global_ is True and all(p <= chosen for p in touched)
        replaced = (global_ is False and not (moved & reads_density)
                    and all(p <= moved for p in touched))
        if ranked_together:
            pass                                    # the new pool below covers them
        elif replaced:
            for l in moved:
                out.pop(l, None)
        else:
            unknown = [l for l in changed if l in pools]
    if global_ is not False and len(chosen) >= 2 and moved:
        pool = frozenset(chosen).union(*touched)
        for l in pool:
            out[l] = pool
    return out, unknown


def settle_total(raw: dict, round_half_up) -> dict:
    """The densities of a global pruning's layers, exact in total: `raw` maps each layer
    to (its unrounded density, its weight elements); the runtime keeps
    round_half_up(sum of density * elements) weights of the whole selection. Every layer
    keeps its unrounded share but the largest (the first of equal ones), which takes the
    total's rounding too: a fraction of one weight over its elements. The per-layer shares
    are the average either way (known in total only), so only the sum means anything."""
    counts = {l: A.mul(d, n) for l, (d, n) in raw.items()}
    total = A.add(*counts.values())
    kept = round_half_up(total)
    largest = max(raw, key=lambda l: _size_key(raw[l][1]))
    out = {l: d for l, (d, _) in raw.items()}
    out[largest] = A.div(A.add(counts[largest], A.sub(kept, total)), raw[largest][1])
    return out


def _size_key(numel) -> float:
    """A layer's weight elements as a number to compare (a symbolic count, after lowrank
    over a knob: its largest value is not known here, so it ranks last)."""
    return float(numel) if A.is_number(A.num(numel)) else -1.0


__all__ = ["settle_total", "step_pools"]
