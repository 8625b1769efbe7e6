"""`awq`: activation-aware weight quantization (Lin et al., 2024).

Contract (stdlib/rules.kmr): requires `layer.bits >= 16` and `layer.foldable` (as
smoothquant); effect `layer.bits = bits`,
`layer.group_size = group_size`, the model stops being trainable. The result is the
weight-only integer layer `quantize(scheme = weight_only, group_size = ...)` makes.

Before quantizing, the input channels that carry large activations are scaled up in the
weights and down in the normalization that produces them (`rules.folding`: only layers
whose input a normalization produces alone, as in AWQ's mappings for pre-norm models):
for each such normalization, with the mean |x_j| of its output over the first `samples`
examples of `calibration`, s = mean|x|^r / sqrt(max * min) for the r in {0, 1/20, ...,
19/20} whose quantized readers reproduce their float outputs on those activations best
(the reference's `auto_scale` grid search; r = 0 is plain quantization, so AWQ never does
worse than it on the calibration data). The reference's separate clipping search is
replaced by the quantizer's own per-group clipped-scale search.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from kmr_dsl.rules import checks, folding
from kmr_dsl.rules.smoothquant import fold_groups
from kmr_dsl.runtime import layers as kl
from kmr_dsl.runtime import modules as km
from kmr_dsl.runtime import quant

RULE = "awq"
BITS = (2, 4, 8)
GRID = 20
SAMPLE_ROWS = 512


def apply(model: nn.Module, layers, bits: int = 4, group_size: int = 128, calibration=None, samples: int = 128):
    bits = int(checks.choice(RULE, "bits", bits, BITS))
    group_size = checks.integer(RULE, "group_size", group_size, 0, 1 << 20)
    samples = checks.integer(RULE, "samples", samples, 1, 1 << 20)
    found = fold_groups(model, layers, calibration, samples, RULE, keep_rows=SAMPLE_ROWS)
    if found is None:
        return model
    groups, stats = found
    for _, norm, linears in groups:
        x = stats[linears[0][0]].sample.float()
        scale = _search(x, stats[linears[0][0]].absmean.float(), [leaf for _, leaf in linears], bits, group_size)
        folding.fold(norm, linears, scale)
    # every selected Linear is in a group (norm_groups refuses one that is not)
    for name, leaf in (pair for _, _, linears in groups for pair in linears):
        weight = kl.leaf_weight(leaf).float()
        kl.set_module(model, name, km.quantized_leaf(leaf, weight, bits, group_size))
    return model


def _search(x: torch.Tensor, x_mean: torch.Tensor, linears, bits: int, group_size: int) -> torch.Tensor:
    weights = [kl.leaf_weight(leaf).float() for leaf in linears]
    want = [x @ w.T for w in weights]
    best, best_err = torch.ones_like(x_mean), None
    for step in range(GRID):
        ratio = step / GRID
        s = x_mean.clamp(min=1e-4) ** ratio
        s = s / (s.max() * s.min()).sqrt()
        err = 0.0
        for w, y in zip(weights, want):
            q = quant.dequantize(*quant.quantize(w * s[None, :], bits, group_size), bits, group_size)
            err += float(((x @ (q / s[None, :]).T - y) ** 2).mean())
        if best_err is None or err < best_err:
            best, best_err = s, err
    return best
