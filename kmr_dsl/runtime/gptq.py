"""GPTQ: weight quantization with Hessian-based error compensation (Frantar et al., 2022).

Contract: `hessian(inputs)` accumulates H = 2/n * X^T X over calibration activations of a
Linear (any leading dimensions; the last one is the input width). `quantize(w, h, bits,
group_size, dampening, act_order)` returns `(q, scale)` on KMR's own integer grid
(`kmr_dsl.runtime.quant`: int8 codes, midrise levels on all 2**bits codes at 4 and 2
bits, [-8, 7] at 4 as the reference's, per-row or per-group fp32 scales), so the result is stored, loaded and costed exactly like `quantize`'s — only
the choice of codes differs: column by column, the rounding error of a column is spread
over the columns not yet quantized, weighted by the inverse Hessian, which minimises the
layer's output error ||W X - Q X|| on the calibration data instead of ||W - Q||.

Departures from the reference implementation (github.com/IST-DASLab/gptq, `fasterquant`),
each for a stated reason:
- Scales are chosen once, from the original weights' largest magnitudes ("static
  groups" in the reference): they do not depend on the column order, so `act_order` and
  `group_size` combine and the stored groups stay contiguous. Not `quantize`'s clipped
  scales: GPTQ's updates push weights past a clip, and on MiniLM clipped scales gave
  mean cosine 0.943 against 0.971 unclipped (int4, g128, docs/benchmarks.md). At 4 bits
  (`FITTED_BITS`) the step is `quant.fitted_scale`'s, which puts the side that binds
  exactly on its last level (+13/2 or -15/2 steps): with max|w| / 7 a group's largest
  positive weight started past the grid, cut to 13/14 of itself, and on MiniLM
  (int4 g128) the worst sentence's cosine fell to 0.762 (0.842 with the fit; act_order
  0.830 -> 0.904, docs/benchmarks.md). At 2 bits the fit doubles the step (a single
  positive level) and measured far worse, so there the step stays max|w|.
- The levels are KMR's zero-preserving midrise ones, not the reference's integer levels
  (q - zero) * scale: on the reference grid a weight near 0 rounds to 0, which would
  change the layer's density, and keeping it off 0 costs a whole step there (measured:
  24% more layer error than the midrise grid on a tiny Llama, docs/benchmarks.md). Both use all 16
  codes at 4 bits (the step rule differs: above).
- Pruned weights stay zero and every other weight gets a non-zero code (a weight whose
  update lands on exactly 0 keeps the smallest code of its original sign), so pruning's
  density survives GPTQ exactly, as it survives `quantize`; the error of forcing a zero is
  compensated like any other rounding error (SparseGPT's treatment of its mask).
- A column whose input is never active (H[i, i] = 0) is quantized by rounding and gets a
  unit diagonal, rather than being zeroed as the reference does, for the same reason.
- If H + damping is not positive definite the damping is raised tenfold, up to three
  times, before giving up (`NotPositiveDefinite`).
"""

from __future__ import annotations

import torch

from kmr_dsl.runtime import quant

FITTED_BITS = (4,)      # the widths whose step fits the larger side's largest weight

BLOCK = 128


class NotPositiveDefinite(ValueError):
    pass


def hessian(inputs: list[torch.Tensor]) -> torch.Tensor:
    """H = 2/n sum x x^T over every row x of every input (float64 accumulation)."""
    h = None
    n = 0
    for x in inputs:
        x = x.detach().reshape(-1, x.shape[-1]).double()
        part = x.T @ x
        h = part if h is None else h + part
        n += x.shape[0]
    if h is None or n == 0:
        raise ValueError("no calibration activations reached the layer")
    return (2.0 / n) * h


def inverse_cholesky(h: torch.Tensor, dampening: float) -> torch.Tensor:
    cols = h.shape[0]
    mean_diag = float(torch.diagonal(h).mean()) or 1.0
    damp = dampening
    for _ in range(4):
        hd = h + damp * mean_diag * torch.eye(cols, dtype=h.dtype)
        chol, info = torch.linalg.cholesky_ex(hd)
        if int(info) == 0:
            inv = torch.cholesky_inverse(chol)
            upper, info = torch.linalg.cholesky_ex(inv, upper=True)
            if int(info) == 0:
                return upper
        damp *= 10
    raise NotPositiveDefinite(f"the calibration Hessian is not positive definite even with dampening {damp / 10:g}")


def quantize(w: torch.Tensor, h: torch.Tensor, bits: int, group_size: int = 0, dampening: float = 0.01,
             act_order: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 codes with w's shape, fp32 scales of `quant.quantize(w, bits, group_size, clip=False)`)."""
    rows, cols = w.shape
    if h.shape != (cols, cols):
        raise ValueError(f"Hessian of shape {tuple(h.shape)} for a weight of {cols} inputs")
    original = w.detach().double()
    mask = original != 0
    if bits in FITTED_BITS:
        scale = quant.fitted_scale(w, bits, group_size)
    else:
        _, scale = quant.quantize(w, bits, group_size, clip=False)
    # the scale of every weight, [rows, cols]
    col_scale = quant.expand_scale(scale.double(), cols, group_size)

    h = h.detach().double().clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    order = torch.argsort(torch.diagonal(h), descending=True) if act_order else torch.arange(cols)
    work = original[:, order].clone()
    h = h[order][:, order]
    s = col_scale[:, order]
    m = mask[:, order]
    hinv = inverse_cholesky(h, dampening)

    codes = torch.zeros(rows, cols, dtype=torch.float64)
    for i1 in range(0, cols, BLOCK):
        i2 = min(i1 + BLOCK, cols)
        block = work[:, i1:i2].clone()
        errors = torch.zeros_like(block)
        hb = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = block[:, i]
            q = _codes(col, s[:, i1 + i], m[:, i1 + i], original[:, order[i1 + i]], bits)
            value = quant.levels(q, bits).double() * s[:, i1 + i]
            codes[:, i1 + i] = q
            err = (col - value) / hb[i, i]
            block[:, i:] -= err[:, None] * hb[i, i:][None, :]
            errors[:, i] = err
        work[:, i2:] -= errors @ hinv[i1:i2, i2:]
    inverse = torch.argsort(order)
    return codes[:, inverse].to(torch.int8), scale


def _codes(col: torch.Tensor, scale: torch.Tensor, keep: torch.Tensor, original: torch.Tensor,
           bits: int) -> torch.Tensor:
    """The nearest code of each value on KMR's grid; pruned weights 0, others non-zero."""
    x = col / scale
    if bits in quant.MIDRISE_BITS:
        q = quant.midrise_codes(x, bits)
    else:
        qmax = quant.QMAX[bits]
        q = torch.round(x).clamp(-qmax, qmax)
    fallback = torch.where(original < 0, -1.0, 1.0).double()
    q = torch.where(keep & (q == 0), fallback, q)
    return torch.where(keep, q, torch.zeros_like(q))


def output_error(w: torch.Tensor, q_value: torch.Tensor, h: torch.Tensor) -> float:
    """tr((W - Q) H (W - Q)^T) / 2: the mean squared output error on the calibration data."""
    d = (w.double() - q_value.double())
    return float(torch.einsum("ij,jk,ik->", d, h.double(), d)) / 2


__all__ = ["BLOCK", "NotPositiveDefinite", "hessian", "inverse_cholesky", "output_error", "quantize"]
