"""Symmetric per-row quantization, bit packing and sparse bitmaps (torch tensors).

Contract:
- `quantize(w, bits)` -> (q, scale): q is int8 with w's shape, values in
  [-QMAX, QMAX] (8 bits: 127, 4 bits: 7, 2 bits: 1, i.e. ternary), scale is fp32 with
  one entry per row (w.shape[0]). Zero maps to zero and, so that a layer's density is
  exactly preserved, a non-zero weight never maps to zero (it keeps at least +-1).
  The scale is the row's largest magnitude / QMAX at 8 bits; at 4 and 2 bits it is
  the clipped one (CLIP_RATIOS of that magnitude) with the least squared error of the
  round trip, +-1 rule included: with one step of 1/7 or 1/1 of the largest weight,
  a few outliers would otherwise push most small weights a whole step away.
- `dequantize(q, scale)` = q * scale per row, fp32.
- `pack(q, bits)` / `unpack(packed, bits, numel)`: 8 // bits values per uint8 byte,
  first value in the lowest bits, each stored as q + 2**(bits-1) (offset binary); 8-bit
  values stay int8 (no packing needed).
- `bitmap(mask)` / `unbitmap(bits, numel)`: one bit per element, little-endian within a
  byte (numpy's `packbits(bitorder="little")`).
These byte formats are the ones docs/artifact.md specifies.
"""

from __future__ import annotations

import torch

QMAX = {8: 127, 4: 7, 2: 1}
# at 4 and 2 bits each row's scale is the one of these clipping ratios (of the row's
# largest magnitude) with the least squared error, outliers clipped; at 8 bits the
# steps are fine enough that the largest magnitude is kept (clipping gains <5%)
CLIPPED_BITS = (4, 2)
CLIP_RATIOS = tuple(round(1.0 - 0.05 * i, 2) for i in range(17))     # 1.0, 0.95, ..., 0.2


def quantize(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    if bits not in QMAX:
        raise ValueError(f"integer bits must be one of {sorted(QMAX)}")
    qmax = QMAX[bits]
    flat = w.detach().float().reshape(w.shape[0], -1)
    amax = flat.abs().amax(dim=1)
    ratios = CLIP_RATIOS if bits in CLIPPED_BITS else (1.0,)
    best_q = best_scale = best_err = None
    for ratio in ratios:
        # scales are computed in fp32 and stored in fp32, so a saved model reproduces the
        # in-memory one bit for bit; an all-zero row gets scale 1 (any value works)
        scale = torch.where(amax > 0, amax * ratio / qmax, torch.ones_like(amax)).float()
        q = _round(flat, scale, qmax)
        if len(ratios) == 1:
            return q.to(torch.int8).reshape(w.shape), scale
        err = ((q * scale[:, None] - flat) ** 2).sum(dim=1)
        if best_q is None:
            best_q, best_scale, best_err = q, scale, err
            continue
        better = err < best_err
        best_q = torch.where(better[:, None], q, best_q)
        best_scale = torch.where(better, scale, best_scale)
        best_err = torch.minimum(err, best_err)
    return best_q.to(torch.int8).reshape(w.shape), best_scale


def _round(flat: torch.Tensor, scale: torch.Tensor, qmax: int) -> torch.Tensor:
    q = torch.round(flat / scale[:, None]).clamp_(-qmax, qmax)
    # keep density honest: a small non-zero weight becomes +-1, never 0
    return torch.where((flat != 0) & (q == 0), torch.sign(flat), q)


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    shape = (q.shape[0],) + (1,) * (q.dim() - 1)
    return q.float() * scale.reshape(shape)


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


__all__ = ["QMAX", "bitmap", "dequantize", "pack", "quantize", "unbitmap", "unpack"]
