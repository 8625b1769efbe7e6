"""`awq`: activation-aware weight quantization (Lin et al., 2024).

Contract (stdlib/rules.kmr): requires `layer.bits >= 16`; effect `layer.bits = bits`,
`layer.group_size = group_size`, `layer.input_scale = layer.input_scale or not
layer.foldable`, the model stops being trainable. The result is the weight-only integer
layer `quantize(scheme = weight_only, group_size = ...)` makes.

Before quantizing, the input channels that carry large activations are scaled up in the
weights and down in the activations: with the mean |x_j| of a layer's input over the
first `samples` examples of `calibration`, s = mean|x|^r / sqrt(max * min) for the r in
{0, 1/20, ..., 19/20} whose quantized layers reproduce their float outputs on those
activations best (the reference's `auto_scale` grid search; r = 0 is plain quantization,
so AWQ never does worse than it on the calibration data). Where the layers are
`foldable` (`rules.folding`: a normalization's output read by Linear layers only, as in
AWQ's mappings for pre-norm models) one s per normalization, searched over all its
readers, folds into it; elsewhere (post-norm BERT) each layer gets its own s, searched
on its own output, and keeps 1/s as an explicit fp32 vector multiplying its input at
run time, before the dequantized weights (`modules.ScaledLinear`). The reference's
separate clipping search is replaced by the quantizer's own per-group clipped-scale search.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from kmr_dsl.rules import checks, folding
from kmr_dsl.rules.smoothquant import scale_targets
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
    found = scale_targets(model, layers, calibration, samples, RULE, keep_rows=SAMPLE_ROWS)
    if found is None:
        return model
    groups, explicit, stats = found
    shift = {}          # a layer's inputs already divided by a fold (a group member that is not foldable)
    for _, norm, linears in groups:
        first = stats[linears[0][0]]
        s = _search(first.sample.float(), first.absmean.float(), [leaf for _, leaf in linears], bits, group_size)
        folding.fold(norm, linears, s)
        shift.update({name: s for name, _ in linears})
    for name, leaf in explicit:
        x, d = stats[name], shift.get(name, 1.0)
        folding.scale_explicitly(model, name, leaf, _search(x.sample.float() / d, x.absmean.float() / d, [leaf], bits,
                                                            group_size))
    # every selected layer: its (scaled) float leaf becomes the weight-only integer one
    for name, _ in layers:
        for leaf_name, leaf in kl.leaves(name, kl.get_module(model, name)):
            weight = kl.leaf_weight(leaf).float()
            kl.set_module(model, leaf_name, km.quantized_leaf(leaf, weight, bits, group_size))
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
