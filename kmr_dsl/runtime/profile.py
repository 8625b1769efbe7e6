"""Weight profiles: how much of a layer's weight each compression would remove.

Contract: `weight_profile(model, layer_names)` reads the float weights of the named
logical layers once and returns `{layer: LayerProfile}` (numpy arrays; nothing here
keeps a copy of a weight: the matrix kept for a lazy SVD is a view of the model's own
float tensor, which the search never changes: it applies rules to copies). A profile
answers, without running anything, the *relative squared error* ||W - W'||^2 / ||W||^2
that a compression of the dense weight W would cause:

- `pruned(fraction)`: magnitude pruning of that fraction of the weights (the smallest
  ones go first, as `prune(method = magnitude)` does);
- `channels(fraction)`: removing that fraction of output rows, smallest L2 norm first
  (as `prune(method = channel)` ranks them);
- `truncated(rank)`: the best rank-`rank` approximation (singular values, computed on
  first use: only pipelines that change a rank pay for it);
- `quantized(bits)`: round-trip through KMR's own per-channel quantizer (2, 4, 8 bits)
  or bfloat16 (16 bits, as `quantize(bits = 16)` stores it); 0 at 32 bits.

Search uses it as a *prior* on quality (kmr_dsl.search.prior): a setting that removes
less of the weights is a better first guess for meeting a quality floor. It is a
heuristic for ordering runs, never a verdict: meters are always measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from kmr_dsl.runtime import layers as kl
from kmr_dsl.runtime.quant import QMAX, dequantize, quantize

CURVE_POINTS = 201   # samples of the magnitude-pruning curve (fractions 0, 0.005, ..., 1)


@dataclass
class LayerProfile:
    prune_curve: np.ndarray            # energy fraction removed at fractions linspace(0, 1)
    row_curve: np.ndarray              # energy fraction removed with the k weakest rows, k = 0..rows
    quant: dict[int, float]            # bits -> relative squared error of the round trip
    matrix: np.ndarray | None = None   # (rows, cols) weight, kept only for the SVD
    _sv: np.ndarray | None = field(default=None, repr=False)

    def pruned(self, fraction: float) -> float:
        fraction = min(1.0, max(0.0, fraction))
        return float(np.interp(fraction, np.linspace(0.0, 1.0, len(self.prune_curve)), self.prune_curve))

    def channels(self, fraction: float) -> float:
        rows = len(self.row_curve) - 1
        fraction = min(1.0, max(0.0, fraction))
        return float(np.interp(fraction * rows, np.arange(rows + 1), self.row_curve))

    def truncated(self, rank: float) -> float:
        if self._sv is None:
            if self.matrix is None:
                return 0.0
            s = np.linalg.svd(self.matrix.astype(np.float64), compute_uv=False) ** 2
            self._sv = np.concatenate([[0.0], np.cumsum(s)]) / max(float(s.sum()), 1e-30)
            self.matrix = None
        full = len(self._sv) - 1
        if rank >= full:
            return 0.0
        return float(1.0 - np.interp(max(0.0, rank), np.arange(full + 1), self._sv))

    def quantized(self, bits: float) -> float:
        if bits >= 32:
            return 0.0
        known = sorted(self.quant)
        below = [b for b in known if b <= bits]
        return self.quant[below[-1]] if below else self.quant[known[0]]


def _curve_of(values: np.ndarray, points: int) -> np.ndarray:
    """Energy fraction of the smallest values, sampled at `points` evenly spaced fractions."""
    energy = np.sort(values.astype(np.float64))
    total = float(energy.sum())
    if total <= 0 or energy.size == 0:
        return np.zeros(points)
    cum = np.concatenate([[0.0], np.cumsum(energy)]) / total
    at = np.linspace(0.0, 1.0, points) * energy.size
    return np.interp(at, np.arange(energy.size + 1), cum)


def _profile(weight: torch.Tensor) -> LayerProfile:
    w = weight.detach().float().reshape(weight.shape[0], -1)
    total = float((w.double() ** 2).sum())
    sq = (w ** 2).numpy()
    rows = np.sort(sq.sum(axis=1).astype(np.float64))
    row_curve = np.concatenate([[0.0], np.cumsum(rows)]) / max(total, 1e-30)
    quant = {}
    for bits in sorted(QMAX):
        q, scale = quantize(w, bits)
        quant[bits] = float(((dequantize(q, scale, bits) - w).double() ** 2).sum()) / max(total, 1e-30)
    quant[16] = float(((w.bfloat16().float() - w).double() ** 2).sum()) / max(total, 1e-30)
    return LayerProfile(_curve_of(sq.reshape(-1), CURVE_POINTS), row_curve, quant,
                        matrix=w.numpy())


def weight_profile(model: nn.Module, layer_names) -> dict[str, LayerProfile]:
    """Profiles of the named logical layers that hold one float weight matrix."""
    wanted = set(layer_names)
    out = {}
    with torch.no_grad():
        for name, layer in kl.logical_layers(model):
            if name not in wanted:
                continue
            leaves = kl.leaves(name, layer)
            if len(leaves) != 1 or not kl.leaf_is_float(leaves[0][1]):
                continue
            out[name] = _profile(kl.leaf_weight(leaves[0][1]))
    return out


__all__ = ["LayerProfile", "weight_profile"]
