"""The layer types a compressed model is made of, besides torch's own.

Contract: every class here has a `kmr_kind` (the layer kind a selector sees: a
FactorizedLinear is still a `Linear`) and keeps its qualified name in the model, so a
pipeline's layer names survive every rule. Each forward takes and returns float32
activations.

- `HalfLinear`, `HalfConv2d`, `HalfEmbedding` (bits 16): torch's layer with bfloat16
  parameters. bf16 rather than fp16 because it keeps fp32's exponent range (no weight
  underflows to zero, so density is preserved). Where the CPU has bf16 instructions
  (`bf16_compute()`: AVX512-BF16 or AMX) forward computes in bf16 (FACTS.md: 1.9x faster
  than fp32 there); elsewhere it upcasts to fp32, because on an AVX2 CPU a bf16 Linear
  ran 13x slower than fp32 and fp16 6x slower. Outputs are fp32 either way.
- `QuantLinear`, `QuantConv2d`, `QuantEmbedding` (weight-only int8/int4/int2): the
  weight held as packed integers (`kmr_dsl.runtime.quant`) plus one fp32 scale per
  output row (or, with `group_size` > 0, per group of that many inputs of a row), and
  on the asymmetric grid (`symmetric = False`) one int8 `zero_point` per scale,
  dequantized in forward. On this CPU int4/int2 are storage formats.
- `TokenLinear` (int8 weight, dynamic per-token int8 activations): a QuantLinear whose
  forward quantizes each token; computed in fp32 from the codes (no fast CPU kernel).
- `FactorizedLinear(first, second)`: x -> second(first(x)), the low-rank form.
- `LoRALinear(base, rank, scaling)`: base(x) + scaling * B(A(x)), adapters fp32.
- `ScaledLinear(linear, input_scale)`: linear(x * input_scale), a per-input-channel fp32
  vector kept explicitly (AWQ's and SmoothQuant's scale where no normalization can absorb
  it: a residual also reads that norm's output, as in post-norm BERT). The multiply is a
  float op before `linear`, whatever its form (float, weight-only integer, int8 kernels),
  so an int8 layer inside still runs its integer kernel on the scaled activations.
The int8-kernel layers (`DynamicLinear`, `StaticLinear`, `StaticConv2d`) are
kmr_dsl.runtime.int8_kernels'.
Integer layers hold buffers, not parameters: nothing in them can be trained.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from kmr_dsl.runtime import quant
from kmr_dsl.runtime.int8_kernels import StaticConv2d, StaticLinear, dynamic_parts, is_dynamic, is_int8_kernel


# ---------------------------------------------------------------- half precision

@functools.lru_cache(maxsize=None)
def bf16_compute() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX): 16-bit layers then
    compute in bfloat16, else they upcast their weights to fp32 to compute."""
    probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(probe is not None and probe() for probe in probes)


def _half_args(x, weight, bias):
    if bf16_compute():
        return x.to(torch.bfloat16), weight, bias
    return x.float(), weight.float(), None if bias is None else bias.float()


class HalfLinear(nn.Linear):
    kmr_kind = "Linear"

    def forward(self, x):
        return F.linear(*_half_args(x, self.weight, self.bias)).float()


class HalfConv2d(nn.Conv2d):
    kmr_kind = "Conv2d"

    def forward(self, x):
        return self._conv_forward(*_half_args(x, self.weight, self.bias)).float()


class HalfEmbedding(nn.Embedding):
    kmr_kind = "Embedding"

    def forward(self, x):
        # gather first, then upcast: cheaper than upcasting the whole table
        return F.embedding(x, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                           self.scale_grad_by_freq, self.sparse).float()


HALF_CLASSES = {nn.Linear: HalfLinear, nn.Conv2d: HalfConv2d, nn.Embedding: HalfEmbedding}


def to_half(leaf: nn.Module) -> nn.Module:
    """Turn a float32 Linear/Conv2d/Embedding into its bf16 form, in place."""
    for base, half in HALF_CLASSES.items():
        if type(leaf) is base:
            leaf.__class__ = half
            return leaf.to(torch.bfloat16)
    if isinstance(leaf, tuple(HALF_CLASSES.values())):
        return leaf
    raise TypeError(f"no half-precision form for {type(leaf).__name__}")


# ---------------------------------------------------------------- weight-only integer

class QuantWeight(nn.Module):
    """Shared storage of the weight-only integer layers."""

    kmr_kind = ""

    def __init__(self, bits: int, weight_shape: tuple[int, ...], bias: bool, group_size: int = 0,
                 symmetric: bool = True):
        super().__init__()
        if bits not in quant.QMAX:
            raise ValueError(f"bits must be one of {sorted(quant.QMAX)}")
        self.bits = bits
        self.group_size = int(group_size)
        self.weight_shape = tuple(int(s) for s in weight_shape)
        numel = 1
        for s in self.weight_shape:
            numel *= s
        dtype = torch.int8 if bits == 8 else torch.uint8
        self.register_buffer("packed", torch.zeros(-(-numel * bits // 8), dtype=dtype))
        rows = self.weight_shape[0]
        groups = quant.groups(numel // rows if rows else 0, self.group_size)
        self.register_buffer("scale", torch.ones(rows, groups) if self.group_size else torch.ones(rows))
        # the affine grid's int8 zero points, one per scale (None: the symmetric grid)
        self.register_buffer("zero_point", None if symmetric else torch.zeros(self.scale.shape, dtype=torch.int8))
        self.register_buffer("bias", torch.zeros(self.weight_shape[0]) if bias else None)

    @property
    def symmetric(self) -> bool:
        return self.zero_point is None

    @property
    def numel(self) -> int:
        n = 1
        for s in self.weight_shape:
            n *= s
        return n

    def set_int_weight(self, q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | None = None) -> None:
        if (zero is None) != self.symmetric:
            raise ValueError("zero points are given exactly for an asymmetric (affine) layer")
        self.weight_shape = tuple(q.shape)
        self.packed = quant.pack(q, self.bits)
        self.scale = scale.detach().float().clone()
        if zero is not None:
            self.zero_point = zero.detach().to(torch.int8).reshape(self.scale.shape).clone()

    def int_weight(self) -> torch.Tensor:
        return quant.unpack(self.packed, self.bits, self.numel).reshape(self.weight_shape)

    def zero_codes(self, q: torch.Tensor | None = None) -> torch.Tensor:
        """Where the stored codes stand for 0 (the pruned weights)."""
        return quant.zero_codes(self.int_weight() if q is None else q, self.zero_point, self.group_size)

    def dequantized(self) -> torch.Tensor:
        return quant.dequantize(self.int_weight(), self.scale, self.bits, self.group_size, self.zero_point)

    @classmethod
    def quantized_from(cls, weight: torch.Tensor, bits: int, bias, group_size: int = 0, codes=None,
                       symmetric: bool = True, **kw) -> "QuantWeight":
        """The integer form of `weight`: rounded by `quant.quantize` (`quant.quantize_affine`
        when not symmetric), or the given `codes` = (q, scale[, zero]) of another quantizer
        on the same grid (GPTQ)."""
        mod = cls(bits=bits, weight_shape=tuple(weight.shape), bias=bias is not None, group_size=group_size,
                  symmetric=symmetric, **kw)
        if codes is None:
            codes = quant.quantize(weight, bits, group_size) if symmetric \
                else quant.quantize_affine(weight, bits, group_size)
        mod.set_int_weight(*codes)
        if bias is not None:
            mod.bias = bias.detach().float().clone()
        return mod


class QuantLinear(QuantWeight):
    kmr_kind = "Linear"

    def __init__(self, bits, weight_shape, bias=True, group_size=0, symmetric=True):
        super().__init__(bits, weight_shape, bias, group_size, symmetric)

    @property
    def in_features(self):
        return self.weight_shape[1]

    @property
    def out_features(self):
        return self.weight_shape[0]

    def forward(self, x):
        return F.linear(x.float(), self.dequantized(), self.bias)


class QuantConv2d(QuantWeight):
    kmr_kind = "Conv2d"

    def __init__(self, bits, weight_shape, bias=True, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1,
                 group_size=0, symmetric=True):
        super().__init__(bits, weight_shape, bias, group_size, symmetric)
        self.stride, self.dilation, self.groups = tuple(stride), tuple(dilation), int(groups)
        self.padding = padding if isinstance(padding, str) else tuple(padding)

    @property
    def in_channels(self):
        return self.weight_shape[1] * self.groups

    @property
    def out_channels(self):
        return self.weight_shape[0]

    @property
    def kernel_size(self):
        # read by models that pad as TensorFlow does (transformers' MobileNet)
        return tuple(self.weight_shape[2:])

    def forward(self, x):
        return F.conv2d(x.float(), self.dequantized(), self.bias, self.stride, self.padding, self.dilation, self.groups)


class QuantEmbedding(QuantWeight):
    kmr_kind = "Embedding"

    def __init__(self, bits, weight_shape, bias=False, padding_idx=None, group_size=0, symmetric=True):
        super().__init__(bits, weight_shape, False, group_size, symmetric)
        self.padding_idx = padding_idx

    @property
    def num_embeddings(self):
        return self.weight_shape[0]

    @property
    def embedding_dim(self):
        return self.weight_shape[1]

    def forward(self, x):
        # unpack and dequantize only the rows looked up: the table stays packed. The rows
        # are gathered with index_select, as nn.Embedding gathers them (indexing `table[x]`
        # measured ~30x slower than index_select on int8 rows, which made a lookup of
        # 8 x 128 tokens cost twice fp32's), then dequantized in place: no temporary
        # beyond the float rows (docs/benchmarks.md, "int8 latency against PyTorch").
        dim, flat = self.embedding_dim, x.reshape(-1)
        if (dim * self.bits) % 8 == 0:
            row_bytes = dim * self.bits // 8
            table = self.packed[: self.num_embeddings * row_bytes].reshape(self.num_embeddings, row_bytes)
            picked = table.index_select(0, flat)
            rows = picked if self.bits == 8 else quant.unpack(picked.reshape(-1), self.bits, flat.numel() * dim)
        else:   # rows that do not start on a byte boundary: unpack the table
            rows = quant.unpack(self.packed, self.bits, self.numel).reshape(self.weight_shape).index_select(0, flat)
        rows = rows.reshape(-1, dim)
        scale = self._per_column(self.scale.index_select(0, flat), dim)
        if self.zero_point is not None:
            steps = rows.float().sub_(self._per_column(self.zero_point.index_select(0, flat).float(), dim))
            values = quant.affine_levels(steps, self.bits)
        else:
            values = quant.levels(rows, self.bits)      # a new float tensor either way
        return values.mul_(scale).reshape(*x.shape, dim)

    def _per_column(self, per_row, dim):
        """Looked-up rows' scales (or zero points), [n] or [n, groups], over their `dim` columns."""
        if self.group_size:     # (quant.expand_scale's reshape would refuse an empty lookup)
            return per_row.repeat_interleave(self.group_size, dim=1)[:, :dim]
        return per_row.unsqueeze(-1)


def quantized_leaf(leaf: nn.Module, weight: torch.Tensor, bits: int, group_size: int = 0,
                   codes=None, symmetric: bool = True) -> QuantWeight:
    """The weight-only integer form of a float Linear/Conv2d/Embedding leaf."""
    bias = getattr(leaf, "bias", None)
    kw = {"group_size": group_size, "codes": codes, "symmetric": symmetric}
    if is_int8_kernel(leaf):
        bias = dynamic_parts(leaf)[2]
    if isinstance(leaf, (nn.Linear, QuantLinear, StaticLinear)) or is_dynamic(leaf):
        return QuantLinear.quantized_from(weight, bits, bias, **kw)
    if isinstance(leaf, (nn.Conv2d, QuantConv2d, StaticConv2d)):
        return QuantConv2d.quantized_from(weight, bits, bias, stride=leaf.stride, padding=leaf.padding,
                                          dilation=leaf.dilation, groups=leaf.groups, **kw)
    if isinstance(leaf, (nn.Embedding, QuantEmbedding)):
        return QuantEmbedding.quantized_from(weight, bits, None, padding_idx=leaf.padding_idx, **kw)
    raise TypeError(f"cannot quantize {type(leaf).__name__}")


# ---------------------------------------------------------------- int8, per-token activations

class TokenLinear(QuantLinear):
    """W8A8 with dynamic *per-token* activations (llm-compressor's default W8A8): an int8
    weight (per row, or the affine grid with zero points), and at each call every token
    (row of the input) quantized to int8 with its own scale — symmetric (amax / 127), or
    with `symmetric = False` asymmetric (its [min, max] on 255 steps, a zero point).

    The product is computed in fp32 from the integer codes: PyTorch's only CPU int8 GEMM
    with per-row activation scales, `torch._int_mm`, measured 20-40x *slower* than fp32
    on an AVX2 CPU (a reference loop, docs/benchmarks.md), so here this format buys
    storage and fidelity, not speed. The result equals an int32 accumulation wherever a
    dot product of codes stays below 2**24."""

    def __init__(self, bits=8, weight_shape=(0, 0), bias=True, group_size=0, symmetric=True):
        if bits != 8 or group_size:
            raise ValueError("per-token W8A8 has 8-bit weights with one scale per row")
        super().__init__(8, weight_shape, bias, 0, symmetric)

    def forward(self, x):
        x = x.float()
        if self.symmetric:
            step = x.abs().amax(dim=-1, keepdim=True).clamp_(min=1e-12) / 127.0
            codes = torch.round(x / step).clamp_(-127, 127)
        else:
            low = x.amin(dim=-1, keepdim=True).clamp_(max=0.0)
            high = x.amax(dim=-1, keepdim=True).clamp_(min=0.0)
            step = ((high - low) / 255.0).clamp_(min=1e-12)
            zero = torch.round(-low / step)
            codes = (torch.round(x / step) + zero).clamp_(0, 255) - zero
        weight = self.int_weight().float()
        if self.zero_point is not None:
            weight = weight - self.zero_point.float()[:, None]
        out = F.linear(codes, weight) * step * self.scale
        return out if self.bias is None else out + self.bias


# ---------------------------------------------------------------- low rank and adapters

class FactorizedLinear(nn.Module):
    kmr_kind = "Linear"

    def __init__(self, first: nn.Module, second: nn.Module):
        super().__init__()
        self.first = first
        self.second = second

    @property
    def in_features(self):
        return self.first.in_features

    @property
    def out_features(self):
        return self.second.out_features

    @property
    def rank(self):
        return self.first.out_features

    def forward(self, x):
        return self.second(self.first(x))


class LoRALinear(nn.Module):
    kmr_kind = "Linear"

    def __init__(self, base: nn.Module, rank: int, scaling: float):
        super().__init__()
        self.base = base
        self.rank = int(rank)
        self.scaling = float(scaling)
        self.lora_A = nn.Parameter(torch.zeros(self.rank, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, self.rank))

    @property
    def in_features(self):
        return self.base.in_features

    @property
    def out_features(self):
        return self.base.out_features

    def delta(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x):
        return self.base(x) + F.linear(F.linear(x.float(), self.lora_A), self.lora_B) * self.scaling


class ScaledLinear(nn.Module):
    kmr_kind = "Linear"

    def __init__(self, linear: nn.Module, input_scale: torch.Tensor):
        super().__init__()
        self.linear = linear
        # persistent: the artifact stores it as `NAME.input_scale` (one fp32 per input)
        self.register_buffer("input_scale", input_scale.detach().float().reshape(-1).clone())

    @property
    def in_features(self):
        return self.linear.in_features

    @property
    def out_features(self):
        return self.linear.out_features

    def forward(self, x):
        return self.linear(x * self.input_scale)


def with_input_scale(layer: nn.Module, scale: torch.Tensor) -> nn.Module:
    """`layer` computing layer(x * scale): a ScaledLinear's vector is multiplied by
    `scale` (one multiply at run time however many scales were migrated), any other
    Linear-kind layer is wrapped."""
    if isinstance(layer, ScaledLinear):
        with torch.no_grad():
            layer.input_scale.mul_(scale.float())
        return layer
    return ScaledLinear(layer, scale)


__all__ = [
    "FactorizedLinear", "HalfConv2d", "HalfEmbedding", "HalfLinear", "LoRALinear", "QuantConv2d",
    "QuantEmbedding", "QuantLinear", "QuantWeight", "ScaledLinear", "TokenLinear",
    "bf16_compute", "quantized_leaf", "to_half", "with_input_scale",
]
