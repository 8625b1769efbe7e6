"""`quantize`: store the weights of Linear / Conv2d / Embedding layers in fewer bits.

Contract (docs/design.md): requires `bits <= layer.bits`; effect `layer.bits = bits`,
`model.trainable = model.trainable and bits >= 16`.
- 32: unchanged.
- 16: bfloat16 parameters (`modules.HalfLinear` ...), still float and trainable.
- 8, scheme dynamic, on a Linear: torch's int8 dynamic Linear (`int8_kernels.DynamicLinear`,
  real int8 kernels) with a per-channel weight (per-tensor scales lose fidelity,
  FACTS.md), activations quantized per tensor at each call on the full 8-bit range, and
  so weight codes within +-64 (`quant.KERNEL_QMAX`: fbgemm's int16 pairs on AVX2 do not
  saturate); static W8A8 likewise.
  With `activations = token`: `modules.TokenLinear`, one activation scale per token
  (int8 storage; no fast CPU kernel, so computed in fp32 from the codes).
- 8 weight_only, and 8 on Conv2d / Embedding (torch has no dynamic int8 conv or
  embedding): weight-only int8 (`modules.QuantConv2d` ...), dequantized in forward.
- 4 and 2: weight-only, packed two / four values per byte, one fp32 scale per output
  row (or group), on every code of the width with midrise levels (`quant`: -3/2, -1/2,
  0, +1/2 steps at 2 bits). On this CPU they are storage formats.
`symmetric = false`: weights on the affine grid with one int8 zero point per scale
(`quant.quantize_affine`; per row or per group), and per-token activations asymmetric
too; static activations and dynamic per-tensor ones are affine (quint8) either way.
Both grids keep zeros zero and non-zeros non-zero, so pruning's density survives
exactly. In a factorized layer both factors are quantized; in a layer
with an unmerged LoRA adapter the base is quantized and the adapter stays fp32. A model
holding an integer layer is not trainable (`state.is_trainable`).
"""

from __future__ import annotations

import torch.nn as nn

from kmr_dsl.rules import calibration as calibration_
from kmr_dsl.rules import checks
from kmr_dsl.runtime import layers as kl
from kmr_dsl.runtime import int8_kernels as k8
from kmr_dsl.runtime import modules as km
from kmr_dsl.runtime import quant
from kmr_dsl.runtime import training

RULE = "quantize"
BITS = (2, 4, 8, 16, 32)
SCHEMES = ("dynamic", "weight_only", "static")
ACTIVATIONS = ("tensor", "token")
ACCEPTS = ("Linear", "Conv2d", "Embedding")


def apply(model: nn.Module, layers, bits: int, scheme: str = "dynamic", group_size: int = 0, calibration=None,
          samples: int = 128, symmetric: bool = True, activations: str = "tensor"):
    bits = int(checks.choice(RULE, "bits", bits, BITS))
    scheme = checks.choice(RULE, "scheme", scheme, SCHEMES)
    activations = checks.choice(RULE, "activations", activations, ACTIVATIONS)
    symmetric = bool(symmetric)
    if activations == "token" and not (scheme == "dynamic" and bits == 8 and not group_size):
        checks.fail(RULE, "`activations = token` is dynamic W8A8: it needs `scheme = dynamic`, `bits = 8` and "
                    "`group_size = 0`", hint="drop `activations = token`, or quantize with bits = 8, scheme = dynamic")
    group_size = checks.integer(RULE, "group_size", group_size, 0, 1 << 20)
    samples = checks.integer(RULE, "samples", samples, 1, 1 << 20)
    static = scheme == "static" and bits == 8
    if scheme == "static" and group_size:
        checks.fail(RULE, "`scheme = static` runs torch's int8 kernels, which take one weight scale per row",
                    hint="use group_size = 0 with `static`, or `weight_only` for group-wise scales")
    if scheme == "static" and bits < 8:
        checks.fail(RULE, f"`scheme = static` quantizes weights and activations to 8 bits, not {bits}",
                    hint="use bits = 8 with `static`, or `weight_only` for 4 and 2 bits")
    todo = []
    for name, layer in layers:
        kind = checks.kinds(RULE, name, layer, ACCEPTS)
        current = kl.layer_bits(layer, name)
        if bits > current:
            checks.fail(RULE, f"precondition `bits <= layer.bits` fails on `{name}` ({bits} > {current})",
                        hint="quantize to a width no larger than the layer's current one")
        if bits == 32:
            continue
        todo.extend((leaf_name, leaf, kind) for leaf_name, leaf in kl.leaves(name, layer))
    ranges = {}
    # an Embedding has no activations to quantize: static stores it weight-only int8
    observed = [(n, leaf) for n, leaf, kind in todo if kind != "Embedding"]
    if static and observed:
        if calibration is None:
            checks.fail(RULE, "`scheme = static` needs `calibration` data to observe activation ranges on",
                        hint="pass `calibration = DATA` (a few hundred examples the model can run on)")
        data = training.require_data(calibration, RULE)
        ranges = calibration_.observe(model, data.inputs[:samples], observed,
                                      lambda leaf: calibration_.ChannelStats(), RULE)
    for leaf_name, leaf, kind in todo:
        # a Conv1D (weight [in, out]) becomes the equal nn.Linear first: every reduced
        # form is built from an [out, in] weight
        new = convert(kl.as_linear(leaf), kind, bits, scheme, leaf_name, group_size, ranges.get(leaf_name),
                      symmetric, activations)
        if new is not leaf:
            kl.set_module(model, leaf_name, new)
    return model


def _kernel_codes(weight, symmetric: bool):
    """(q, scale, zero or None) of an int8-kernel weight, symmetric or affine: codes within
    +-KERNEL_QMAX, so fbgemm can take full-range activations without saturating."""
    if symmetric:
        return (*quant.quantize(weight, 8, qmax=quant.KERNEL_QMAX), None)
    return quant.quantize_affine(weight, 8, qmax=quant.KERNEL_QMAX)


def convert(leaf: nn.Module, kind: str, bits: int, scheme: str, name: str, group_size: int = 0,
            observed=None, symmetric: bool = True, activations: str = "tensor") -> nn.Module:
    have = kl.leaf_bits(leaf)
    if bits == 16:
        # a leaf already at 16 bits stays as it is
        return leaf if have == 16 else km.to_half(leaf)
    if observed is not None:
        q, scale, zero = _kernel_codes(kl.leaf_weight(leaf).float(), symmetric)
        return k8.static_int8(leaf, q, scale, kl.leaf_bias(leaf), k8.affine_qparams(observed.low, observed.high),
                              k8.affine_qparams(observed.out_low, observed.out_high), zero)
    if scheme == "static":
        scheme = "weight_only"     # an Embedding under `static`
    dynamic = scheme == "dynamic" and kind == "Linear" and bits == 8 and not group_size
    token = dynamic and activations == "token"
    dynamic = dynamic and not token
    if have == bits and dynamic == k8.is_dynamic(leaf) and token == isinstance(leaf, km.TokenLinear) \
            and group_size == getattr(leaf, "group_size", 0) and symmetric == getattr(leaf, "symmetric", True) \
            and not isinstance(leaf, k8.StaticInt8):
        return leaf
    if isinstance(leaf, (nn.Conv2d, km.QuantConv2d)) and getattr(leaf, "padding_mode", "zeros") != "zeros":
        checks.fail(RULE, f"`{name}`: only zero-padded convolutions can be quantized")
    if isinstance(leaf, nn.Embedding) and leaf.max_norm is not None:
        checks.fail(RULE, f"`{name}`: embeddings with max_norm cannot be quantized")
    weight = kl.leaf_weight(leaf).float()
    bias = kl.leaf_bias(leaf)
    if dynamic:
        q, scale, zero = _kernel_codes(weight, symmetric)
        return k8.dynamic_linear(q, scale, None if bias is None else bias.detach().float(), zero)
    if token:
        return km.TokenLinear.quantized_from(weight, 8, bias, symmetric=symmetric)
    return km.quantized_leaf(leaf, weight, bits, group_size, symmetric=symmetric)
