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
layer is reported (`follow` turns it into an UNKNOWN requirement, never a guess).

`settle_pool` rounds a global pruning's kept total once, as the runtime does
(settling.settle_total), where `ranked_together` says the step ranks its selection together.
"""

from __future__ import annotations

import sympy as sp

from kmr_dsl.verify import algebra as A
from kmr_dsl.verify import requirements, settling
from kmr_dsl.verify.lowend import RHO


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


def follow(model, state, index: int, step, params: dict, densities: dict, before: dict, layer_facts,
           evaluate) -> None:
    """Global pruning's pools through one step (`step_pools`); a pooled layer whose
    density the state cannot know after it gets an UNKNOWN requirement at this step.
    `densities`: each selected layer's (density, the step that set it) before the step;
    `evaluate(expr, layer)`: an IR expression's value over a layer's fields."""
    selection = [l for l in densities if getattr(layer_facts.get(l), "weight_params", 0)]
    changed = [l for l in selection if state.layers[l]["density"] is not densities[l][0]
               and state.layers[l]["density"] != densities[l][0]]
    if not changed:
        return
    effect = next((e for e in step.rule.effects if e.scope == "layer" and e.field == "density"), None)
    reads = set()
    # (whether the effect reads the old density matters only for a layer already in a
    # pool: step_pools reads `reads_density` for those alone)
    for l in (changed if any(l in state.pools for l in changed) else ()):
        try:
            value = evaluate(effect.expr, {**before.get(l, state.layers[l]), "density": RHO})
        except (A.NotModelled, AttributeError):
            value = RHO
        if not isinstance(value, sp.Basic) or RHO in A.knob_symbols(value):
            reads.add(l)
    method = params.get("method")
    global_ = None if isinstance(method, A.EnumKnob) and "global" in method.members else \
        isinstance(method, A.EnumValue) and method.member == "global"
    pools_before = state.pools
    state.pools, unknown = step_pools(pools_before, selection, changed, reads, global_)
    for l in unknown:
        ranked = ", ".join(f"`{x}`" for x in sorted(pools_before[l]))
        density, origin = densities[l]
        at = f" at {model.pipeline.steps[origin].span}" if origin is not None else ""
        why = (f"`{step.rule.name}` changes the density of `{l}` on its own, but the global pruning{at} "
               f"fixed only the total of {ranked}")
        requirements.pooled(model, step, index, l, density, origin, why)


def ranked_together(rule, params: dict):
    """The condition under which a step ranks its selected layers' weights together
    (`method = global`): TRUE, FALSE, or a condition over an enum knob."""
    method = params.get("method")
    if not any(e.scope == "layer" and e.field == "density" for e in rule.effects):
        return A.FALSE
    if isinstance(method, (A.EnumValue, A.EnumKnob)):
        return A.enum_equal(method, A.EnumValue("global"))
    return A.FALSE


def settle_pool(model, state, index: int, ranked, raw: dict) -> bool:
    """Global pruning keeps round_half_up(total) weights of the whole selection, not the
    sum of each layer's rounded share (kmr_dsl/rules/prune.py): where the step ranks
    together (`ranked`), the layers' densities are the unrounded shares with the total's
    rounding added to the largest layer (settling.settle_total), so `nonzero` is exact.
    Whether the total could not be rounded exactly: the densities are then the upper end
    of a range, and the caller records its lower end (verify/lowend.py)."""
    if len(raw) < 2:
        return False            # one layer: its own rounding is the total's
    loose: set = set()
    pooled = settling.settle_total(model, raw, loose=loose)
    for layer, density in pooled.items():
        value = density if ranked is A.TRUE else A.ite(ranked, density, state.layers[layer]["density"])
        if state.layers[layer]["density"] != value:
            state.layers[layer] = {**state.layers[layer], "density": value}
            state.origin[(layer, "density")] = index
    return bool(loose)


__all__ = ["follow", "ranked_together", "settle_pool", "step_pools"]
