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


# ---------------------------------------------------------------- through `verify`

def _verify(steps, budget):
    from tests.verify.build import mlp_facts, program
    from kmr_dsl.verify import verify
    return verify(program([], steps, budget, mlp_facts([16, 32, 32, 8])))


def _kinds(report):
    return {(r.kind, r.verdict.value) for r in report.results}


def test_a_per_layer_prune_after_a_global_one_is_unknown_and_so_is_its_nonzero_line():
    from tests.verify.build import c, line, meter, step
    L = ("fc0", "fc1", "fc2")
    report = _verify([step("prune", L, amount=0.5, method="global"), step("prune", ("fc2",), line=11, amount=0.8)],
                     [line(meter("nonzero"), "<=", c(10 ** 6)), line(meter("params"), "<=", c(10 ** 6), at=31)])
    assert ("composability", "unknown") in _kinds(report) and report.verdict.value == "unknown"
    feas = [r for r in report.results if r.kind == "feasibility"][0]
    assert feas.verdict.value == "unknown" and "`fc2`" in feas.reason
    d = [d for d in report.diagnostics if d.code == "KMR303" and d.span.line == 11][0]
    assert "global pruning" in d.notes[0] and "`fc0`, `fc1`, `fc2`" in d.notes[0] and d.hint


def test_what_stays_proved_after_a_global_prune():
    from tests.verify.build import c, line, meter, step
    L = ("fc0", "fc1", "fc2")
    budget = [line(meter("nonzero"), "<=", c(10 ** 6))]
    for later in (step("prune", L, line=11, amount=0.5, method="global"),      # ranks the same layers again
                  step("lowrank", L, line=11, ratio=0.5),                      # every pooled layer made dense
                  step("quantize", L, line=11, bits=8)):                       # reads no density
        report = _verify([step("prune", L, amount=0.5, method="global"), later], budget)
        assert report.verdict.value == "proved", (later.rule.name, _kinds(report))
    report = _verify([step("prune", L, amount=0.5, method="global"), step("lowrank", ("fc0",), line=11, ratio=0.5)],
                     budget)
    assert report.verdict.value == "unknown"                                   # fc1 + fc2: their share is unknown
