"""The float twin of a KMR artifact, and what each of its weights was.

Contract: `float_twin(model)` returns (twin, plan). The twin is a copy of the
loaded artifact whose every leaf is a plain float32 torch layer computing exactly the
values the artifact's layer computes (a weight-only integer layer dequantizes to its
own grid values; a bf16 layer is widened, which is exact; an int8 dynamic Linear's
weight becomes its dequantized codes). `plan` maps each leaf's qualified name to a
`Leaf`: its format in the artifact (`float32`, `bfloat16`, `int8`, `int8_dynamic`,
`int4`, `int2`; `intN asymmetric` for weights with zero points, which exporters write as
float), its dequantized weight, and for integer leaves the integer codes and
per-row scales. Exporters read the plan to re-encode those weights in their target
format; a leaf whose format has no equivalent there is refused by the exporter with
the leaf's name (KMR520), unless the user asked for float weights with the same values
(`--dense`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn as nn

from kmr_dsl.runtime import int8_kernels as k8

from kmr_dsl.runtime import layers as kl, modules as km


@dataclass
class Leaf:
    name: str
    kind: str                       # Linear | Conv2d | Embedding | Conv1d
    format: str                     # float32 | bfloat16 | int8 | int8_dynamic | int4 | int2
    weight: torch.Tensor            # float32 values the layer computes with
    codes: torch.Tensor | None      # integer codes (int formats)
    scale: torch.Tensor | None      # one float32 scale per row (int formats)
    structure: str = "plain"        # plain | factorized | lora


def _format(leaf: nn.Module) -> str:
    if not getattr(leaf, "symmetric", True):
        # zero points: no exporter maps them yet, so they write the dequantized floats
        return f"int{kl.leaf_bits(leaf)} asymmetric"
    if k8.is_dynamic(leaf):
        return "int8_dynamic"
    if isinstance(leaf, km.QuantWeight):
        return f"int{leaf.bits}"
    return "bfloat16" if leaf.weight.dtype == torch.bfloat16 else "float32"


def _codes(leaf: nn.Module):
    if not getattr(leaf, "symmetric", True):
        return None, None
    if k8.is_dynamic(leaf):
        q, scale, _ = k8.dynamic_parts(leaf)
        return q, scale
    if isinstance(leaf, km.QuantWeight):
        return leaf.int_weight(), leaf.scale.float()
    return None, None


def _float_leaf(leaf: nn.Module, weight: torch.Tensor) -> nn.Module:
    """A plain float32 module computing what `leaf` computes."""
    bias = kl.leaf_bias(leaf)
    bias = None if bias is None else bias.detach().float().clone()
    if isinstance(leaf, (km.QuantLinear, nn.Linear)) or k8.is_dynamic(leaf):
        new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    elif isinstance(leaf, (km.QuantConv2d, nn.Conv2d)):
        new = nn.Conv2d(weight.shape[1] * leaf.groups, weight.shape[0], tuple(weight.shape[2:]), stride=leaf.stride,
                        padding=leaf.padding, dilation=leaf.dilation, groups=leaf.groups, bias=bias is not None,
                        padding_mode=getattr(leaf, "padding_mode", "zeros"))
    elif isinstance(leaf, nn.Conv1d):
        return leaf.float()
    elif isinstance(leaf, (km.QuantEmbedding, nn.Embedding)):
        new = nn.Embedding(weight.shape[0], weight.shape[1], padding_idx=leaf.padding_idx)
    else:  # pragma: no cover - kl.is_leaf admits only the classes above
        raise TypeError(type(leaf).__name__)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    return new


def _structure(model: nn.Module, leaf_name: str) -> str:
    parent = leaf_name.rpartition(".")[0]
    mod = kl.get_module(model, parent) if parent else None
    if isinstance(mod, km.FactorizedLinear):
        return "factorized"
    if isinstance(mod, km.LoRALinear):
        return "lora"
    return "plain"


def float_twin(model: nn.Module) -> tuple[nn.Module, dict[str, Leaf]]:
    twin = copy.deepcopy(model).eval()
    plan: dict[str, Leaf] = {}
    for name, layer in kl.logical_layers(twin):
        for leaf_name, leaf in kl.leaves(name, layer):
            weight = kl.leaf_weight(leaf).detach().float().clone()
            codes, scale = _codes(leaf)
            kind = kl.kind_of(leaf) or type(leaf).__name__
            plan[leaf_name] = Leaf(leaf_name, kind, _format(leaf), weight, codes, scale, _structure(twin, leaf_name))
            kl.set_module(twin, leaf_name, _float_leaf(leaf, weight))
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin.float(), plan


__all__ = ["Leaf", "float_twin"]
