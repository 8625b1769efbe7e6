"""SparseGPT: one-shot pruning with weight updates (Frantar & Alistarh, 2023).

Contract: `prune(w, h, keep, n, m, dampening)` returns a weight of w's shape and dtype
in which exactly `keep` weights are non-zero (unstructured, n = m = 0), or in every group of
m consecutive inputs of a row at most n are (N:M; `keep` is then ignored), the zeros of
`w` among the pruned ones; the kept weights are updated so that the layer's output on
the calibration data (Hessian `h`, `gptq.hessian`) moves as little as the method can.

As in the reference (github.com/IST-DASLab/sparsegpt, `fasterprune`), columns are
processed in blocks of `gptq.BLOCK`; within a block the weights with the smallest
w^2 / [H^-1]_ii^2 are pruned, and each column's pruning error is spread over the columns
after it. Two departures, for KMR's exact `density` effect: the block's share of the
prune count is fixed in advance (proportional to its non-zeros, largest remainder first),
so the layer ends with exactly `keep` non-zeros instead of about that many; and a weight
already zero is always among the pruned ones and never revived.
"""

from __future__ import annotations

import torch

from kmr_dsl.core import step
from kmr_dsl.core.step import shares

from kmr_dsl.runtime.gptq import BLOCK, inverse_cholesky
from kmr_dsl.runtime.layers import top_per_row


def prune(w: torch.Tensor, h: torch.Tensor, keep: int = 0, n: int = 0, m: int = 0,
          dampening: float = 0.01) -> torch.Tensor:
    rows, cols = w.shape
    original = w.detach().double()
    alive = original != 0
    nm = n > 0 and m > 0
    h = h.detach().double().clone()
    dead = torch.diagonal(h) == 0
    h[dead, dead] = 1.0
    hinv = inverse_cholesky(h, dampening)
    work = original.clone()
    kept_all = torch.zeros_like(alive)
    blocks = [(i1, min(i1 + BLOCK, cols)) for i1 in range(0, cols, BLOCK)]
    if not nm:
        newly = int(alive.sum()) - keep
        quota = shares(max(0, newly), [int(alive[:, a:b].sum()) for a, b in blocks])
    for index, (i1, i2) in enumerate(blocks):
        block = work[:, i1:i2].clone()
        errors = torch.zeros_like(block)
        hb = hinv[i1:i2, i1:i2]
        diag = torch.diagonal(hb)
        pruned = ~alive[:, i1:i2]
        if not nm and quota[index]:
            score = block ** 2 / diag[None, :] ** 2
            score = torch.where(pruned, torch.tensor(float("inf"), dtype=score.dtype), score)
            idx = torch.topk(score.reshape(-1), quota[index], largest=False).indices
            pruned.view(-1)[idx] = True
        for i in range(i2 - i1):
            col = i1 + i
            if nm and (col % m) == 0:
                width = min(m, cols - col)
                # full groups keep n; the rows' tails keep what `prune` keeps there
                keeps = [n] * rows if width == m else step.nm_tail_keeps(rows, cols, n, m)
                score = block[:, i:i + width] ** 2 / diag[i:i + width][None, :] ** 2
                score = torch.where(pruned[:, i:i + width], torch.tensor(-1.0, dtype=score.dtype), score)
                pruned[:, i:i + width] |= ~top_per_row(score, keeps)
            value = torch.where(pruned[:, i], torch.zeros_like(block[:, i]), block[:, i])
            err = (block[:, i] - value) / hb[i, i]
            block[:, i:] -= err[:, None] * hb[i, i:][None, :]
            block[:, i] = value
            errors[:, i] = err
        # an update may land a kept weight on exactly 0: keep it non-zero
        kept = ~pruned
        block = torch.where(kept & (block == 0), torch.full_like(block, 1e-30), block)
        work[:, i1:i2] = torch.where(pruned, torch.zeros_like(block), block)
        work[:, i2:] -= errors @ hinv[i1:i2, i2:]
        kept_all[:, i1:i2] = ~pruned
    out = work.to(w.dtype)
    # a kept weight below the dtype's range (1e-30 in float16) would round to 0 there:
    # the smallest normal number keeps the count exact in w's own dtype
    return torch.where(kept_all & (out == 0), torch.full_like(out, torch.finfo(w.dtype).tiny), out)


__all__ = ["prune"]
