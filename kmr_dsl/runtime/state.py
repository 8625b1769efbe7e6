"""The abstract state (spec section 5), measured on a real model.

Contract: `measure_state(model, inputs=None)` returns

    {"layers": {NAME: {kind, in_features, out_features, params, density, bits, rank,
                       adapter_rank, frozen, group_size, symmetric, foldable,
                       heads, input_scale}},
     "trainable": bool, "trainable_params": int}

for every logical layer (`layers.logical_layers`; a factorized or adapted Linear keeps
its original qualified name). This is what the honesty tests compare with a rule's
`effect`. How each field is read:
- in/out_features: Linear in/out, Conv channels, Embedding (embedding_dim,
  num_embeddings), norms their feature count; a FactorizedLinear (first.in, second.out).
- params: weight elements (both factors of a factorized layer; integer weights count
  their elements) + biases + the layer's other parameters (LoRA adapters, norm affine).
- density: non-zero weight elements / weight elements over the layer's leaves (adapters
  excluded); integer zeros are exactly the float zeros.
- bits: the narrowest leaf: float32 32, bf16/fp16 16, int8 dynamic 8, weight-only b.
- rank: min(nominal, in_features, out_features), where nominal is a FactorizedLinear's
  inner size or the kept rank a dense Linear truncated by `lowrank` records in its
  attribute `kmr_rank` (unbounded otherwise). So channel pruning lowers the rank of the
  layers it shrinks when a side becomes smaller than the rank.
- adapter_rank: the rank of an unmerged LoRA adapter, else 0.
- group_size: the inputs per scale of a weight-only integer layer quantized group-wise
  (`QuantWeight.group_size`), else 0.
- symmetric: False when an integer weight of the layer carries zero points, else True.
- heads: the head units of a query/key/value projection of a recognised attention
  (`runtime.heads.units_of`), else 0.
- frozen: the layer's own float weights cannot receive gradients (requires_grad off;
  for an adapted layer: its base). A model-wide int quantization does not freeze layers.
- foldable: the layer is in `runtime.norms.fold_groups`, traced on `inputs` (default:
  the model's own example, `forward.model_example`; KMR404 when a model with a
  normalization has none). A model without a normalization needs no pass: nothing folds.
- input_scale: the layer is a `ScaledLinear` (an explicit per-input-channel vector
  multiplies its input: awq's or smoothquant's scale where no norm could absorb it).
- trainable: the model holds no integer layer (torch has no backward for the int8
  kernels and integer weights are buffers) and some float parameter requires grad.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from kmr_dsl.core.state import full_rank
from kmr_dsl.diagnostics import KmrError, Span, error
from kmr_dsl.runtime import forward, heads, norms
from kmr_dsl.runtime import layers as kl
from kmr_dsl.runtime import int8_kernels as k8
from kmr_dsl.runtime import modules as km


def _leaf_params(leaf: nn.Module) -> int:
    _, numel = kl.leaf_nonzero(leaf)
    bias = kl.leaf_bias(leaf)
    return numel + (0 if bias is None else bias.numel())


def layer_params(name: str, layer: nn.Module) -> int:
    ls = kl.leaves(name, layer)
    leaf_ids = {id(leaf) for _, leaf in ls}
    total = sum(_leaf_params(leaf) for _, leaf in ls)
    for mod in layer.modules():
        if id(mod) in leaf_ids or kl.is_leaf(mod):
            continue
        total += sum(p.numel() for p in mod.parameters(recurse=False))
    return total


def layer_nonzero(name: str, layer: nn.Module) -> int:
    """Non-zero weight elements, plus every other parameter of the layer in full."""
    nnz = 0
    for _, leaf in kl.leaves(name, layer):
        nnz += kl.leaf_nonzero(leaf)[0]
        bias = kl.leaf_bias(leaf)
        nnz += 0 if bias is None else bias.numel()
    return nnz + layer_params(name, layer) - sum(_leaf_params(leaf) for _, leaf in kl.leaves(name, layer))


def layer_density(name: str, layer: nn.Module) -> float:
    ls = kl.leaves(name, layer)
    if not ls:
        weight = getattr(layer, "weight", None)
        if weight is None or weight.numel() == 0:
            return 1.0
        return float((weight != 0).sum()) / weight.numel()
    nnz = numel = 0
    for _, leaf in ls:
        a, b = kl.leaf_nonzero(leaf)
        nnz, numel = nnz + a, numel + b
    return nnz / numel if numel else 1.0


def layer_rank(layer: nn.Module) -> int:
    """min(nominal rank, in, out): a matrix never has more rank than its sides."""
    if isinstance(layer, (km.LoRALinear, km.ScaledLinear)):
        return layer_rank(layer.base if isinstance(layer, km.LoRALinear) else layer.linear)
    in_f, out_f = kl.layer_features(layer)
    nominal = layer.rank if isinstance(layer, km.FactorizedLinear) else getattr(layer, "kmr_rank", None)
    side = full_rank(in_f, out_f)
    return int(side if nominal is None else min(nominal, side))


def layer_frozen(name: str, layer: nn.Module) -> bool:
    base = layer.base if isinstance(layer, km.LoRALinear) else layer
    floats = [leaf.weight for _, leaf in kl.leaves(name, base) if kl.leaf_is_float(leaf)]
    if not kl.leaves(name, base):
        floats = [p for p in base.parameters() if p.is_floating_point()]
    if isinstance(layer, km.LoRALinear):
        return not any(p.requires_grad for p in floats)
    return bool(floats) and not any(p.requires_grad for p in floats)


def has_integer_layer(model: nn.Module) -> bool:
    return any(k8.is_int8_kernel(m) or isinstance(m, km.QuantWeight) for m in model.modules())


def is_trainable(model: nn.Module) -> bool:
    if has_integer_layer(model):
        return False
    return any(p.requires_grad and p.is_floating_point() for p in model.parameters())


def trainable_params(model: nn.Module) -> int:
    if not is_trainable(model):
        return 0
    return sum(p.numel() for p in model.parameters() if p.requires_grad and p.is_floating_point())


def foldable_layers(model: nn.Module, inputs: torch.Tensor | None = None) -> set[str]:
    """The logical layers a per-input scale folds into (`norms.fold_groups`)."""
    if not norms.has_norm(model):
        return set()
    if inputs is None:
        found = forward.model_example(model)
        if found is None:
            raise KmrError(error("KMR404", Span.unknown(), "cannot tell the model's example input shape, needed to "
                                 "trace which normalization each layer reads",
                                 hint="give the model an `example_input` attribute (a tensor or its shape)"))
        inputs = forward.example_input(*found)
        if any(p.is_meta for p in model.parameters()):
            inputs = inputs.to("meta")
    try:
        return set(norms.fold_groups(model, inputs))
    except (RuntimeError, IndexError, ValueError, TypeError) as exc:
        raise KmrError(error("KMR404", Span.unknown(), f"the model does not run on the example input of shape "
                             f"{tuple(inputs.shape)} that traces which normalization each layer reads",
                             f"{type(exc).__name__}: {str(exc)[:400]}",
                             hint="give the model an `example_input` attribute (a tensor or its shape)")) from exc


def layer_state(name: str, layer: nn.Module, foldable: bool = False, heads: int = 0) -> dict:
    in_f, out_f = kl.layer_features(layer)
    return {
        "kind": kl.kind_of(layer),
        "in_features": int(in_f),
        "out_features": int(out_f),
        "params": int(layer_params(name, layer)),
        "density": float(layer_density(name, layer)),
        "bits": int(kl.layer_bits(layer, name)),
        "rank": int(layer_rank(layer)),
        "adapter_rank": int(layer.rank) if isinstance(layer, km.LoRALinear) else 0,
        "frozen": bool(layer_frozen(name, layer)),
        "group_size": kl.layer_group_size(layer, name),
        "symmetric": kl.layer_symmetric(layer, name),
        "foldable": bool(foldable),
        "heads": int(heads),
        "input_scale": isinstance(layer, km.ScaledLinear),
    }


def measure_state(model: nn.Module, inputs: torch.Tensor | None = None) -> dict:
    folds = foldable_layers(model, inputs)
    units = heads.units_of(model)
    return {
        "layers": {name: layer_state(name, layer, name in folds, units.get(name, 0))
                   for name, layer in kl.logical_layers(model)},
        "trainable": is_trainable(model),
        "trainable_params": trainable_params(model),
    }


__all__ = ["foldable_layers", "has_integer_layer", "is_trainable", "layer_density", "layer_frozen", "layer_nonzero", "layer_params",
           "layer_rank", "layer_state", "measure_state", "trainable_params"]
