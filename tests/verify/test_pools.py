"""verify/pools.py: global pruning's per-layer densities are known in total only, so a
later step that changes some of them on their own is reported, never guessed."""

from __future__ import annotations

from kmr_dsl.verify.pools import step_pools

ABC = frozenset("abc")


def test_a_global_step_over_several_layers_pools_them_and_one_layer_is_not_a_pool():
    pools, unknown = step_pools({}, ["a", "b", "c"], ["a", "b", "c"], {"a", "b", "c"}, True)
    assert pools == {"a": ABC, "b": ABC, "c": ABC} and unknown == []
    assert step_pools({}, ["a"], ["a"], {"a"}, True) == ({}, [])
    assert step_pools({}, ["a", "b"], ["a", "b"], {"a", "b"}, False) == ({}, [])     # magnitude: per layer


def test_a_per_layer_step_on_pooled_layers_is_unknown():
    pools = {l: ABC for l in "abc"}
    assert step_pools(pools, ["c"], ["c"], {"c"}, False)[1] == ["c"]                  # the reproducer's shape
    assert step_pools(pools, list("abc"), list("abc"), set("abc"), False)[1] == list("abc")   # rounding per layer
    assert step_pools(pools, ["c"], ["c"], set(), False)[1] == ["c"]                  # one made dense: the rest?


def test_what_keeps_the_totals_exact():
    pools = {l: ABC for l in "abc"}
    wider = frozenset("abcd")
    assert step_pools(pools, list("abcd"), list("abcd"), set("abcd"), True) == ({l: wider for l in "abcd"}, [])
    assert step_pools(pools, list("abc"), list("abc"), set(), False) == ({}, [])      # every layer made dense
    assert step_pools(pools, list("ab"), list("ab"), set("ab"), True)[1] == ["a", "b"]   # part of the pool
    assert step_pools(pools, list("abc"), list("abc"), set("abc"), None)[1] == list("abc")   # a knob decides
    assert step_pools(pools, ["d"], ["d"], {"d"}, False) == (pools, [])              # another layer
