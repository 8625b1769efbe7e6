"""The layers that run torch's int8 CPU kernels (fbgemm/x86), and how their weights are
loaded into and read back out of them.

Contract: each class has a `kmr_kind` (the layer kind a selector sees) as every layer
of kmr_dsl.runtime.modules has, and a float32 forward. Rules build these leaves
(`dynamic_linear`, `static_int8`), the artifact codec and the meters read them back
(`dynamic_parts`, `int8_zero_points`), and `is_int8_kernel` tells them from the other
forms.

- `DynamicLinear` (int8 dynamic): torch's dynamic int8 Linear (fbgemm, real int8
  kernels) with a per-channel weight (symmetric, or affine with zero points), run on
  the full 8-bit activation range; `dynamic_linear` / `dynamic_parts` /
  `int8_zero_points` build it from and read it back into (int8 values, fp32 scales,
  bias, zero points).
- `StaticLinear`, `StaticConv2d` (static W8A8): torch's quantized Linear / Conv2d
  kernel (int8 weight, per channel) on activations quantized with calibrated ranges;
  `dynamic_parts` reads them too (`is_int8_kernel` covers both int8 forms).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from kmr_dsl.runtime import quant


# ---------------------------------------------------------------- int8 dynamic

with warnings.catch_warnings():
    # torch.ao.quantization is deprecated in favour of torchao, which has no working CPU
    # int8 eager path here (FACTS.md); its kernels still work
    warnings.simplefilter("ignore")
    import torch.ao.nn.quantized as _nnq
    import torch.ao.nn.quantized.dynamic as _nnqd


class DynamicLinear(_nnqd.Linear):
    """torch's dynamic int8 Linear (fbgemm: per-channel int8 weight, activations
    quantized per tensor at each call), but on the *full* 8-bit activation range.

    torch's own module asks fbgemm for `reduce_range` (7-bit activations), which guards
    the int16 sum of two u8 x s8 products in AVX2's VPMADDUBSW against saturation. KMR
    guards it on the weight side instead: its int8-kernel weights have codes within
    +-64 (`quant.KERNEL_QMAX`, set by the rules that build this module), and the
    activations keep all 8 bits. On all-MiniLM-L6-v2 that lifts the mean cosine to fp32
    from 0.975 to 0.992 (docs/benchmarks.md); codes of +-127 with full-range
    activations measured errors of a third of the output's range on small random layers
    (saturation). `symmetric` is False when the weight carries zero points (the affine
    grid, kept by fbgemm's per-channel affine weight). A weight with wider codes (an
    artifact written before, or codes built by hand) keeps torch's 7-bit activations:
    `full_range` is decided from the codes whenever they are set."""

    kmr_kind = "Linear"
    symmetric = True
    full_range = False
    # a `fusion.SiblingGroup` computing this Linear together with siblings that read the
    # same input (runtime only: set by `fusion.install`, never saved)
    siblings = None

    def forward(self, x):
        if self.siblings is not None:
            return self.siblings.forward(self, x)
        return self.forward_alone(x)

    def forward_alone(self, x):
        y = torch.ops.quantized.linear_dynamic(x.float(), self._packed_params._packed_params,
                                               reduce_range=not self.full_range)
        return y.to(x.dtype) if x.dtype.is_floating_point else y


def is_dynamic(leaf: nn.Module) -> bool:
    return isinstance(leaf, _nnqd.Linear)


def is_int8_kernel(leaf: nn.Module) -> bool:
    """A leaf that runs torch's int8 kernels: dynamic or static (W8A8)."""
    return is_dynamic(leaf) or isinstance(leaf, StaticInt8)


def dynamic_linear(q: torch.Tensor, scale: torch.Tensor, bias, zero: torch.Tensor | None = None) -> nn.Module:
    """A real int8 dynamic Linear with a per-channel weight (symmetric without `zero`)."""
    out_f, in_f = q.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mod = DynamicLinear(in_f, out_f, bias_=bias is not None, dtype=torch.qint8)
    set_dynamic(mod, q, scale, bias, zero)
    return mod


def set_dynamic(mod: nn.Module, q: torch.Tensor, scale: torch.Tensor, bias, zero: torch.Tensor | None = None) -> None:
    """Load (int8 values, fp32 scales, bias[, int8 zero points]) into an int8-kernel leaf, exactly."""
    zeros = torch.zeros(q.shape[0], dtype=torch.long) if zero is None else zero.reshape(-1).long()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qw = torch._make_per_channel_quantized_tensor(q.to(torch.int8).contiguous(), scale.double(), zeros, 0)
        mod.set_weight_bias(qw, None if bias is None else bias.detach().float().clone())
        if is_dynamic(mod):
            mod.in_features, mod.out_features = int(q.shape[1]), int(q.shape[0])
    # instance attributes shadow the class defaults: what the artifact records, and
    # whether full-range activations are safe with these codes
    mod.symmetric = zero is None
    mod.full_range = q.numel() == 0 or int(q.abs().max()) <= quant.KERNEL_QMAX


def dynamic_parts(mod: nn.Module) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(int8 values, fp32 per-row scales, fp32 bias or None) of a dynamic or static int8 leaf."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w, b = mod.weight(), mod.bias()
        q = w.int_repr().clone()
        if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            scale = w.q_per_channel_scales().float()
        else:
            scale = torch.full((q.shape[0],), float(w.q_scale()))
    return q, scale, (None if b is None else b.detach().float().clone())


def int8_zero_points(mod: nn.Module) -> torch.Tensor | None:
    """The int8 per-row zero points of an asymmetric int8-kernel leaf, None when symmetric."""
    if getattr(mod, "symmetric", True):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = mod.weight()
        if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            return w.q_per_channel_zero_points().to(torch.int8)
        return torch.full((w.shape[0],), int(w.q_zero_point()), dtype=torch.int8)


# ---------------------------------------------------------------- int8 static (W8A8)

def affine_qparams(low: float, high: float) -> tuple[float, int]:
    """(scale, zero point) of the quint8 grid covering [low, high] and 0 (0 exact)."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    scale = (high - low) / 255.0
    if not scale > 0:
        return 1.0, 0
    return scale, int(min(255, max(0, round(-low / scale))))


class StaticInt8(nn.Module):
    """Static W8A8: torch's quantized (fbgemm/x86) kernel with a per-channel int8 weight,
    fed activations quantized to quint8 with a fixed, calibrated per-tensor range
    (`input_scale`, `input_zero_point`); its output is requantized to the calibrated
    output range (`output_scale`, `output_zero_point`) and returned as fp32."""

    kmr_kind = ""
    symmetric = True

    def __init__(self, kernel: nn.Module, input_qparams: tuple[float, int], output_qparams: tuple[float, int]):
        super().__init__()
        self.kernel = kernel
        self.input_scale, self.input_zero_point = float(input_qparams[0]), int(input_qparams[1])
        self.kernel.scale, self.kernel.zero_point = float(output_qparams[0]), int(output_qparams[1])

    @property
    def output_qparams(self) -> tuple[float, int]:
        return float(self.kernel.scale), int(self.kernel.zero_point)

    def weight(self):
        return self.kernel.weight()

    def bias(self):
        return self.kernel.bias()

    def set_weight_bias(self, w, b) -> None:
        self.kernel.set_weight_bias(w, b)

    def forward(self, x):
        xq = torch.quantize_per_tensor(x.float().contiguous(), self.input_scale, self.input_zero_point, torch.quint8)
        return self.kernel(xq).dequantize()


class StaticLinear(StaticInt8):
    kmr_kind = "Linear"

    @property
    def in_features(self):
        return self.kernel.in_features

    @property
    def out_features(self):
        return self.kernel.out_features


class StaticConv2d(StaticInt8):
    kmr_kind = "Conv2d"

    def __getattr__(self, name):
        if name in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups"):
            return getattr(self.kernel, name)
        return super().__getattr__(name)


def static_int8(leaf: nn.Module, q: torch.Tensor, scale: torch.Tensor, bias, input_qparams, output_qparams,
                zero: torch.Tensor | None = None):
    """The static W8A8 form of a float Linear / Conv2d leaf, from its int8 weight."""
    nnq = _nnq
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if q.dim() == 2:
            kernel = nnq.Linear(int(q.shape[1]), int(q.shape[0]), bias_=bias is not None, dtype=torch.qint8)
            mod = StaticLinear(kernel, input_qparams, output_qparams)
        else:
            # channels from the weight: a consumer sliced by channel pruning has fewer inputs
            kernel = nnq.Conv2d(int(q.shape[1]) * leaf.groups, int(q.shape[0]), tuple(q.shape[2:]),
                                tuple(leaf.stride), leaf.padding, tuple(leaf.dilation), leaf.groups,
                                bias is not None, dtype=torch.qint8)
            mod = StaticConv2d(kernel, input_qparams, output_qparams)
    set_dynamic(mod, q, scale, bias, zero)
    return mod


__all__ = ["DynamicLinear", "StaticConv2d", "StaticInt8", "StaticLinear", "affine_qparams", "dynamic_linear",
           "dynamic_parts", "int8_zero_points", "is_dynamic", "is_int8_kernel", "set_dynamic", "static_int8"]
