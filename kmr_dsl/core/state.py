"""The abstract state's vocabulary (spec section 5), written once.

Contract: every stage that reads or writes the abstract state names its fields, their
types and the layer kinds from here: the checker types `layer.X` / `model.X` with
LAYER_FIELDS / MODEL_FIELDS, the verifier builds its symbolic state from them, the
runtime measures them (`kmr_dsl.runtime.state`), and the property tests compare a
rule's effect field by field. `ANALYTIC_METERS` (with their dimensions) are the meters
a cost model predicts: the verifier proves budgets over them, the runtime compares its
measurements with the prediction, and search skips settings by them.
"""

from __future__ import annotations

# field -> type ("int", "float", "bool", "str"); the order is the spec's
LAYER_FIELDS: dict[str, str] = {
    "kind": "str", "in_features": "int", "out_features": "int", "params": "int", "density": "float",
    "bits": "int", "rank": "int", "adapter_rank": "int", "frozen": "bool",
    # added by the implementation (spec section 5 allows it): the inputs per integer scale,
    # 0 = one scale per output row (what `quantize(group_size = ...)` and `gptq` set)
    "group_size": "int",
    # False when the layer's integer weights carry zero points (`quantize(symmetric = false)`,
    # the affine grid: one int8 zero point per scale); True for float layers
    "symmetric": "bool",
    # a per-input-channel scale folds into the normalization that produces this Linear's
    # input (smoothquant, awq): that norm's output is read by Linear layers only, and this
    # one is a single weight matrix (not factorized, no unmerged adapter, no tied
    # embedding). Read off one traced forward (facts `fold_group`, runtime `norms`); a
    # step that folds must also select every Linear reading the same norm (KMR306).
    "foldable": "bool",
    # the attention head units whose rows this layer holds (a query, key or value
    # projection of a recognised attention; with grouped-query attention a unit is one
    # key/value head with its query heads), 0 for every other layer: `prune(method = head)`
    "heads": "int",
    # the layer multiplies its input by a stored per-input-channel fp32 vector before its
    # weights (awq's and smoothquant's scale where `foldable` is false: no normalization
    # can absorb it): in_features * 4 bytes and one entry `NAME.input_scale` in the file
    "input_scale": "bool",
}
MODEL_FIELDS: dict[str, str] = {"trainable": "bool"}

# what a false boolean field means, said when a `requires layer.F` fails on it
FALSE_MEANS: dict[str, str] = {
    "foldable": "no normalization produces this layer's input for Linear layers alone (a residual connection, "
                "another operation or a non-Linear layer also reads it, or none precedes it), or the layer is "
                "factorized, adapted or tied: select the Linear layers right after a LayerNorm or RMSNorm "
                "(e.g. the attention and MLP input projections of a pre-norm transformer)",
}

# whole-number fields: a count the runtime rounds when an effect makes it fractional
COUNT_FIELDS = ("in_features", "out_features", "rank", "adapter_rank", "bits", "group_size", "heads")

# layers whose weight is one matrix leaf (these shrink, factorize and quantize); any
# other layer between a producer and its consumer (a norm) is sliced with the channels
MATRIX_KINDS = ("Linear", "Conv1d", "Conv2d", "Embedding")

# the meters with a cost model, and the dimension each is measured in
ANALYTIC_METERS: dict[str, str] = {
    "params": "count", "nonzero": "count", "size": "bytes", "macs": "count", "trainable_params": "count",
}


def scale_groups(cols, group_size, ceil):
    """Integer scales per output row of a matrix with `cols` inputs per row: 1 without
    groups, else ceil(cols / group_size) (the last group holds the remainder). `ceil` is
    the caller's ceiling (math's on numbers, the verifier's on symbols)."""
    return 1 if group_size == 0 else ceil(cols / group_size)


def full_rank(in_features, out_features):
    """The rank of a layer no rule has given one: the smaller side of its matrix."""
    return min(in_features, out_features)


__all__ = ["ANALYTIC_METERS", "COUNT_FIELDS", "FALSE_MEANS", "LAYER_FIELDS", "MATRIX_KINDS", "MODEL_FIELDS", "full_rank",
           "scale_groups"]
