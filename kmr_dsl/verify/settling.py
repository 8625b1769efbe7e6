"""Counts as the runtime keeps them: the symbolic side of `core.step.settle`.

Contract: `settle_all(model, new, old, fact, factorized)` returns a step's new layer
fields (`new`, over the layer's fields before it, `old`) with the counts an effect
makes fractional settled as the runtime rounds them: whole channels, heads and ranks,
and whole kept weights counted on the layer's weight at its new shape (`matrix_numel`:
the dense matrix, or both factors once `lowrank` split it; prune ranks the two factors'
weights together). A kept-weight count it cannot round exactly (over two knobs, or with
more values than rounding.MAX_PIECES) is a range: the runtime's round_half_up(x) lies in
[x - 1/2, x + 1/2] (and in [0, elements]), so the state keeps the upper end and
`settle_all`'s `lows` receive the lower end, which verify/lowend.py records in
`State.low`; the cost model's meters and their lower ends read the two (verify/cost.py
LOW_ENDS), and the bounds and the solver read those same expressions (`settle` with
`low=True` settles a lower end). A channel, head or rank count it cannot round is not
known (`settle`). `factor_test` and `matrix_numel` are also the cost model's
(verify/layer_cost.py): a factorized layer's weights, counted one way, at the form `lowrank`
decided (`Factors`, kept in state.State.factors: `record_factors`
when a rank effect runs, `merge_factors` when an adapter is merged into the layer),
which a later head or channel pruning slices and never decides anew.
`settle_total` rounds a global pruning's kept total once, as the runtime does
(verify/pools.py for the densities, verify/lowend.py for their lower ends); a total it
cannot round exactly is a range in the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import sympy as sp

from kmr_dsl.core import step as core_step
from kmr_dsl.core.state import MATRIX_KINDS
from kmr_dsl.verify import algebra as A
from kmr_dsl.verify import rounding

HALF = Fraction(1, 2)


def factor_test(st: dict):
    """Whether `lowrank` made the layer two Linears: only when the factors are smaller than
    the matrix (rank * (in + out) < in * out, kmr_dsl/rules/lowrank.py), at the rank and
    shape it decided at (`Factors.fields`, where `st` carries them), else the layer's own."""
    inf, outf = st.get("factor_in", st["in_features"]), st.get("factor_out", st["out_features"])
    return A.compare("<", A.mul(factor_rank(st), A.add(inf, outf)), A.mul(inf, outf))


def factor_rank(st: dict):
    """The factors' inner dimension: the decided rank, which slicing rows or columns keeps
    (the layer's `rank` field is at most its sides, as the runtime reports it)."""
    return st.get("factor_rank", st["rank"])


def matrix_numel(st: dict, dense_n, factorized: bool):
    """Weight elements of a matrix layer: its dense count, or its factors' once a rule set its rank."""
    if not factorized:
        return dense_n
    return A.ite(factor_test(st), A.mul(factor_rank(st), A.add(st["in_features"], st["out_features"])), dense_n)


@dataclass(frozen=True)
class Factors:
    """What a rank effect decided for a layer (kmr_dsl/rules/lowrank.py `truncate`): the
    inner rank k and the shape (in, out) at which it compared k * (in + out) with
    in * out. The runtime keeps two Linears whenever that held, and a later head or
    channel pruning slices them (rows of the second, columns of the first): k stays, and
    so does the decision, even where the smaller shape would not factorize anew."""
    rank: object
    in_features: object
    out_features: object

    def fields(self) -> dict:
        """The keys `factor_test` / `matrix_numel` read beside a layer's own fields."""
        return {"factor_rank": self.rank, "factor_in": self.in_features, "factor_out": self.out_features}


def factor_fields(state, layer: str) -> dict:
    """The layer's `Factors` fields (state.State.factors) where they differ from its own
    rank and shape (a head or channel pruning after `lowrank`), else none: the layer's
    fields decide alike."""
    rec = state.factors.get(layer)
    if rec is None:
        return {}
    st = state.layers[layer]
    if all(a is b or a == b for a, b in ((rec.rank, st["rank"]), (rec.in_features, st["in_features"]),
                                         (rec.out_features, st["out_features"]))):
        return {}
    return rec.fields()


def record_factors(state, layer: str, old: dict, new: dict, floor) -> None:
    """What a rank effect decided (`Factors`). The runtime leaves the layer as it is (its
    factors, or its dense weights) where the kept rank is the current one and no energy
    cut applies (`floor`, lowend.rank_floor); elsewhere it decides at the current shape."""
    keep = A.compare(">=", new["rank"], old["rank"])
    if floor is not None:
        keep = A.and_(keep, A.not_(floor))
    if keep is A.TRUE:
        return
    fresh = Factors(new["rank"], new["in_features"], new["out_features"])
    if keep is A.FALSE:
        state.factors[layer] = fresh
        return
    # where it keeps the layer, a never-factorized one is decided at its own shape: a dense
    # layer's rank never passes the test (truncate would have split it), at any smaller shape
    prior = state.factors.get(layer) or Factors(old["rank"], old["in_features"], old["out_features"])
    state.factors[layer] = Factors(A.ite(keep, prior.rank, fresh.rank),
                                   A.ite(keep, prior.in_features, fresh.in_features),
                                   A.ite(keep, prior.out_features, fresh.out_features))


# merging an adapter into a factorized (or truncated) layer projects the merged matrix
# back onto the layer's rank by SVD at its current shape (kmr_dsl/rules/lora.py)
LORA_IMPL = "kmr_dsl.rules.lora:apply"


def merge_factors(state, layer: str, merge) -> None:
    """A merged adapter re-decides the form at the layer's rank and shape (`Factors`)."""
    if not isinstance(merge, sp.Basic) or not A.is_boolean(merge):
        merge = A.TRUE          # not modelled: lora's default, and the runtime's usual case
    st, rec = state.layers[layer], state.factors[layer]
    if merge is A.TRUE:
        del state.factors[layer]
    elif merge is not A.FALSE:
        state.factors[layer] = Factors(A.ite(merge, st["rank"], rec.rank),
                                       A.ite(merge, st["in_features"], rec.in_features),
                                       A.ite(merge, st["out_features"], rec.out_features))


def ops_for(model):
    """The arithmetic counts are settled in (verify/rounding.py): exact floors, folded over
    finite knobs and a choice among breakpoints over a continuous one (one per model)."""
    return model.compiled.get(("step ops",), lambda: rounding.step_ops(model.knobs))


def settle(field: str, value, numel, ops, low: bool = False, loose: set | None = None):
    """One count settled (core.step.settle); a placeholder or a condition is kept as it
    is. A kept-weight count the arithmetic cannot round is the end of its range
    (`unrounded`: the upper end, or with `low` the lower end), and `loose` receives the
    field. A channel, head or rank count it cannot round is not known: the shape feeds
    the layer's consumers, its factorization test and the file's layout, which are not
    monotone in it, so no end of a range would bound them (every obligation reading it
    is UNKNOWN, KMR303)."""
    if isinstance(value, (A.Unmodelled, A.UnmodelledBool)) or A.is_boolean(value):
        return value
    try:
        return core_step.settle(field, value, numel, ops)
    except A.NotModelled:
        if field == "density" and numel is not None:
            if loose is not None:
                loose.add(field)
            return unrounded(value, numel, low)
        if field in ("in_features", "out_features", "heads", "rank"):
            return A.placeholder(f"`layer.{field}` after a step that keeps a whole count over several knobs (or "
                                 f"with more than {rounding.MAX_PIECES} values), which the check does not round", False)
        return value


def unrounded(density, numel, low: bool):
    """An end of the kept fraction round_half_up(density * numel) / numel where the
    arithmetic cannot round it: the count lies within half a weight of the product, and
    in [0, numel] (a density is at most 1). Both ends are clamped to [0, numel], so the
    lower end is below the upper one at every knob value, inside the declared domains or
    past them: an unsat core found at one end (a relaxed knob bound) holds at the other.
    A layer with no weight elements left (its heads all pruned) has nothing to round: its
    density is kept as it is, as the runtime keeps none of its weights either way."""
    if numel == 0:            # a whole 0 (a symbolic count compares unequal)
        return density
    return A.div(_clamp(A.add(A.mul(density, numel), -HALF if low else HALF), numel), numel)


def _clamp(count, numel):
    """`count` within [0, numel]."""
    return A.max_(A.ZERO, A.min_(numel, count))


def settle_all(model, new: dict, old: dict, fact, factorized: bool, raw: list | None = None,
               low: bool = False, lows: dict | None = None) -> dict:
    """`new` settled; `raw` receives (the density before rounding, the weight elements)
    for a global pruning to round its total (pools.settle_pool). `low`: `new` holds
    lower ends, settled as lower ends. `lows` receives the lower end of each count the
    arithmetic could not round (the result holds its upper end)."""
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
        loose: set = set()
        density = out["density"]
        out["density"] = settle("density", density, numel, ops, low, loose)
        if loose and lows is not None and not low:
            lows["density"] = unrounded(density, numel, True)
    return out


def settle_total(model, raw: dict, low: bool = False, loose: set | None = None) -> dict:
    """The densities of a global pruning's layers, exact in total: `raw` maps each layer
    to (its unrounded density, its weight elements); the runtime keeps
    round_half_up(sum of density * elements) weights of the whole selection. Every layer
    keeps its unrounded share but the largest (the first of equal ones), which takes the
    total's rounding too: a fraction of one weight over its elements. The per-layer shares
    are the average either way (known in total only), so only the sum means anything.
    `low`: `raw` holds lower ends, and so does the result (the rounding of the total, not
    of each share: each share's own would add up to half a weight per layer too many).
    A total the arithmetic cannot round is a range, as in `settle`: half a weight above
    the unrounded total (at most every weight), or with `low` half a weight below it (at
    least none); `loose` then receives "density"."""
    out = {l: d for l, (d, _) in raw.items()}
    largest = max(raw, key=lambda l: _size_key(raw[l][1]))
    try:
        counts = {l: A.mul(d, n) for l, (d, n) in raw.items()}
        total = A.add(*counts.values())
        try:
            kept = core_step.round_half_up(total, ops_for(model))
        except A.NotModelled:
            if loose is not None:
                loose.add("density")
            kept = _clamp(A.add(total, -HALF if low else HALF), A.add(*(n for _, n in raw.values())))
        out[largest] = A.div(A.add(counts[largest], A.sub(kept, total)), raw[largest][1])
    except A.NotModelled:
        if loose is not None:
            loose.add("density")
        # half a weight beside the unrounded total, on the largest layer
        out[largest] = A.add(out[largest], A.div(-HALF if low else HALF, raw[largest][1]))
    return out


def _size_key(numel) -> float:
    """A layer's weight elements as a number to compare (a symbolic count, after lowrank
    over a knob: its largest value is not known here, so it ranks last)."""
    return float(numel) if A.is_number(A.num(numel)) else -1.0


__all__ = ["Factors", "LORA_IMPL", "factor_fields", "factor_rank", "factor_test", "matrix_numel", "merge_factors",
           "ops_for", "record_factors", "settle", "settle_all", "settle_total", "unrounded"]
