"""Channel groups in the symbolic state: the layers a step changes together with the one
it selects, one function per kind of coupling (verify/stepping.py calls them).

Contract: each function changes `state.layers` in place for one step (`index`), records
the step in `state.origin`, keeps each changed layer's previous dict in `before` (what
`follow_shapes` compares against) and returns the names it changed, which the
step then treats as pruned with their group (once per step, as the runtime does).
- `shrink_consumers`: the layers reading a pruned channel group (facts' `consumers`)
  lose the matching inputs (core.step.shrink_consumer);
- `shrink_group`: the other members of the group (facts' `coupled`, from
  runtime/depgraph.py: a residual stream's producers, a gated unit's gate and up
  projections, whose outputs are multiplied elementwise, the depthwise convs over
  them) keep the same output channels; a depthwise member loses them on its input too;
- `remove_heads`: attention heads (facts' `head_group`, `head_consumers`): the
  attention's projections keep the same head units (core.step.follow_heads) and the
  output projection's inputs shrink with them (core.step.shrink_consumer);
- `follow_shapes`, after the step: a changed shape's rank follows it, and a sparse
  layer whose rows or columns were removed has a density not known (`sparse_rows`).
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


def follow_shapes(state, before: dict, touched: set, index: int, step) -> None:
    """A changed shape's rank follows it (core.step.follow_rank): channel pruning shrinks a
    layer (and its consumers); the runtime then reports the smaller rank, and `lowrank`
    cuts relative to it. A changed shape's density is not known where the layer may be
    sparse: channel and head pruning remove whole rows (a consumer: columns) ranked by
    norm, and the zeros of an earlier magnitude or N:M pruning are not spread evenly
    over them (the kept rows of a half-pruned layer hold more than half their weights).
    Between the bounds max(0, kept - removed) and min(kept, new size) the share depends
    on the weights: the density becomes a placeholder there (`sparse_rows`), and what
    reads it (`nonzero`, `size`) is UNKNOWN, never the average, which the run beats."""
    for name in sorted(touched):
        st, old = state.layers[name], before.get(name)
        if old is None or old is st:
            continue
        if st["in_features"] != old["in_features"] or st["out_features"] != old["out_features"]:
            density = sparse_rows(name, old["density"], st["density"], index, step)
            if density is not st["density"]:
                st = dict(st)
                st["density"] = density
                state.layers[name] = st
                state.origin[(name, "density")] = index
            rank_set = (name, "rank") in state.origin
            if rank_set and st["rank"] is not old["rank"]:
                continue            # the rule itself set the rank in this step
            st = dict(st)
            st["rank"] = core_step.follow_rank(st["rank"], st["in_features"], st["out_features"], rank_set,
                                               A.SYMBOLS)
            state.layers[name] = st


def sparse_rows(name: str, old, new, index: int, step):
    """The density of a layer whose rows or columns a step removed: `new` (the average,
    kept by the rule's effect) where the layer was dense before, else not known."""
    if A.is_number(A.num(old)) and A.num(old) == 1:
        return new
    sparse = A.compare("<", old, 1)
    if sparse is A.FALSE:
        return new
    why = (f"the density of `{name}` after step {index + 1} `{step.rule.name}` (line {step.span.line}): "
           f"removing rows or columns of a sparse layer keeps a share of its zeros that depends on the weights")
    return A.ite(sparse, A.placeholder(why, False), new)


__all__ = ["follow_shapes", "remove_heads", "shrink_consumers", "shrink_group", "sparse_rows"]
