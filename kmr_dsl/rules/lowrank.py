"""`lowrank`: replace a Linear's weight by its truncated SVD.

Contract (docs/design.md): requires `layer.bits >= 16` and `layer.adapter_rank == 0`;
effect `layer.rank = layer.rank * ratio`. With r the layer's current rank
(`state.layer_rank`), the kept rank is k = ceil(ratio * r); when energy < 1 it is
lowered to the smallest k whose top singular values keep `energy` of the sum of
squared singular values (the effect is then an upper bound); k >= 1.
- If k * (in + out) < in * out the layer becomes a `FactorizedLinear`: first = Linear(in,
  k, no bias) with weight sqrt(S) V^T, second = Linear(k, out) with weight U sqrt(S) and
  the original bias (square roots split the scale evenly, which suits later
  quantization of both factors).
- Otherwise it stays one dense Linear holding the rank-k product and records
  `kmr_rank = k`. With k = r (ratio 1, energy 1) the layer is left untouched, a
  factorized or pruned one included.
The SVD is computed in float64; the factors keep the layer's dtype (bf16 layers stay
bf16). A pruned layer that is truncated (k < r) loses its mask, but its factors are not
dense for sure: a zero row or column of the matrix is a zero row or column of a factor
(the contract's density 1 is an upper end; verify/lowend.py keeps the lower end, 0).
"""

from __future__ import annotations


import torch
import torch.nn as nn

from kmr_dsl.core import step
from kmr_dsl.rules import checks
from kmr_dsl.runtime import layers as kl
from kmr_dsl.runtime import modules as km
from kmr_dsl.runtime import state

RULE = "lowrank"


def apply(model: nn.Module, layers, ratio: float = 0.5, energy: float = 1.0):
    ratio = checks.number(RULE, "ratio", ratio, 0.0, 1.0, lo_open=True)
    energy = checks.number(RULE, "energy", energy, 0.0, 1.0)
    for name, layer in layers:
        checks.kinds(RULE, name, layer, ("Linear",))
        checks.float_weights(RULE, name, layer)
        checks.no_adapter(RULE, name, layer)
        checks.no_input_scale(RULE, name, layer)
        checks.not_tied(RULE, model, name, layer)
        r = state.layer_rank(layer)
        k = int(step.settle("rank", step.NUMBERS.mul(ratio, r)))
        kl.set_module(model, name, truncate(layer, k, energy))
    return model


def effective_weight(layer: nn.Module) -> torch.Tensor:
    if isinstance(layer, km.FactorizedLinear):
        return effective_weight(layer.second) @ effective_weight(layer.first)
    return kl.leaf_weight(layer).double()       # [out, in], a Conv1D's included


def _bias(layer: nn.Module):
    leaf = layer.second if isinstance(layer, km.FactorizedLinear) else layer
    return leaf.bias


def _dtype(layer: nn.Module) -> torch.dtype:
    return kl.leaves("", layer)[0][1].weight.dtype


def _linear(in_f: int, out_f: int, weight: torch.Tensor, bias, dtype) -> nn.Linear:
    lin = nn.Linear(in_f, out_f, bias=bias is not None)
    with torch.no_grad():
        lin.weight.copy_(weight.float())
        if bias is not None:
            lin.bias.copy_(bias.detach().float())
    return km.to_half(lin) if dtype in (torch.bfloat16, torch.float16) else lin


def truncate(layer: nn.Module, k: int, energy: float = 1.0, weight: torch.Tensor | None = None) -> nn.Module:
    """The rank-k (or energy-limited) form of a float Linear-kind layer."""
    current = state.layer_rank(layer)
    if k >= current and energy >= 1.0 and weight is None:
        return layer    # nothing to cut: keep the exact weights, factors and zeros
    w = effective_weight(layer) if weight is None else weight.double()
    out_f, in_f = w.shape
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    if energy < 1.0:
        power = s.pow(2)
        cumulative = torch.cumsum(power, 0) / power.sum().clamp_min(1e-300)
        k = min(k, int(torch.searchsorted(cumulative, torch.tensor(energy, dtype=cumulative.dtype) - 1e-12)) + 1)
    k = max(1, min(k, s.numel()))
    bias, dtype = _bias(layer), _dtype(layer)
    if k * (in_f + out_f) < in_f * out_f:
        root = s[:k].sqrt()
        first = _linear(in_f, k, root[:, None] * vh[:k], None, dtype)
        second = _linear(k, out_f, u[:, :k] * root[None, :], bias, dtype)
        return km.FactorizedLinear(first, second)
    if k >= current and weight is None and not isinstance(layer, km.FactorizedLinear):
        return layer    # the energy limit cut nothing: keep the exact weights (and any mask)
    dense = _linear(in_f, out_f, (u[:, :k] * s[:k]) @ vh[:k], bias, dtype)
    dense.kmr_rank = k
    return dense
