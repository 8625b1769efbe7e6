"""Per-row / per-group integer quantization, bit packing and sparse bitmaps (torch tensors).

Contract:
- `quantize(w, bits, group_size=0)` -> (q, scale): q is int8 with w's shape, codes in
  [-127, 127] at 8 bits and in every code of the width at 4 and 2 bits ([-8, 7], [-2, 1]),
  scale is fp32 with one entry per row (w.shape[0]), or with `group_size` > 0 one per
  group of that many consecutive inputs of a row ([rows, ceil(inputs / group_size)]; the
  inputs of a convolution are its flattened (in_channels, kh, kw) weights). Code 0 is
  exactly zero, and only a zero weight gets it: a layer's density is exactly preserved
  (pruning's zeros stay the only zeros).
- Values (`levels(q, bits)`, `dequantize(q, scale, bits)` = levels * scale per row):
  8 bits: the usual grid, value = q * scale, where a small weight that would
  round to 0 keeps +-1 (the steps are 1/127 of the row's largest magnitude, so that
  costs little). 4 and 2 bits: a *zero-preserving midrise* grid, value =
  sign(q) * (|q| - 1/2) * scale: the non-zero levels are +-1/2, +-3/2, ... steps, so a
  small weight goes to +-1/2 step, never more than half a step from where it was,
  instead of a whole step (at 4 bits a quarter of a pretrained transformer's weights
  would round to 0 on the usual grid). All 2**bits codes are used, as on the reference
  GPTQ / compressed-tensors grid (codes [-8, 7] at 4 bits): 15 non-zero levels at 4 bits,
  -15/2 ... -1/2, +1/2 ... +13/2 steps, and the largest magnitude sets the step at
  max|w| / 7 (the reference's max|w| / 7.5: its codes reach +-7.5 steps on average, these
  levels +-7), the extra level on the negative side as the reference's code -8 is (with
  `clip`, also a scale that fits each side's largest magnitude to that side's last level,
  so quantizing values already on the grid gives them back). The
  reference's integer levels are not used because they put a small weight on 0, or
  with density kept a whole step from it (that grid measured 24% more GPTQ layer error,
  docs/benchmarks.md). Each row's scale is also chosen among clipped ones (CLIP_RATIOS of
  the largest magnitude) for the least squared error, so a few outliers do not set the
  step for the whole row (`clip = False`: the largest magnitude sets it, what GPTQ
  needs, since its updates move weights past a clip). With `gram` (the second moment
  E[x x^T] of the layer's input, one [g, g] block per group of g inputs: `group_grams`)
  the error a candidate is judged by is the layer's output error d^T G d on that input
  instead of the weights' ||d||^2 (AWQ's activation-aware clipping search; the affine
  grid likewise). Files written before the grid took code -8 (artifact format 2) decode
  unchanged: their codes are a subset.
- Asymmetric (`quantize_affine(w, bits, group_size=0, clip=True)` -> (q, scale, zero)):
  codes in [QMIN, QMAX_AFFINE] (8 bits: [-128, 127], 4: [-8, 7], 2: [-2, 1]) and one int8
  zero point per scale (same shape as `scale`). 8 bits: the plain affine grid of
  llm-compressor / compressed-tensors, value = (q - zero) * scale. 4 and 2 bits: the
  same zero-preserving midrise levels as the symmetric grid, counted from the zero point,
  value = sign(d) * (|d| - 1/2) * scale with d = q - zero (`affine_levels`), so every
  code but the zero point's is a level (15 at 4 bits, split between the two sides as the
  row's range is; the symmetric grid is this one with its zero point fixed at 0) and a small weight is half a step from its value, not a whole one. Each row's (or group's) range
  [min(w, 0), max(w, 0)] is covered by the 2**bits codes, so a skewed row spends no
  codes on values it does not have. Code `zero` is exactly 0 and only a zero weight gets
  it (a non-zero weight that would round to it moves one code towards its sign; the
  zero point is kept off the end of the range a row's weights reach), so density survives
  as in the symmetric case. At 4 and 2 bits the range is clipped (CLIP_RATIOS of each
  end, least squared error), as the symmetric grid does. `dequantize(..., zero=zero)`.
- `pack(q, bits)` / `unpack(packed, bits, numel)`: 8 // bits codes per uint8 byte,
  first code in the lowest bits, each stored as q + 2**(bits-1) (offset binary); 8-bit
  codes stay int8 (no packing needed).
- `bitmap(mask)` / `unbitmap(bits, numel)`: one bit per element, little-endian within a
  byte (numpy's `packbits(bitorder="little")`).
These byte formats are the ones docs/artifact.md specifies.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch

from kmr_dsl.core.state import scale_groups

QMAX = {8: 127, 4: 7, 2: 1}
QMIN = {8: -128, 4: -8, 2: -2}              # every code: the affine grid, and the midrise one at 4 and 2 bits
QMAX_AFFINE = {8: 127, 4: 7, 2: 1}
# The codes of a weight that torch's int8 kernels (fbgemm) multiply with full-range uint8
# activations: on a CPU without VNNI the kernel adds two u8 x s8 products in int16
# (VPMADDUBSW), which saturates unless 255 * (|q1| + |q2|) <= 32767, i.e. |q| <= 64.
# torch's own modules instead drop the activations to 7 bits (`reduce_range`); measured on
# all-MiniLM-L6-v2, 7-bit weights lose far less (docs/benchmarks.md). VNNI CPUs do not
# saturate, and the narrower codes run correctly on every CPU.
KERNEL_QMAX = 64
MIDRISE_BITS = (4, 2)      # the widths on the zero-preserving midrise grid, with clipped scales
CLIP_RATIOS = tuple(round(1.0 - 0.05 * i, 2) for i in range(17))     # 1.0, 0.95, ..., 0.2


def levels(q: torch.Tensor, bits: int) -> torch.Tensor:
    """The value of each code in steps (float32)."""
    q = q.float()
    if bits in MIDRISE_BITS:
        return torch.sign(q) * (q.abs() - 0.5)
    return q


def midrise_codes(x: torch.Tensor, bits: int) -> torch.Tensor:
    """The code of the nearest midrise level to each `x` (in steps): (k - 1/2) steps with
    k in 1..qmax above 0 and 1..qmax + 1 below it (every code of the width), sign kept;
    an exact 0 stays code 0 and only it does."""
    k = torch.floor(x.abs()).add_(1)
    q = torch.where(x > 0, k.clamp(max=QMAX[bits]), -k.clamp(max=-QMIN[bits]))
    return torch.where(x == 0, torch.zeros_like(q), q)


def quantize(w: torch.Tensor, bits: int, group_size: int = 0, clip: bool = True,
             qmax: int | None = None, gram: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`qmax` (8 bits only) narrows the codes to [-qmax, qmax] (KERNEL_QMAX for fbgemm);
    `gram` ([groups per row, g, g], `group_grams`) judges the clipped scales of the 4- and
    2-bit grid by output error on the input it describes (unused at 8 bits, which does not clip)."""
    if bits not in QMAX:
        raise ValueError(f"integer bits must be one of {sorted(QMAX)}")
    if group_size:
        return _quantize_groups(w, bits, group_size, clip, gram)
    qmax = QMAX[bits] if qmax is None or bits != 8 else int(qmax)
    flat = w.detach().float().reshape(w.shape[0], -1)
    amax = flat.abs().amax(dim=1)
    if bits not in MIDRISE_BITS:
        scale = _scale(amax, amax / qmax)
        q = torch.round(flat / scale[:, None]).clamp_(-qmax, qmax)
        # keep density honest: a small non-zero weight becomes +-1, never 0
        q = torch.where((flat != 0) & (q == 0), torch.sign(flat), q)
        return q.to(torch.int8).reshape(w.shape), scale
    # the 2**bits - 1 non-zero levels reach -(qmax + 1/2) and qmax - 1/2 steps: +-qmax on
    # average, so the (clipped) largest magnitude is qmax steps. With `clip`, the first
    # candidate instead fits each side's largest magnitude to that side's last level: on
    # weights already on the grid it gives their own scale back (quantizing again changes
    # nothing), elsewhere it is one more candidate of the least-error choice
    candidates = [amax * ratio / qmax for ratio in (CLIP_RATIOS if clip else (1.0,))]
    if clip:
        candidates.insert(0, _side_fit(flat, qmax))
    best_q = best_scale = best_err = None
    for candidate in candidates:
        scale = _scale(amax, candidate)
        q = midrise_codes(flat / scale[:, None], bits)
        err = _error(levels(q, bits) * scale[:, None] - flat, gram)
        if best_q is None:
            best_q, best_scale, best_err = q, scale, err
            continue
        better = err < best_err
        best_q = torch.where(better[:, None], q, best_q)
        best_scale = torch.where(better, scale, best_scale)
        best_err = torch.minimum(err, best_err)
    return best_q.to(torch.int8).reshape(w.shape), best_scale


def _error(diff: torch.Tensor, gram: torch.Tensor | None) -> torch.Tensor:
    # each row's squared weight error, or with a gram (one [g, g] block per group, the
    # rows being the groups of each weight row in turn) its output error d^T G d
    if gram is None:
        return (diff ** 2).sum(dim=1)
    d = diff.reshape(-1, gram.shape[0], gram.shape[1])
    return torch.einsum("rnk,nkl,rnl->rn", d, gram, d).reshape(-1)


def group_grams(gram: torch.Tensor, group_size: int = 0) -> torch.Tensor:
    """The diagonal blocks of a [cols, cols] input second moment, one per group of
    `group_size` inputs (the last padded with zeros as `quantize` pads weights):
    [groups, group_size, group_size]; without groups the whole matrix, [1, cols, cols]."""
    gram = gram.float()
    cols = gram.shape[0]
    if not group_size:
        return gram[None]
    n = groups(cols, group_size)
    padded = torch.zeros(n * group_size, n * group_size)
    padded[:cols, :cols] = gram
    return torch.stack([padded[g * group_size:(g + 1) * group_size, g * group_size:(g + 1) * group_size]
                        for g in range(n)])


def _side_fit(flat: torch.Tensor, qmax: int) -> torch.Tensor:
    # the least step that keeps each side's largest magnitude within that side's last
    # midrise level (qmax - 1/2 steps above 0, qmax + 1/2 below): the larger side lands
    # exactly on its last level
    return torch.maximum(flat.amax(dim=1).clamp(min=0) / (qmax - 0.5),
                         (-flat.amin(dim=1)).clamp(min=0) / (qmax + 0.5))


def fitted_scale(w: torch.Tensor, bits: int, group_size: int = 0) -> torch.Tensor:
    """The midrise scales (per row, or [rows, groups]) whose larger side's largest weight
    sits exactly on that side's last level: `quantize`'s unclipped shape, another step."""
    if bits not in MIDRISE_BITS:
        raise ValueError(f"fitted scales are for the midrise widths {MIDRISE_BITS}")
    rows = w.shape[0]
    flat = w.detach().float().reshape(rows, -1)
    if group_size:
        padded, n = _padded_groups(flat, group_size)
        return fitted_scale(padded, bits).reshape(rows, n)
    return _scale(flat.abs().amax(dim=1), _side_fit(flat, QMAX[bits]))


def groups(cols: int, group_size: int) -> int:
    """Scales per row: 1 per row, or ceil(cols / group_size) with groups."""
    return int(scale_groups(Fraction(cols), group_size, math.ceil))


def _padded_groups(flat: torch.Tensor, group_size: int) -> tuple[torch.Tensor, int]:
    # each group of `group_size` consecutive inputs of a row becomes a row of its own
    # ([rows * n, group_size], n groups per row); the last group of a row is padded with
    # zeros, which stay zero, cost nothing and lie inside [min(w, 0), max(w, 0)] already
    rows, cols = flat.shape
    n = groups(cols, group_size)
    padded = torch.zeros(rows, n * group_size)
    padded[:, :cols] = flat
    return padded.reshape(rows * n, group_size), n


def _unpadded(q: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    # `_padded_groups`' inverse for codes: drop each row's padding, restore the weight's shape
    rows, cols = shape[0], math.prod(shape[1:])
    return q.reshape(rows, -1)[:, :cols].reshape(shape).contiguous()


def _quantize_groups(w: torch.Tensor, bits: int, group_size: int, clip: bool,
                     gram: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    rows = w.shape[0]
    padded, n = _padded_groups(w.detach().float().reshape(rows, -1), group_size)
    q, scale = quantize(padded, bits, clip=clip, gram=gram)
    return _unpadded(q, w.shape), scale.reshape(rows, n)


def quantize_affine(w: torch.Tensor, bits: int, group_size: int = 0, clip: bool = True,
                    qmax: int | None = None, gram: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q, scale, zero) on the asymmetric grid (module docstring); `qmax` (8 bits only)
    narrows the codes to [-qmax, qmax] (KERNEL_QMAX for fbgemm); `gram` as `quantize`'s."""
    if bits not in QMAX:
        raise ValueError(f"integer bits must be one of {sorted(QMAX)}")
    rows = w.shape[0]
    flat = w.detach().float().reshape(rows, -1)
    if group_size:
        padded, n = _padded_groups(flat, group_size)
        q, scale, zero = quantize_affine(padded, bits, clip=clip, gram=gram)
        return _unpadded(q, w.shape), scale.reshape(rows, n), zero.reshape(rows, n)
    qmin, qmax = (QMIN[bits], QMAX_AFFINE[bits]) if qmax is None or bits != 8 else (-int(qmax), int(qmax))
    low = flat.amin(dim=1).clamp(max=0.0)
    high = flat.amax(dim=1).clamp(min=0.0)
    midrise = bits in MIDRISE_BITS
    best = None
    for ratio in CLIP_RATIOS if clip and midrise else (1.0,):
        lo, hi = low * ratio, high * ratio
        # midrise: 2**bits - 1 non-zero levels at (k - 1/2) steps on either side of the
        # zero point, so the range [lo, hi] spans 2**bits - 2 steps; else 2**bits - 1
        scale = _scale(hi - lo, (hi - lo) / (qmax - qmin - (1 if midrise else 0)))
        zero = torch.round(qmax - hi / scale - (0.5 if midrise else 0.0))
        # a row with positive (negative) weights keeps a code above (below) its zero point
        zero = torch.minimum(zero, torch.where(high > 0, float(qmax - 1), float(qmax)))
        zero = torch.maximum(zero, torch.where(low < 0, float(qmin + 1), float(qmin))).clamp_(qmin, qmax)
        z = zero[:, None]
        if midrise:
            # the nearest level (k - 1/2) steps from the zero point, sign kept, k >= 1
            k = torch.floor(flat.abs() / scale[:, None]).add_(1)
            q = torch.where(flat > 0, torch.minimum(z + k, torch.full_like(k, qmax)),
                            torch.maximum(z - k, torch.full_like(k, qmin)))
            q = torch.where(flat == 0, z.expand_as(q), q)
        else:
            q = (torch.round(flat / scale[:, None]) + z).clamp_(qmin, qmax)
            # keep density honest: only a zero weight gets the zero point's code
            q = torch.where(flat == 0, z.expand_as(q), torch.where(q == z, z + torch.sign(flat), q))
        err = _error(affine_levels(q - z, bits) * scale[:, None] - flat, gram)
        if best is None:
            best = (q, scale, zero, err)
            continue
        better = err < best[3]
        best = (torch.where(better[:, None], q, best[0]), torch.where(better, scale, best[1]),
                torch.where(better, zero, best[2]), torch.minimum(err, best[3]))
    q, scale, zero, _ = best
    return q.to(torch.int8).reshape(w.shape), scale, zero.to(torch.int8)


def affine_levels(d: torch.Tensor, bits: int) -> torch.Tensor:
    """The value in steps of a code `d` codes away from its zero point: d at 8 bits,
    sign(d) * (|d| - 1/2) on the 4- and 2-bit midrise grid (0 stays 0)."""
    d = d.float()
    return torch.sign(d) * (d.abs() - 0.5) if bits in MIDRISE_BITS else d


def expand_scale(scale: torch.Tensor, cols: int, group_size: int = 0) -> torch.Tensor:
    """The scale of every weight of a [rows, cols] matrix: [rows, cols]."""
    scale = scale.reshape(scale.shape[0], -1)
    if not group_size:
        return scale.expand(-1, cols)
    return scale.repeat_interleave(group_size, dim=1)[:, :cols]


def _scale(amax: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    # scales are computed in fp32 and stored in fp32, so a saved model reproduces the
    # in-memory one bit for bit; an all-zero row gets scale 1 (any value works)
    return torch.where(amax > 0, scale, torch.ones_like(amax)).float()


def dequantize(q: torch.Tensor, scale: torch.Tensor, bits: int = 8, group_size: int = 0,
               zero: torch.Tensor | None = None) -> torch.Tensor:
    if zero is not None:       # the affine grid: levels of (q - zero), times scale, per row or group
        flat = q.float().reshape(q.shape[0], -1)
        cols = flat.shape[1]
        d = affine_levels(flat - expand_scale(zero.float(), cols, group_size), bits)
        return (d * expand_scale(scale, cols, group_size)).reshape(q.shape)
    if group_size:
        flat = levels(q, bits).reshape(q.shape[0], -1)
        return (flat * expand_scale(scale, flat.shape[1], group_size)).reshape(q.shape)
    shape = (q.shape[0],) + (1,) * (q.dim() - 1)
    return levels(q, bits) * scale.reshape(shape)


def zero_codes(q: torch.Tensor, zero: torch.Tensor | None, group_size: int = 0) -> torch.Tensor:
    """Where the codes stand for 0: code 0 on the symmetric grids, the zero point on the affine one."""
    if zero is None:
        return q == 0
    flat = q.reshape(q.shape[0], -1)
    return (flat.to(torch.int16) == expand_scale(zero.to(torch.int16), flat.shape[1], group_size)).reshape(q.shape)


def pack(q: torch.Tensor, bits: int) -> torch.Tensor:
    """int8 values -> packed uint8 (4 and 2 bits) or a flat int8 copy (8 bits)."""
    flat = q.reshape(-1).to(torch.int8)
    if bits == 8:
        return flat.clone()
    per = 8 // bits
    offset = 1 << (bits - 1)
    u = (flat.to(torch.int16) + offset).to(torch.uint8)
    pad = (-u.numel()) % per
    if pad:
        # padding holds the code of zero; unpack drops it by numel
        u = torch.cat([u, torch.full((pad,), offset, dtype=torch.uint8)])
    u = u.reshape(-1, per).to(torch.int32)
    shifts = torch.arange(per, dtype=torch.int32) * bits
    return (u << shifts).sum(dim=1).to(torch.uint8)


def unpack(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    if bits == 8:
        return packed.reshape(-1)[:numel].to(torch.int8)
    per = 8 // bits
    offset = 1 << (bits - 1)
    shifts = torch.arange(per, dtype=torch.int32) * bits
    vals = (packed.to(torch.int32)[:, None] >> shifts) & ((1 << bits) - 1)
    return (vals.reshape(-1)[:numel] - offset).to(torch.int8)


def bitmap(mask: torch.Tensor) -> torch.Tensor:
    flat = mask.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, torch.zeros(pad, dtype=torch.uint8)])
    weights = (1 << torch.arange(8, dtype=torch.int32))
    return (flat.reshape(-1, 8).to(torch.int32) * weights).sum(dim=1).to(torch.uint8)


def unbitmap(bits: torch.Tensor, numel: int) -> torch.Tensor:
    shifts = torch.arange(8, dtype=torch.int32)
    vals = (bits.to(torch.int32)[:, None] >> shifts) & 1
    return vals.reshape(-1)[:numel].bool()


__all__ = ["KERNEL_QMAX", "QMAX", "QMAX_AFFINE", "QMIN", "bitmap", "dequantize", "expand_scale", "groups", "pack",
           "quantize",
           "affine_levels", "fitted_scale", "group_grams", "midrise_codes", "quantize_affine", "unbitmap", "unpack",
           "zero_codes"]
