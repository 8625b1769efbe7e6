"""`smoothquant`: migrate activation outliers into the weights (Xiao et al., 2023).

Contract (stdlib/rules.kmr): requires `layer.bits >= 16`; effect `layer.input_scale =
layer.input_scale or not layer.foldable`; the model computes the same function (up to
float rounding). With per-input-channel activation maxima a_j (over the first `samples`
examples of `calibration`) and weight maxima w_j (over every reader's column j), the
scale s_j = a_j^alpha / w_j^(1 - alpha) (1 where either is 0) multiplies the readers'
input column j and divides the activations, so a later `quantize(scheme = static)` sees
flatter activations and the weights take the difference. Where the layer is `foldable`
(a normalization's output is read by Linear layers only: pre-norm transformers) the
division folds into that norm's weight and bias, one scale for all its readers (the whole
group selected: KMR306 / KMR405) and nothing is stored; elsewhere (post-norm BERT, whose
LayerNorm output a residual also reads) each layer keeps its own s as an explicit vector
the layer divides its input by at run time (`modules.ScaledLinear`: in_features fp32 in
the file, `input_scale`; a factorized layer's vector scales its first factor's inputs). A selected
Linear with an unmerged adapter (`requires layer.adapter_rank == 0`) or tied to an
embedding (KMR245 at check time) fails with KMR405.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from kmr_dsl.rules import calibration as calibration_
from kmr_dsl.rules import checks, folding
from kmr_dsl.runtime import layers as kl
from kmr_dsl.runtime import modules as km
from kmr_dsl.runtime import training

RULE = "smoothquant"


def float_linears(rule: str, layers, model: nn.Module | None = None) -> list[tuple[str, nn.Module]]:
    """(logical name, float nn.Linear leaf) of each selected layer: the leaf whose input
    columns a scale multiplies (a factorized layer's first factor; a ScaledLinear's inner
    one, whose vector is multiplied too); a transformers Conv1D becomes the equal
    nn.Linear in `model` first. An unmerged adapter (it reads the unscaled input) or a
    weight tied to an embedding (its table would be scaled) fails with KMR405."""
    out = []
    for name, layer in layers:
        checks.kinds(rule, name, layer, ("Linear",))
        checks.float_weights(rule, name, layer)
        checks.no_adapter(rule, name, layer)
        if model is not None:
            # an embedding reading this weight would see its columns scaled: not the same function
            checks.not_tied(rule, model, name, layer)
        inner_name, inner = (f"{name}.linear", layer.linear) if isinstance(layer, km.ScaledLinear) else (name, layer)
        if isinstance(inner, km.FactorizedLinear):
            inner_name, inner = f"{inner_name}.first", inner.first
        if model is not None and kl.is_conv1d(inner):
            inner = kl.as_linear(inner)
            kl.set_module(model, inner_name, inner)
        if not isinstance(inner, nn.Linear):
            checks.fail(rule, f"`{name}` is a {type(inner).__name__}; a scale applies only to float Linear weights",
                        hint=f"apply `{rule}` before quantizing the layer")
        out.append((name, inner))
    return out


def scale_targets(model: nn.Module, layers, calibration, samples: int, rule: str, keep_rows: int = 0):
    """The selected float Linears split by where their scale goes (`folding.scale_plan`:
    (groups that fold into a norm, layers that keep an explicit vector)), with their input
    statistics on the first `samples` examples of `calibration` (`ChannelStats` of each
    leaf's input, keeping `keep_rows` rows): (groups, explicit, stats), or None when
    nothing is selected. What smoothquant and awq both scale by."""
    data = training.require_data(calibration, rule)
    targets = float_linears(rule, layers, model)
    if not targets:
        return None
    inputs = data.inputs[:samples]
    groups, explicit = folding.scale_plan(model, inputs[:calibration_.BATCH], targets, rule)
    stats = calibration_.observe(model, inputs, targets, lambda leaf: calibration_.ChannelStats(keep_rows), rule)
    return groups, explicit, stats


def smoothing_scale(act_max: torch.Tensor, weight_max: torch.Tensor, alpha: float) -> torch.Tensor:
    scale = act_max.clamp(min=1e-12) ** alpha / weight_max.clamp(min=1e-12) ** (1.0 - alpha)
    return torch.where((act_max > 0) & (weight_max > 0), scale, torch.ones_like(scale)).float()


def apply(model: nn.Module, layers, alpha: float = 0.5, calibration=None, samples: int = 128):
    alpha = checks.number(RULE, "alpha", alpha, 0.0, 1.0)
    samples = checks.integer(RULE, "samples", samples, 1, 1 << 20)
    found = scale_targets(model, layers, calibration, samples, RULE)
    if found is None:
        return model
    groups, explicit, stats = found
    shift = {}          # a layer's inputs already divided by a fold (a group member that is not foldable)
    for _, norm, linears in groups:
        s = _scale(linears, stats, alpha)
        folding.fold(norm, linears, s)
        shift.update({name: s for name, _ in linears})
    for name, leaf in explicit:
        folding.scale_explicitly(model, name, leaf, _scale([(name, leaf)], stats, alpha, shift.get(name)))
    return model


def _scale(linears, stats, alpha: float, shift: torch.Tensor | None = None) -> torch.Tensor:
    """One scale for layers that read one input: their largest |x_j| (divided by `shift`
    where a fold already divided it) and |w_j|."""
    act = torch.stack([stats[name].absmax for name, _ in linears]).amax(dim=0).float()
    act = act if shift is None else act / shift
    weight = torch.stack([kl.leaf_weight(leaf).float().abs().amax(dim=0) for _, leaf in linears]).amax(dim=0)
    return smoothing_scale(act, weight, alpha)
