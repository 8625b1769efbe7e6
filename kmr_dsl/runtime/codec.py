"""Layer configs and tensor encodings of the artifact (docs/artifact.md).

Contract:
- `describe(layer)` -> a JSON-able config of a logical layer that `build(config)`
  turns back into an equivalent, empty module (same types, shapes, dtypes): torch's
  layers, their half and integer forms, int8 dynamic Linears, FactorizedLinear,
  LoRALinear and ScaledLinear (recursively; a ScaledLinear's vector is a raw entry
  `NAME.input_scale`), norms; transformers' Conv1D is described as the
  `Linear` it equals (its weight stored [out, in]), so it reloads as an nn.Linear. Flags: `masked` (a float leaf carried a pruning
  mask: it is rebuilt from the zeros), `rank` (a truncated dense Linear's kept rank),
  `frozen` (the layer's own weights are frozen). A layer of any other type is
  `{"type": "keep"}`: it stays as the base model builds it and its tensors are loaded
  raw.
- `encode_layer(path, layer, digits)` -> {entry name: tensor}: each leaf's weight in
  the form of `kmr_dsl.artifact_layout` that makes the file smaller, header entries
  included (dense float, dense int `.q`+`.scale`, or sparse `.bitmap`+`.values`
  [+`.scale`], + `.zero_point` on the asymmetric grid; `digits`: those of an upper bound
  of the file's data size, `data_bound` summed over the file), its
  bias raw, every other parameter and persistent buffer of the layer raw. `decode_layer(path, layer, tensors)` fills a
  module built from the config and returns the entry names it consumed.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from kmr_dsl import artifact_layout as layout
from kmr_dsl.runtime import layers as kl
from kmr_dsl.runtime import int8_kernels as k8
from kmr_dsl.runtime import modules as km
from kmr_dsl.runtime import quant

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


def _dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def _conv_args(m) -> dict:
    padding = m.padding if isinstance(m.padding, str) else list(m.padding)
    return {"stride": list(m.stride), "padding": padding, "dilation": list(m.dilation), "groups": m.groups}


def describe(layer: nn.Module) -> dict:
    cfg = _describe(layer)
    if getattr(layer, "kmr_rank", None) is not None:
        cfg["rank"] = int(layer.kmr_rank)
    if getattr(layer, kl.MASK, None) is not None:
        cfg["masked"] = True
    return cfg


def _describe(m: nn.Module) -> dict:
    t = type(m).__name__
    if isinstance(m, km.FactorizedLinear):
        return {"type": t, "first": describe(m.first), "second": describe(m.second)}
    if isinstance(m, km.LoRALinear):
        return {"type": t, "rank": m.rank, "scaling": m.scaling, "base": describe(m.base)}
    if isinstance(m, km.ScaledLinear):
        # its vector is a persistent buffer: stored raw as `NAME.input_scale`
        return {"type": t, "linear": describe(m.linear)}
    if k8.is_dynamic(m):
        cfg = {"type": "DynamicLinear", "in": m.in_features, "out": m.out_features, "bias": m.bias() is not None}
        return _with_symmetry(cfg, m)
    if isinstance(m, k8.StaticInt8):
        q = k8.dynamic_parts(m)[0]
        cfg = {"type": t, "shape": list(q.shape), "bias": m.bias() is not None,
               "input": [m.input_scale, m.input_zero_point], "output": list(m.output_qparams)}
        if isinstance(m, k8.StaticConv2d):
            cfg.update(_conv_args(m))
        return _with_symmetry(cfg, m)
    if isinstance(m, km.QuantWeight):
        cfg = _with_symmetry({"type": t, "bits": m.bits, "shape": list(m.weight_shape), "bias": m.bias is not None}, m)
        if m.group_size:
            cfg["group_size"] = m.group_size
        if isinstance(m, km.QuantConv2d):
            cfg.update({"stride": list(m.stride), "dilation": list(m.dilation), "groups": m.groups,
                        "padding": m.padding if isinstance(m.padding, str) else list(m.padding)})
        if isinstance(m, km.QuantEmbedding):
            cfg["padding_idx"] = m.padding_idx
        return cfg
    cfg = None
    if kl.is_conv1d(m):
        cfg = {"type": "Linear", "in": int(m.nx), "out": int(m.nf), "bias": getattr(m, "bias", None) is not None}
    elif type(m) in (nn.Linear, km.HalfLinear):
        cfg = {"type": t, "in": m.in_features, "out": m.out_features, "bias": m.bias is not None}
    elif type(m) in (nn.Conv1d, nn.Conv2d, km.HalfConv2d) and m.padding_mode == "zeros":
        cfg = {"type": t, "in": m.in_channels, "out": m.out_channels, "kernel": list(m.kernel_size),
               "bias": m.bias is not None, **_conv_args(m)}
    elif type(m) in (nn.Embedding, km.HalfEmbedding) and m.max_norm is None:
        cfg = {"type": t, "num": m.num_embeddings, "dim": m.embedding_dim, "padding_idx": m.padding_idx}
    elif type(m) is nn.LayerNorm:
        cfg = {"type": t, "shape": list(m.normalized_shape), "eps": m.eps, "affine": m.elementwise_affine,
               "bias": m.bias is not None}
    elif type(m) in (nn.BatchNorm1d, nn.BatchNorm2d):
        cfg = {"type": t, "num": m.num_features, "eps": m.eps, "momentum": m.momentum, "affine": m.affine,
               "track": m.track_running_stats}
    elif type(m) is nn.GroupNorm:
        cfg = {"type": t, "groups": m.num_groups, "channels": m.num_channels, "eps": m.eps, "affine": m.affine}
    if cfg is None:
        return {"type": "keep"}
    weight = getattr(m, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dtype != torch.float32 and not t.startswith("Half"):
        cfg["dtype"] = _dtype_name(weight.dtype)
    return cfg


def _with_symmetry(cfg: dict, m: nn.Module) -> dict:
    # only an asymmetric layer says so: older artifacts and symmetric layers read alike
    if not m.symmetric:
        cfg["symmetric"] = False
    return cfg


def _zeros(cfg: dict, rows: int):
    """Placeholder zero points for an asymmetric int8-kernel layer (the file fills them)."""
    return None if cfg.get("symmetric", True) else torch.zeros(rows, dtype=torch.int8)


def _padding(cfg: dict):
    return cfg["padding"] if isinstance(cfg["padding"], str) else tuple(cfg["padding"])


def build(cfg: dict) -> nn.Module | None:
    """An empty module of the described type (None for "keep")."""
    t = cfg["type"]
    if t == "keep":
        return None
    if t == "FactorizedLinear":
        m = km.FactorizedLinear(build(cfg["first"]), build(cfg["second"]))
    elif t == "LoRALinear":
        m = km.LoRALinear(build(cfg["base"]), cfg["rank"], cfg["scaling"])
    elif t == "ScaledLinear":
        inner = build(cfg["linear"])
        m = km.ScaledLinear(inner, torch.ones(inner.in_features))
    elif t == "DynamicLinear":
        m = k8.dynamic_linear(torch.zeros(cfg["out"], cfg["in"], dtype=torch.int8), torch.ones(cfg["out"]),
                              torch.zeros(cfg["out"]) if cfg["bias"] else None, _zeros(cfg, cfg["out"]))
    elif t in ("StaticLinear", "StaticConv2d"):
        shape = tuple(cfg["shape"])
        like = nn.Conv2d(1, 1, 1, tuple(cfg["stride"]), _padding(cfg), tuple(cfg["dilation"]), cfg["groups"]) \
            if t == "StaticConv2d" else None
        m = k8.static_int8(like, torch.zeros(shape, dtype=torch.int8), torch.ones(shape[0]),
                           torch.zeros(shape[0]) if cfg["bias"] else None, tuple(cfg["input"]), tuple(cfg["output"]),
                           _zeros(cfg, shape[0]))
    elif t in ("QuantLinear", "TokenLinear"):
        cls = km.TokenLinear if t == "TokenLinear" else km.QuantLinear
        m = cls(cfg["bits"], tuple(cfg["shape"]), cfg["bias"], cfg.get("group_size", 0), cfg.get("symmetric", True))
    elif t == "QuantConv2d":
        padding = cfg["padding"] if isinstance(cfg["padding"], str) else tuple(cfg["padding"])
        m = km.QuantConv2d(cfg["bits"], tuple(cfg["shape"]), cfg["bias"], tuple(cfg["stride"]), padding,
                           tuple(cfg["dilation"]), cfg["groups"], cfg.get("group_size", 0), cfg.get("symmetric", True))
    elif t == "QuantEmbedding":
        m = km.QuantEmbedding(cfg["bits"], tuple(cfg["shape"]), False, cfg["padding_idx"], cfg.get("group_size", 0),
                              cfg.get("symmetric", True))
    elif t in ("Linear", "HalfLinear"):
        m = nn.Linear(cfg["in"], cfg["out"], bias=cfg["bias"])
    elif t in ("Conv1d", "Conv2d", "HalfConv2d"):
        cls = nn.Conv1d if t == "Conv1d" else nn.Conv2d
        padding = cfg["padding"] if isinstance(cfg["padding"], str) else tuple(cfg["padding"])
        m = cls(cfg["in"], cfg["out"], tuple(cfg["kernel"]), tuple(cfg["stride"]), padding,
                tuple(cfg["dilation"]), cfg["groups"], cfg["bias"])
    elif t in ("Embedding", "HalfEmbedding"):
        m = nn.Embedding(cfg["num"], cfg["dim"], padding_idx=cfg["padding_idx"])
    elif t == "LayerNorm":
        m = nn.LayerNorm(tuple(cfg["shape"]), eps=cfg["eps"], elementwise_affine=cfg["affine"], bias=cfg["bias"])
    elif t in ("BatchNorm1d", "BatchNorm2d"):
        cls = nn.BatchNorm1d if t == "BatchNorm1d" else nn.BatchNorm2d
        m = cls(cfg["num"], eps=cfg["eps"], momentum=cfg["momentum"], affine=cfg["affine"],
                track_running_stats=cfg["track"])
    elif t == "GroupNorm":
        m = nn.GroupNorm(cfg["groups"], cfg["channels"], eps=cfg["eps"], affine=cfg["affine"])
    else:
        raise ValueError(f"unknown layer type {t!r} in the artifact recipe")
    if t.startswith("Half"):
        km.to_half(m)
    elif "dtype" in cfg:
        m.to(_DTYPES[cfg["dtype"]])
    if "rank" in cfg and t not in ("LoRALinear",):
        m.kmr_rank = cfg["rank"]
    return m


# ---------------------------------------------------------------- tensors

def weight_record(leaf: nn.Module) -> tuple[int, int, int, int]:
    """(numel, rows, bits, nnz) of a leaf's weight: the inputs of layout.tensor_bytes
    (with `zeros = not leaf_symmetric(leaf)`)."""
    nnz, numel = kl.leaf_nonzero(leaf)
    rows = kl.leaf_weight(leaf).shape[0] if k8.is_int8_kernel(leaf) or isinstance(leaf, km.QuantWeight) \
        else kl.layer_features(leaf)[1] if kl.is_conv1d(leaf) else leaf.weight.shape[0]
    if isinstance(leaf, km.QuantWeight) and leaf.group_size:
        # group-wise scales: one per group of a row, stored like that many rows' scales
        rows = leaf.scale.numel()
    return numel, int(rows), kl.leaf_bits(leaf), nnz


def leaf_symmetric(leaf: nn.Module) -> bool:
    """Whether the leaf's stored weight has no zero points."""
    return bool(getattr(leaf, "symmetric", True))


def _int_parts(leaf):
    """(codes, scales, zero points or None) of an integer leaf."""
    if k8.is_int8_kernel(leaf):
        q, scale, _ = k8.dynamic_parts(leaf)
        return q, scale, k8.int8_zero_points(leaf)
    zero = leaf.zero_point
    return leaf.int_weight(), leaf.scale.detach().clone(), None if zero is None else zero.detach().clone()


def _dtype(tensor: torch.Tensor) -> str:
    return layout.DTYPE_NAMES[_dtype_name(tensor.dtype)]


def encode_weight(name: str, leaf: nn.Module, digits: int) -> dict[str, torch.Tensor]:
    """The weight's entries in the form that makes the file smaller (layout.is_sparse),
    `digits`: the digits of an upper bound of the file's data size (`data_bound`)."""
    numel, rows, bits, nnz = weight_record(leaf)
    out: dict[str, torch.Tensor] = {}
    if bits >= 16:
        w = kl.leaf_weight(leaf)      # [out, in] for a Conv1D too: it reloads as a Linear
        if layout.is_sparse(name, w.shape, 8 * w.element_size(), nnz, digits, _dtype(w)):
            mask = w != 0
            out[layout.entry(name, layout.BITMAP)] = quant.bitmap(mask)
            out[layout.entry(name, layout.VALUES)] = w[mask].contiguous()
        else:
            out[name] = w.contiguous().clone()
        return out
    q, scale, zero = _int_parts(leaf)
    if layout.is_sparse(name, q.shape, bits, nnz, digits):
        mask = ~quant.zero_codes(q, zero, getattr(leaf, "group_size", 0))
        out[layout.entry(name, layout.BITMAP)] = quant.bitmap(mask)
        out[layout.entry(name, layout.VALUES)] = quant.pack(q[mask], bits)
    else:
        out[layout.entry(name, layout.Q)] = q.contiguous().clone() if bits == 8 else quant.pack(q, bits)
    # group-wise scales ([rows, groups]) are stored flat, row after row
    out[layout.entry(name, layout.SCALE)] = scale.float().reshape(-1).contiguous()
    if zero is not None:
        out[layout.entry(name, layout.ZERO_POINT)] = zero.to(torch.int8).reshape(-1).contiguous().clone()
    return out


def decode_weight(name: str, leaf: nn.Module, tensors: dict, used: set) -> None:
    zero = None
    if not leaf_symmetric(leaf):
        zero = tensors[layout.entry(name, layout.ZERO_POINT)]
        used.add(layout.entry(name, layout.ZERO_POINT))
    if k8.is_int8_kernel(leaf):
        shape, bits = tuple(k8.dynamic_parts(leaf)[0].shape), 8
    elif isinstance(leaf, km.QuantWeight):
        shape, bits = leaf.weight_shape, leaf.bits
    else:
        shape, bits = tuple(leaf.weight.shape), kl.leaf_bits(leaf)
    numel = 1
    for s in shape:
        numel *= s
    if layout.entry(name, layout.BITMAP) in tensors:
        mask = quant.unbitmap(tensors[layout.entry(name, layout.BITMAP)], numel)
        values = tensors[layout.entry(name, layout.VALUES)]
        used.update({layout.entry(name, layout.BITMAP), layout.entry(name, layout.VALUES)})
        if bits >= 16:
            w = torch.zeros(numel, dtype=values.dtype)
        else:
            # the codes not stored are the zeros: 0, or each weight's zero point
            w = torch.zeros(numel, dtype=torch.int8)
            if zero is not None:
                rows = shape[0]
                zeros = quant.expand_scale(zero.reshape(rows, -1), numel // rows, getattr(leaf, "group_size", 0))
                w = zeros.reshape(-1).to(torch.int8).clone()
            values = quant.unpack(values, bits, int(mask.sum())) if bits < 8 else values
        w[mask] = values
        w = w.reshape(shape)
    elif layout.entry(name, layout.Q) in tensors:
        packed = tensors[layout.entry(name, layout.Q)]
        used.add(layout.entry(name, layout.Q))
        w = (packed if bits == 8 else quant.unpack(packed, bits, numel)).reshape(shape).to(torch.int8)
    else:
        w = tensors[name]
        used.add(name)
    bias = tensors.get(layout.bias_of(name))
    if bias is not None:
        used.add(layout.bias_of(name))
    if bits >= 16:
        with torch.no_grad():
            leaf.weight.copy_(w)
            if bias is not None:
                leaf.bias.copy_(bias)
        return
    scale = tensors[layout.entry(name, layout.SCALE)]
    used.add(layout.entry(name, layout.SCALE))
    if k8.is_int8_kernel(leaf):
        k8.set_dynamic(leaf, w, scale, bias, zero)
    else:
        leaf.set_int_weight(w, scale.reshape(leaf.scale.shape), zero)
        if bias is not None:
            leaf.bias = bias.float().clone()


def _raw_tensors(path: str, layer: nn.Module):
    """Parameters and persistent buffers of the layer's non-leaf modules."""
    skip = {id(m) for _, leaf in kl.leaves(path, layer) for m in leaf.modules()}
    for sub, mod in layer.named_modules():
        if id(mod) in skip:
            continue
        prefix = f"{path}.{sub}" if sub else path
        for n, p in mod._parameters.items():
            if p is not None:
                yield f"{prefix}.{n}", mod, "_parameters", n, p
        for n, b in mod._buffers.items():
            if b is not None and n not in mod._non_persistent_buffers_set:
                yield f"{prefix}.{n}", mod, "_buffers", n, b


def data_bound(path: str, layer: nn.Module) -> int:
    """An upper bound of the data bytes `encode_layer` stores for the layer: each weight's
    dense form (layout.is_sparse stores the sparse one only where its data is smaller),
    the rest raw."""
    total = 0
    for _, leaf in kl.leaves(path, layer):
        numel, rows, bits, _ = weight_record(leaf)
        if bits >= 16:
            bits = 8 * kl.leaf_weight(leaf).element_size()
        total += layout.dense_bytes(numel, rows, bits, not leaf_symmetric(leaf))
        bias = kl.leaf_bias(leaf)
        if bias is not None:
            total += bias.numel() * bias.element_size()
    for *_, tensor in _raw_tensors(path, layer):
        total += tensor.numel() * tensor.element_size()
    return total


def encode_layer(path: str, layer: nn.Module, digits: int) -> dict[str, torch.Tensor]:
    """The layer's entries; `digits` as encode_weight's."""
    out: dict[str, torch.Tensor] = {}
    for name, leaf in kl.leaves(path, layer):
        out.update(encode_weight(f"{name}.weight", leaf, digits))
        bias = kl.leaf_bias(leaf)
        if bias is not None:
            out[f"{name}.bias"] = bias.detach().contiguous().clone()
    for key, *_, tensor in _raw_tensors(path, layer):
        out[key] = tensor.detach().contiguous().clone()
    return out


def decode_layer(path: str, layer: nn.Module, tensors: dict) -> set[str]:
    used: set[str] = set()
    for name, leaf in kl.leaves(path, layer):
        decode_weight(f"{name}.weight", leaf, tensors, used)
    for key, *_, current in _raw_tensors(path, layer):
        if key not in tensors or tensors[key].shape != current.shape:
            raise KeyError(key)
        used.add(key)
        with torch.no_grad():
            current.copy_(tensors[key])
    return used


__all__ = ["build", "data_bound", "decode_layer", "describe", "encode_layer", "encode_weight", "leaf_symmetric", "weight_record"]
