"""The reference GPTQ (github.com/IST-DASLab/gptq: `quant.py` Quantizer and `gptq.py`
`fasterquant`), re-implemented in torch to compare KMR's GPTQ against, on the same weights
and Hessian.

Faithful to the reference in what the comparison reads: per-row (per-group) min/max
parameters, symmetric `scale = 2 max|w| / maxq`, `zero = (maxq + 1) / 2`, codes
`clamp(round(w / scale) + zero, 0, maxq)` (so [-8, 7] about the zero point at 4 bits,
16 levels), value `scale * (q - zero)`; a group's parameters found from the partly
updated weights when the loop reaches its first column; damping `percdamp * mean(diag H)`;
the upper Cholesky factor of H^-1; blocks of 128 with lazy updates; dead inputs zeroed.
Not implemented: `act_order`, `static_groups` and the MSE grid search (off by default there).

`keep_density=True` is not the reference: a non-zero weight that would get the zero
point's code moves one code towards its sign, the rule KMR needs to keep a layer's density
exact (what the reference grid costs under that rule).
"""

from __future__ import annotations

import torch


def find_params(x: torch.Tensor, bits: int, sym: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero) per row of `x`, as the reference Quantizer.find_params(weight=True)."""
    maxq = 2 ** bits - 1
    xmin = torch.minimum(x.min(dim=1).values, torch.zeros(x.shape[0], dtype=x.dtype))
    xmax = torch.maximum(x.max(dim=1).values, torch.zeros(x.shape[0], dtype=x.dtype))
    if sym:
        xmax = torch.maximum(xmin.abs(), xmax)
        xmin = torch.where(xmin < 0, -xmax, xmin)
    both_zero = (xmin == 0) & (xmax == 0)
    xmin = torch.where(both_zero, -1.0, xmin)
    xmax = torch.where(both_zero, 1.0, xmax)
    scale = (xmax - xmin) / maxq
    zero = torch.full_like(scale, (maxq + 1) / 2) if sym else torch.round(-xmin / scale)
    return scale, zero


def codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int,
          keep_density: bool = False) -> torch.Tensor:
    """The reference's integer codes q in [0, maxq] (value scale * (q - zero))."""
    q = torch.clamp(torch.round(w / scale) + zero, 0, 2 ** bits - 1)
    if keep_density:
        q = torch.where((w != 0) & (q == zero), zero + torch.sign(w), q)
    return q


def fasterquant(w: torch.Tensor, h: torch.Tensor, bits: int, group_size: int = 0, percdamp: float = 0.01,
                blocksize: int = 128, keep_density: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(quantized values, codes - zero) of the reference GPTQ on weight `w` with Hessian `h`."""
    w = w.detach().double().clone()
    h = h.detach().double().clone()
    rows, cols = w.shape
    scale, zero = find_params(w, bits)
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    h += percdamp * torch.mean(torch.diagonal(h)) * torch.eye(cols, dtype=h.dtype)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    values = torch.zeros_like(w)
    steps = torch.zeros_like(w)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = w1[:, i]
            if group_size and (i1 + i) % group_size == 0:
                scale, zero = find_params(w[:, i1 + i:i1 + i + group_size], bits)
            q = codes(col, scale, zero, bits, keep_density)
            values[:, i1 + i] = scale * (q - zero)
            steps[:, i1 + i] = q - zero
            e = (col - values[:, i1 + i]) / hinv1[i, i]
            w1[:, i:] -= e[:, None] @ hinv1[i, i:][None, :]
            err1[:, i] = e
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return values, steps
