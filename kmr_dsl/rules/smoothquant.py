"""`smoothquant`: migrate activation outliers into the weights (Xiao et al., 2023).

Contract (stdlib/rules.kmr): requires `layer.bits >= 16` and `layer.foldable` (the
model facts' fold group, read by the same trace, `runtime.norms`; the check also wants
the whole group selected, KMR306); no effect on the state: the
model computes the same function (up to float rounding) and stores the same tensors.
For each normalization whose output only selected Linear layers read
(`rules.folding.norm_groups`), with per-input-channel activation maxima a_j (over the
first `samples` examples of `calibration`) and weight maxima w_j (over every reader's
column j), the scale s_j = a_j^alpha / w_j^(1 - alpha) (1 where either is 0) divides the
normalization's weight and bias and multiplies each reader's input column j: the
activations a later `quantize(scheme = static)` sees are flatter, the weights take the
difference. A selected Linear whose input no normalization produces alone (a residual
also reads it, as in post-norm BERT), that is factorized, adapted or tied to an
embedding fails with KMR405: folding there would change the function.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from kmr_dsl.rules import calibration as calibration_
from kmr_dsl.rules import checks, folding
from kmr_dsl.runtime import layers as kl
from kmr_dsl.runtime import training

RULE = "smoothquant"


def float_linears(rule: str, layers, model: nn.Module | None = None) -> list[tuple[str, nn.Module]]:
    """The selected layers as plain float Linear leaves (what a scale folds into); a
    transformers Conv1D becomes the equal nn.Linear in `model` first."""
    out = []
    for name, layer in layers:
        checks.kinds(rule, name, layer, ("Linear",))
        checks.float_weights(rule, name, layer)
        if model is not None:
            # an embedding reading this weight would see its columns scaled: not the same function
            checks.not_tied(rule, model, name, layer)
        if model is not None and kl.is_conv1d(layer):
            layer = kl.as_linear(layer)
            kl.set_module(model, name, layer)
        if not isinstance(layer, nn.Linear):
            checks.fail(rule, f"`{name}` is a {type(layer).__name__}; a scale folds only into a plain Linear",
                        hint=f"apply `{rule}` before low-rank factorization or LoRA")
        out.append((name, layer))
    return out


def fold_groups(model: nn.Module, layers, calibration, samples: int, rule: str, keep_rows: int = 0):
    """The selected float Linears grouped by the normalization each reads alone
    (`folding.norm_groups`), with their input statistics on the first `samples` examples
    of `calibration` (`ChannelStats`, keeping `keep_rows` input rows): (groups, stats),
    or None when nothing is selected. What smoothquant and awq both fold by."""
    data = training.require_data(calibration, rule)
    targets = float_linears(rule, layers, model)
    if not targets:
        return None
    inputs = data.inputs[:samples]
    groups = folding.norm_groups(model, inputs[:calibration_.BATCH], targets, rule)
    stats = calibration_.observe(model, inputs, targets, lambda leaf: calibration_.ChannelStats(keep_rows), rule)
    return groups, stats


def smoothing_scale(act_max: torch.Tensor, weight_max: torch.Tensor, alpha: float) -> torch.Tensor:
    scale = act_max.clamp(min=1e-12) ** alpha / weight_max.clamp(min=1e-12) ** (1.0 - alpha)
    return torch.where((act_max > 0) & (weight_max > 0), scale, torch.ones_like(scale)).float()


def apply(model: nn.Module, layers, alpha: float = 0.5, calibration=None, samples: int = 128):
    alpha = checks.number(RULE, "alpha", alpha, 0.0, 1.0)
    samples = checks.integer(RULE, "samples", samples, 1, 1 << 20)
    found = fold_groups(model, layers, calibration, samples, RULE)
    if found is None:
        return model
    groups, stats = found
    for _, norm, linears in groups:
        act = torch.stack([stats[name].absmax for name, _ in linears]).amax(dim=0).float()
        weight = torch.stack([kl.leaf_weight(leaf).float().abs().amax(dim=0) for _, leaf in linears]).amax(dim=0)
        folding.fold(norm, linears, smoothing_scale(act, weight, alpha))
    return model
