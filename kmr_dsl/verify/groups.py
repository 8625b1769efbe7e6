"""Channel groups in the symbolic state: the layers a step changes together with the one
it selects, one function per kind of coupling (verify/state.py calls them).

Contract: each function changes `state.layers` in place for one step (`index`), records
the step in `state.origin`, keeps each changed layer's previous dict in `before` (what
`state._follow_shapes` compares against) and returns the names it changed, which the
step then treats as pruned with their group (once per step, as the runtime does).
- `shrink_coupled`: a gated unit (facts' `coupled`: producers whose outputs are
  multiplied elementwise) keeps the same output channels in all its producers;
- `remove_heads`: attention heads (facts' `head_group`, `head_consumers`): the
  attention's projections keep the same head units (core.step.follow_heads) and the
  output projection's inputs shrink with them (core.step.shrink_consumer).
"""

from __future__ import annotations

from kmr_dsl.core import step as core_step
from kmr_dsl.verify import algebra as A


def shrink_coupled(state, producer: str, new_out, layer_facts, index: int, before: dict) -> list[str]:
    """The other producers of a coupled channel group (a gated unit) keep the same
    channels as `producer` (runtime: `prune` slices the group together)."""
    fact = layer_facts.get(producer)
    done = []
    for p in (fact.coupled if fact else ()):
        if p not in state.layers:
            continue
        ps = dict(state.layers[p])
        ps["out_features"] = new_out
        state.origin[(p, "out_features")] = index
        before.setdefault(p, state.layers[p])
        state.layers[p] = ps
        done.append(p)
    return done


def remove_heads(state, layer: str, old, new, layer_facts, index: int, before: dict) -> list[str]:
    """Head pruning (core.step.follow_heads): the projection and the other projections of
    its attention keep `new` of `old` head units, their rows with them; the output
    projection's inputs shrink by the same ratio. Returns the layers changed."""
    fact = layer_facts.get(layer)
    done = []
    for p in (layer,) + tuple(fact.head_group if fact else ()):
        if p not in state.layers:
            continue
        ps = dict(state.layers[p])
        for f, v in core_step.follow_heads(ps, old, new, A.SYMBOLS).items():
            ps[f] = v
            state.origin[(p, f)] = index
        before.setdefault(p, state.layers[p])
        state.layers[p] = ps
        done.append(p)
    for c in (fact.head_consumers if fact else ()):
        if c not in state.layers:
            continue
        cs = dict(state.layers[c])
        for f, v in core_step.shrink_consumer(cs, old, new, A.SYMBOLS).items():
            cs[f] = v
            state.origin[(c, f)] = index
        before.setdefault(c, state.layers[c])
        state.layers[c] = cs
        done.append(c)
    return done


__all__ = ["remove_heads", "shrink_coupled"]
