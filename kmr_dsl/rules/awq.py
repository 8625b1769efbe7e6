"""`awq`: activation-aware weight quantization (Lin et al., 2024).

Contract (stdlib/rules.kmr): requires `layer.bits >= 16`; effect `layer.bits = bits`,
`layer.group_size = group_size`, `layer.input_scale = layer.input_scale or not
layer.foldable`, the model stops being trainable. The result is the weight-only integer
layer `quantize(scheme = weight_only, group_size = ..., symmetric = ...)` makes, on the
same grid (`symmetric = false`: the affine grid with a zero point per group, the
reference's default).

The reference's two searches (llm-awq `auto_scale` and `auto_clip`), each judged by the
layer's output error on its real inputs: the first `samples` examples of `calibration`,
every row (token) of them, through the input second moment H = E[x x^T] of each layer
(the output error of a weight error D is trace(D H D^T), the mean squared output error
over those rows, computed without keeping the rows):
1. Scale: with the mean |x_j| of the layer's input, s = mean|x|^r / sqrt(max * min) for
   the r in {0, 1/20, ..., 19/20} whose plainly rounded layers (no clipping, as the
   reference's search) reproduce their float outputs best. r = 0 is no scaling.
   Where the layers are `foldable` (`rules.folding`: a normalization's output read by
   Linear layers only, as in AWQ's mappings for pre-norm models) one s per
   normalization, searched over all its readers, folds into it; elsewhere (post-norm
   BERT) each layer gets its own s, searched on its own output, and keeps 1/s as an
   explicit fp32 vector multiplying its input at run time, before the dequantized
   weights (`modules.ScaledLinear`).
2. Clip: each group's step is then chosen among the quantizer's clipped candidates
   (the largest magnitude shrunk by `quant.CLIP_RATIOS`, and the side fit) for the least
   error of that group's share of the output, d^T H_g d with H_g the group's block of
   the scaled input's second moment (`quant.quantize(gram = ...)`), where plain
   quantization picks the least squared weight error. The reference shrinks the
   largest magnitude by 1.0 ... 0.55, judges on 512 sampled tokens and skips q and k;
   this grid reaches 0.2, every token counts and every layer is clipped (on MiniLM
   neither difference changed the result: docs/benchmarks.md). 8 bits has no clipping (its grid takes the largest
   magnitude). A layer whose input was not observed (a factorized layer's second factor)
   is quantized plainly.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from kmr_dsl.rules import calibration as calibration_
from kmr_dsl.rules import checks, folding
from kmr_dsl.rules.smoothquant import scale_targets
from kmr_dsl.runtime import layers as kl
from kmr_dsl.runtime import modules as km
from kmr_dsl.runtime import quant, training

RULE = "awq"
BITS = (2, 4, 8)
GRID = 20


def apply(model: nn.Module, layers, bits: int = 4, group_size: int = 128, calibration=None, samples: int = 128,
          symmetric: bool = True):
    bits = int(checks.choice(RULE, "bits", bits, BITS))
    group_size = checks.integer(RULE, "group_size", group_size, 0, 1 << 20)
    samples = checks.integer(RULE, "samples", samples, 1, 1 << 20)
    symmetric = bool(symmetric)
    rounded = _rounding(bits, group_size, symmetric)
    found = scale_targets(model, layers, calibration, samples, RULE)
    if found is None:
        return model
    groups, explicit, stats = found
    # every token of the calibration inputs, through each leaf's input second moment
    inputs = training.require_data(calibration, RULE).inputs[:samples]
    targets = [pair for _, _, linears in groups for pair in linears] + list(explicit)
    moments = {name: h.value() / 2.0 for name, h in calibration_.observe(
        model, inputs, targets, lambda leaf: calibration_.Hessian(leaf.in_features), RULE).items()}
    grams = {}          # leaf -> the second moment of the (scaled) input its weights now see
    shift = {}          # a layer's inputs already divided by a fold (a group member that is not foldable)
    for _, norm, linears in groups:
        name = linears[0][0]
        s = _search(moments[name].float(), stats[name].absmean.float(), [leaf for _, leaf in linears], rounded)
        folding.fold(norm, linears, s)
        shift.update({n: s for n, _ in linears})
        grams.update({leaf: _divided(moments[name], s) for _, leaf in linears})
    for name, leaf in explicit:
        d = shift.get(name, torch.ones(leaf.in_features))
        h = _divided(moments[name], d)
        s = _search(h, stats[name].absmean.float() / d, [leaf], rounded)
        folding.scale_explicitly(model, name, leaf, s)
        grams[leaf] = _divided(h, s)
    # every selected layer: its (scaled) float leaf becomes the weight-only integer one,
    # its groups clipped for the least output error on the calibration inputs
    for name, _ in layers:
        for leaf_name, leaf in kl.leaves(name, kl.get_module(model, name)):
            weight = kl.leaf_weight(leaf).float()
            gram = grams.get(leaf)
            codes = None if gram is None else (quant.quantize if symmetric else quant.quantize_affine)(
                weight, bits, group_size, gram=quant.group_grams(gram, group_size))
            kl.set_module(model, leaf_name, km.quantized_leaf(leaf, weight, bits, group_size, codes=codes,
                                                              symmetric=symmetric))
    return model


def _divided(h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The second moment of x / s given that of x."""
    s = s.double() if h.dtype == torch.float64 else s.float()
    return h / (s[:, None] * s[None, :])


def output_error(diff: torch.Tensor, gram: torch.Tensor) -> float:
    """The mean squared output error (summed over outputs) of a weight error `diff` on
    inputs with second moment `gram`: trace(D H D^T)."""
    return float(((diff @ gram) * diff).sum())


def _rounding(bits: int, group_size: int, symmetric: bool):
    """Plain rounding onto the layer's grid (no clipping search): what the scale search judges."""
    if symmetric:
        return lambda w: quant.dequantize(*quant.quantize(w, bits, group_size, clip=False), bits, group_size)

    def affine(w):
        q, scale, zero = quant.quantize_affine(w, bits, group_size, clip=False)
        return quant.dequantize(q, scale, bits, group_size, zero=zero)
    return affine


def _search(gram: torch.Tensor, x_mean: torch.Tensor, linears, rounded) -> torch.Tensor:
    gram = gram.float()
    weights = [kl.leaf_weight(leaf).float() for leaf in linears]
    best, best_err = torch.ones_like(x_mean), None
    for step in range(GRID):
        s = x_mean.clamp(min=1e-4) ** (step / GRID)
        s = s / (s.max() * s.min()).sqrt()
        err = 0.0
        for w in weights:
            err += output_error(rounded(w * s[None, :]) / s[None, :] - w, gram)
        if best_err is None or err < best_err:
            best, best_err = s, err
    return best
