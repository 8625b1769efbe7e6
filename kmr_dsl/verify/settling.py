"""Counts as the runtime keeps them: the symbolic side of `core.step.settle`.

Contract: `settle_all(model, new, old, fact, factorized)` returns a step's new layer
fields (`new`, over the layer's fields before it, `old`) with the counts an effect
makes fractional settled as the runtime rounds them: whole channels, heads and ranks,
and whole kept weights counted on the layer's weight at its new shape (`matrix_numel`:
the dense matrix, or both factors once `lowrank` split it; prune ranks the two factors'
weights together). A count it cannot round (two knobs, too many values) keeps the exact
product, a documented gap of verify/cost.py. `factor_test` and `matrix_numel` are also
the cost model's (verify/cost.py): a factorized layer's weights, counted one way.
"""

from __future__ import annotations

from kmr_dsl.core import step as core_step
from kmr_dsl.core.state import MATRIX_KINDS
from kmr_dsl.verify import algebra as A
from kmr_dsl.verify import rounding


def factor_test(st: dict):
    """Whether `lowrank` made the layer two Linears: only when the factors are smaller than
    the matrix (rank * (in + out) < in * out, kmr_dsl/rules/lowrank.py)."""
    inf, outf = st["in_features"], st["out_features"]
    return A.compare("<", A.mul(st["rank"], A.add(inf, outf)), A.mul(inf, outf))


def matrix_numel(st: dict, dense_n, factorized: bool):
    """Weight elements of a matrix layer: its dense count, or its factors' once a rule set its rank."""
    if not factorized:
        return dense_n
    return A.ite(factor_test(st), A.mul(st["rank"], A.add(st["in_features"], st["out_features"])), dense_n)


def ops_for(model):
    """The arithmetic counts are settled in (verify/rounding.py): exact floors, folded over
    finite knobs and a choice among breakpoints over a continuous one (one per model)."""
    return model.compiled.get(("step ops",), lambda: rounding.step_ops(model.knobs))


def settle(field: str, value, numel, ops):
    """One count settled (core.step.settle); a placeholder, a condition or a count the
    arithmetic cannot round is kept as it is."""
    if isinstance(value, (A.Unmodelled, A.UnmodelledBool)) or A.is_boolean(value):
        return value
    try:
        return core_step.settle(field, value, numel, ops)
    except A.NotModelled:
        return value


def settle_all(model, new: dict, old: dict, fact, factorized: bool, raw: list | None = None) -> dict:
    """`new` settled; `raw` receives (the density before rounding, the weight elements)
    for a global pruning to round its total (pools.settle_pool)."""
    out = dict(new)
    ops = ops_for(model)
    for f in ("in_features", "out_features", "rank", "heads"):
        if f in out:
            out[f] = settle(f, out[f], None, ops)
    if "density" in out and fact is not None and fact.kind in MATRIX_KINDS and fact.weight_params:
        st = {**old, **out}
        numel = core_step.dense_numel(fact.weight_params, fact.in_features, fact.out_features,
                                      st["in_features"], st["out_features"], A.SYMBOLS, fact.depthwise)
        numel = matrix_numel(st, numel, factorized)
        if raw is not None:
            raw.append((out["density"], numel))
        out["density"] = settle("density", out["density"], numel, ops)
    return out


__all__ = ["factor_test", "matrix_numel", "ops_for", "settle", "settle_all"]
