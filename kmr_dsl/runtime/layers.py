"""Logical layers of a model, their weight leaves, pruning masks and channel links.

Contract:
- A *logical layer* is a named submodule (not the root) whose kind is in LAYER_KINDS:
  torch's own layers by class name, KMR's compressed layers by their `kmr_kind`. The
  walk does not descend into a logical layer, so a FactorizedLinear `fc1` is one layer
  `fc1` of kind Linear (its factors `fc1.first`, `fc1.second` are its *leaves*).
  `select_layers` is how a runner turns a selector into the `layers` argument of a rule.
- A *leaf* is a module that holds one matrix weight (Linear, Conv1d/2d, Embedding in
  float, half, weight-only integer or int8-dynamic form, and transformers' `Conv1D`, the
  GPT-2 projection: a Linear whose weight is stored transposed, [in, out]; it is of kind
  `Linear`, `leaf_weight` reads it as [out, in], and a rule that changes its structure
  first turns it into the equal `nn.Linear` with `as_linear`). `leaves(name, layer)` lists a
  layer's leaves with their qualified names.
- Masks: pruning stores a bool mask as the non-persistent buffer `kmr_mask` on a float
  leaf (not saved: the artifact's zeros are the mask). `apply_masks(model)` re-zeroes
  pruned weights; training calls it after every optimizer step, so zeros stay zeros.
- Channel links (`channel_links`): in a chain of `nn.Sequential` containers (nested
  Sequentials are flattened) a Linear/Conv1d/Conv2d *producer* is linked to the next
  Linear/Conv layer whose input size equals the producer's output size, provided only
  channel-preserving modules (activations, dropout, pooling, identity, BatchNorm with
  matching features) lie between them; a `Flatten` between a conv and a Linear links
  them when the Linear's input is a multiple of the conv's channels (each channel then
  owns a block of in/C consecutive inputs). BatchNorms in between are linked too and
  are sliced with the producer. Anything else breaks the chain. Models that are not
  built from Sequentials get no links (structured pruning then refuses them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from kmr_dsl.patterns import selected

import torch
import torch.nn as nn

from kmr_dsl.core.state import MATRIX_KINDS
from kmr_dsl.runtime import int8_kernels as k8
from kmr_dsl.runtime import modules as km

LAYER_KINDS = MATRIX_KINDS + ("LayerNorm", "BatchNorm1d", "BatchNorm2d", "GroupNorm")
MASK = "kmr_mask"
TIED_OWNER = "kmr_tied_owner"     # a tied alias's reference to the layer it reads (runtime.tied)


def is_conv1d(module: nn.Module) -> bool:
    """transformers' `Conv1D` (GPT-2): y = x @ W + b with W stored [in, out]. Recognised
    by its class name and fields, so that this module does not import transformers."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and hasattr(module, "nx") \
        and isinstance(getattr(module, "weight", None), torch.Tensor)


def as_linear(leaf: nn.Module) -> nn.Module:
    """An `nn.Linear` computing exactly what a Conv1D leaf computes (weight transposed
    back to [out, in]; dtype, requires_grad and any pruning mask kept); any other leaf
    is returned as it is."""
    if not is_conv1d(leaf):
        return leaf
    weight = leaf.weight.detach()
    bias = getattr(leaf, "bias", None)
    lin = nn.Linear(int(leaf.nx), int(leaf.nf), bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        lin.weight.copy_(weight.t())
        lin.weight.requires_grad_(leaf.weight.requires_grad)
        if bias is not None:
            lin.bias.copy_(bias.detach())
            lin.bias.requires_grad_(bias.requires_grad)
    mask = getattr(leaf, MASK, None)
    if mask is not None:
        lin.register_buffer(MASK, mask.t().contiguous(), persistent=False)
    lin.train(leaf.training)
    return lin


def kind_of(module: nn.Module) -> str | None:
    kind = getattr(type(module), "kmr_kind", None)
    if kind:
        return kind
    if is_conv1d(module):
        return "Linear"
    name = type(module).__name__
    return name if name in LAYER_KINDS else None


def logical_layers(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    out: list[tuple[str, nn.Module]] = []
    for child_name, child in model.named_children():
        name = f"{prefix}{child_name}"
        if kind_of(child):
            out.append((name, child))
        else:
            out.extend(logical_layers(child, name + "."))
    return out


def select_layers(model: nn.Module, kinds=(), names: tuple[str, ...] | str | None = None,
                  exclude: tuple[str, ...] | None = None) -> list[tuple[str, nn.Module]]:
    """The `layers` argument for a step `RULE(...) on layers(KINDS, name = P, exclude = Q)`."""
    if isinstance(names, str):
        names = (names,)
    return [(n, m) for n, m in logical_layers(model)
            if (not kinds or kind_of(m) in kinds) and selected(n, names, exclude)]


def get_module(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path) if path else model


def set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, attr = path.rpartition(".")
    parent = get_module(model, parent_path)
    old = parent._modules.get(attr)
    setattr(parent, attr, new)
    if old is not None and old is not new:
        # a tied alias (runtime.tied) follows its owner into its new form
        for mod in model.modules():
            if mod.__dict__.get(TIED_OWNER) is old:
                mod.__dict__[TIED_OWNER] = new


def tied_aliases(model: nn.Module, layer: nn.Module) -> list[str]:
    """Names of the tied embeddings (runtime.tied) that read `layer`'s weight."""
    return [n for n, m in model.named_modules() if m.__dict__.get(TIED_OWNER) is layer]


# ---------------------------------------------------------------- leaves

def is_leaf(module: nn.Module) -> bool:
    if k8.is_int8_kernel(module) or isinstance(module, km.QuantWeight):
        return True
    return isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)) or is_conv1d(module)


def leaves(name: str, layer: nn.Module) -> list[tuple[str, nn.Module]]:
    if isinstance(layer, km.FactorizedLinear):
        return leaves(f"{name}.first", layer.first) + leaves(f"{name}.second", layer.second)
    if isinstance(layer, km.LoRALinear):
        return leaves(f"{name}.base", layer.base)
    if isinstance(layer, km.ScaledLinear):
        return leaves(f"{name}.linear", layer.linear)
    return [(name, layer)] if is_leaf(layer) else []


def leaf_bits(leaf: nn.Module) -> int:
    if k8.is_int8_kernel(leaf):
        return 8
    if isinstance(leaf, km.QuantWeight):
        return leaf.bits
    return 16 if leaf.weight.dtype in (torch.bfloat16, torch.float16) else 32


def leaf_is_float(leaf: nn.Module) -> bool:
    return leaf_bits(leaf) >= 16


def leaf_weight(leaf: nn.Module) -> torch.Tensor:
    """The weight as float values (dequantized for integer leaves), detached."""
    if k8.is_int8_kernel(leaf):
        from kmr_dsl.runtime.quant import dequantize
        q, scale, _ = k8.dynamic_parts(leaf)
        return dequantize(q, scale, zero=k8.int8_zero_points(leaf))
    if isinstance(leaf, km.QuantWeight):
        return leaf.dequantized()
    if is_conv1d(leaf):
        return leaf.weight.detach().t()
    return leaf.weight.detach()


def leaf_nonzero(leaf: nn.Module) -> tuple[int, int]:
    """(non-zero weights, weight elements); integer zeros are exactly the float zeros
    (code 0, or the zero point on the affine grid)."""
    if k8.is_int8_kernel(leaf):
        from kmr_dsl.runtime.quant import zero_codes
        q = k8.dynamic_parts(leaf)[0]
        q = ~zero_codes(q, k8.int8_zero_points(leaf))
    elif isinstance(leaf, km.QuantWeight):
        q = ~leaf.zero_codes()
    else:
        q = leaf.weight.detach()
    if q.is_meta:              # shapes without values (a model too big to load): density 1
        return q.numel(), q.numel()
    return int(torch.count_nonzero(q)), q.numel()


def leaf_bias(leaf: nn.Module) -> torch.Tensor | None:
    if k8.is_int8_kernel(leaf):
        return k8.dynamic_parts(leaf)[2]
    return getattr(leaf, "bias", None)


def layer_bits(layer: nn.Module, name: str = "") -> int:
    ls = leaves(name, layer)
    if ls:
        return min(leaf_bits(leaf) for _, leaf in ls)
    params = [p for p in layer.parameters() if p.is_floating_point()]
    if params and all(p.dtype in (torch.bfloat16, torch.float16) for p in params):
        return 16
    return 32


def layer_symmetric(layer: nn.Module, name: str = "") -> bool:
    """Whether no integer weight of the layer carries zero points (float layers: True)."""
    return all(getattr(leaf, "symmetric", True) for _, leaf in leaves(name, layer))


def layer_group_size(layer: nn.Module, name: str = "") -> int:
    """Inputs per integer scale of the layer's weights (0: one scale per row, or float)."""
    return max((getattr(leaf, "group_size", 0) for _, leaf in leaves(name, layer)), default=0)


def layer_features(layer: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) with the meanings of facts.LayerFact."""
    if isinstance(layer, (nn.Embedding, km.QuantEmbedding)):
        return layer.embedding_dim, layer.num_embeddings
    if is_conv1d(layer):
        return int(layer.nx), int(layer.nf)
    if hasattr(layer, "in_features"):
        return int(layer.in_features), int(layer.out_features)
    if hasattr(layer, "in_channels"):
        return int(layer.in_channels), int(layer.out_channels)
    if isinstance(layer, nn.LayerNorm):
        n = 1
        for s in layer.normalized_shape:
            n *= s
        return n, n
    if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return layer.num_features, layer.num_features
    if isinstance(layer, nn.GroupNorm):
        return layer.num_channels, layer.num_channels
    return 0, 0


# ---------------------------------------------------------------- masks

def set_mask(leaf: nn.Module, mask: torch.Tensor) -> None:
    """Record `mask` (True = kept) on a float leaf and zero the pruned weights."""
    mask = mask.reshape(leaf.weight.shape).bool()
    old = getattr(leaf, MASK, None)
    if old is not None:
        mask = mask & old
    if MASK in leaf._buffers:
        leaf._buffers[MASK] = mask
    else:
        leaf.register_buffer(MASK, mask, persistent=False)
    with torch.no_grad():
        leaf.weight.mul_(mask.to(leaf.weight.dtype))


def current_mask(leaf: nn.Module) -> torch.Tensor:
    """Kept positions: non-zero weights (zeros count as pruned) within any stored mask."""
    keep = leaf.weight.detach() != 0
    old = getattr(leaf, MASK, None)
    return keep if old is None else keep & old


def top_per_row(scores: torch.Tensor, counts: list[int]) -> torch.Tensor:
    """A mask of each row's `counts[row]` highest scores (ties: the earlier position)."""
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(scores.shape[1]).expand_as(order).contiguous())
    return ranks < torch.tensor(counts, dtype=ranks.dtype)[:, None]


def apply_masks(model: nn.Module) -> None:
    with torch.no_grad():
        for module in model.modules():
            mask = module._buffers.get(MASK) if hasattr(module, "_buffers") else None
            if mask is not None and getattr(module, "weight", None) is not None:
                module.weight.mul_(mask.to(module.weight.dtype))


# ---------------------------------------------------------------- channel links

_PASSTHROUGH = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.Softplus,
    nn.Mish, nn.Hardswish, nn.Hardtanh, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
    nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
)
_WEIGHT_KINDS = ("Linear", "Conv1d", "Conv2d")


@dataclass
class ChannelLink:
    """What must shrink when `producer` loses output channels."""

    producer: str
    consumers: list[tuple[str, int]] = field(default_factory=list)   # (layer, inputs per channel)
    norms: list[str] = field(default_factory=list)                   # BatchNorms to slice
    # the other layers whose output channels are the same channels (a residual stream's
    # producers, a gated unit's gate and up projections, a depthwise convolution over them): they lose the same channels
    coupled: list[str] = field(default_factory=list)
    depthwise: list[str] = field(default_factory=list)               # members that are depthwise convs

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.norms) + tuple(n for n, _ in self.consumers)


def _sequential_like(m: nn.Module) -> bool:
    return isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward


def _chain(container: nn.Module, prefix: str):
    for child_name, child in container.named_children():
        name = f"{prefix}{child_name}"
        if not kind_of(child) and _sequential_like(child):
            yield from _chain(child, name + ".")
        else:
            yield name, child


def _link_chain(items, links: dict[str, ChannelLink]) -> None:
    producer: tuple[str, int, str] | None = None   # (name, out channels, kind)
    norms: list[str] = []
    flattened = False
    for name, mod in items:
        kind = kind_of(mod)
        if kind in _WEIGHT_KINDS:
            in_f, out_f = layer_features(mod)
            if producer is not None:
                p_name, p_out, p_kind = producer
                block = 0
                if not flattened and in_f == p_out:
                    block = 1
                elif flattened and p_kind.startswith("Conv") and kind == "Linear" and in_f % p_out == 0:
                    block = in_f // p_out
                if block:
                    link = links.setdefault(p_name, ChannelLink(p_name))
                    link.norms.extend(norms)
                    link.consumers.append((name, block))
            producer, norms, flattened = (name, out_f, kind), [], False
        elif kind in ("BatchNorm1d", "BatchNorm2d") and producer is not None and layer_features(mod)[0] == producer[1]:
            norms.append(name)
        elif isinstance(mod, nn.Flatten) and producer is not None:
            flattened = True
        elif isinstance(mod, _PASSTHROUGH) and not kind:
            continue
        else:
            producer, norms, flattened = None, [], False


def channel_links(model: nn.Module) -> dict[str, ChannelLink]:
    links: dict[str, ChannelLink] = {}
    tops: list[tuple[str, nn.Module]] = []
    if _sequential_like(model):
        tops.append(("", model))
    else:
        def walk(mod, prefix):
            for child_name, child in mod.named_children():
                name = f"{prefix}{child_name}"
                if kind_of(child):
                    continue
                if _sequential_like(child):
                    tops.append((name + ".", child))
                else:
                    walk(child, name + ".")
        walk(model, "")
    for prefix, container in tops:
        _link_chain(list(_chain(container, prefix)), links)
    return links


__all__ = [
    "ChannelLink", "LAYER_KINDS", "MASK", "MATRIX_KINDS", "apply_masks", "as_linear", "channel_links", "current_mask",
    "get_module", "is_conv1d", "is_leaf", "kind_of", "layer_bits", "layer_features", "layer_symmetric", "leaf_bias",
    "leaf_bits", "leaf_is_float", "leaf_nonzero", "leaf_weight", "leaves", "logical_layers", "select_layers",
    "set_mask",
    "set_module", "tied_aliases",
]
