"""Channel groups in the symbolic state: the layers a step changes together with the one
it selects, one function per kind of coupling (verify/state.py calls them).

Contract: each function changes `state.layers` in place for one step (`index`), records
the step in `state.origin`, keeps each changed layer's previous dict in `before` (what
`state._follow_shapes` compares against) and returns the names it changed, which the
step then treats as pruned with their group (once per step, as the runtime does).
- `shrink_consumers`: the layers reading a pruned channel group (facts' `consumers`)
  lose the matching inputs (core.step.shrink_consumer);
- `shrink_group`: the other members of the group (facts' `coupled`, from
  runtime/depgraph.py: a residual stream's producers, a gated unit's gate and up
  projections, whose outputs are multiplied elementwise, the depthwise convs over
  them) keep the same output channels; a depthwise member loses them on its input too;
- `remove_heads`: attention heads (facts' `head_group`, `head_consumers`): the
  attention's projections keep the same head units (core.step.follow_heads) and the
  output projection's inputs shrink with them (core.step.shrink_consumer).
"""

from __future__ import annotations

from kmr_dsl.core import step as core_step
from kmr_dsl.verify import algebra as A


def _set(state, name: str, changed: dict, index: int, before: dict) -> None:
    ls = dict(state.layers[name])
    for f, v in changed.items():
        ls[f] = v
        state.origin[(name, f)] = index
    before.setdefault(name, state.layers[name])
    state.layers[name] = ls


def shrink_consumers(state, producer: str, old, new, layer_facts, index: int, before: dict) -> list[str]:
    """The consumers of `producer`'s channel group read `new` of its `old` channels."""
    fact = layer_facts.get(producer)
    done = []
    for c in (fact.consumers if fact else ()):
        if c not in state.layers:
            continue
        _set(state, c, core_step.shrink_consumer(state.layers[c], old, new, A.SYMBOLS), index, before)
        done.append(c)
    return done


def shrink_group(state, layer: str, old, new, layer_facts, index: int, before: dict) -> list[str]:
    """The members of `layer`'s channel group lose the same channels as `layer` (runtime:
    `prune` slices the group together, ranked by the members' summed norms); a depthwise
    member (the layer itself included) loses them on its input too. Returns the members."""
    fact = layer_facts.get(layer)
    members = [layer, *(fact.coupled if fact else ())]
    try:
        ratio = A.div(new, old)
    except A.NotModelled:
        ratio = A.ZERO          # a group already without channels (old is 0) keeps none
    for m in members:
        if m not in state.layers:
            continue
        mf = layer_facts.get(m)
        changed = {}
        if m != layer:
            changed["out_features"] = new
        if mf is not None and mf.depthwise:
            changed["in_features"] = A.mul(state.layers[m]["in_features"], ratio)
        if changed:
            _set(state, m, changed, index, before)
    return members


def remove_heads(state, layer: str, old, new, layer_facts, index: int, before: dict) -> list[str]:
    """Head pruning (core.step.follow_heads): the projection and the other projections of
    its attention keep `new` of `old` head units, their rows with them; the output
    projection's inputs shrink by the same ratio. Returns the layers changed."""
    fact = layer_facts.get(layer)
    done = []
    for p in (layer,) + tuple(fact.head_group if fact else ()):
        if p not in state.layers:
            continue
        _set(state, p, core_step.follow_heads(state.layers[p], old, new, A.SYMBOLS), index, before)
        done.append(p)
    for c in (fact.head_consumers if fact else ()):
        if c not in state.layers:
            continue
        _set(state, c, core_step.shrink_consumer(state.layers[c], old, new, A.SYMBOLS), index, before)
        done.append(c)
    return done


__all__ = ["remove_heads", "shrink_consumers", "shrink_group"]
