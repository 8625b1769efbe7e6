"""Weight profiles: how much of a layer's weight each compression would remove.

Contract: `weight_profile(model, layer_names)` returns `{layer: LayerProfile}` for the
named logical layers that hold one float weight matrix. A profile keeps a view of the
model's own float weight (no copy; the search never changes the baseline, it applies
rules to copies) and answers, without running anything, the *relative squared error*
||W - W'||^2 / ||W||^2 that a compression of the dense weight W would cause, each
answer computed on first use and cached:

- `pruned(fraction)`: magnitude pruning of that fraction of the weights (the smallest
  ones go first, as `prune(method = magnitude)` does);
- `channels(fraction)`: removing that fraction of output rows, smallest L2 norm first
  (as `prune(method = channel)` ranks them);
- `truncated(rank)`: the best rank-`rank` approximation (singular values);
- `quantized(bits)`: round-trip through KMR's own per-channel quantizer (2, 4, 8 bits)
  or bfloat16 (16 bits, as `quantize(bits = 16)` stores it); 0 at 32 bits.

Search uses it as a *prior* on quality (kmr_dsl.search.prior): a setting that removes
less of the weights is a better first guess for meeting a quality floor. It is a
heuristic for ordering runs, never a verdict: meters are always measured.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from kmr_dsl.runtime import layers as kl
from kmr_dsl.runtime.quant import QMAX, dequantize, quantize

CURVE_POINTS = 201   # samples of the magnitude-pruning curve (fractions 0, 0.005, ..., 1)


class LayerProfile:
    """One layer's answers, each computed on first use and kept (a search asks the same
    few values over and over; a pipeline that never quantizes a layer never pays for
    its quantization round trips)."""

    def __init__(self, weight: torch.Tensor):
        self.matrix = weight.detach().float().reshape(weight.shape[0], -1)   # a view, no copy
        self._total = None
        self._prune_curve = None
        self._row_curve = None
        self._sv = None
        self._quant: dict[int, float] = {}

    @property
    def total(self) -> float:
        if self._total is None:
            self._total = max(float((self.matrix.double() ** 2).sum()), 1e-30)
        return self._total

    def pruned(self, fraction: float) -> float:
        fraction = min(1.0, max(0.0, fraction))
        if fraction == 0.0:
            return 0.0
        if self._prune_curve is None:
            self._prune_curve = _curve_of((self.matrix ** 2).reshape(-1).numpy(), CURVE_POINTS)
        return float(np.interp(fraction, np.linspace(0.0, 1.0, CURVE_POINTS), self._prune_curve))

    def channels(self, fraction: float) -> float:
        fraction = min(1.0, max(0.0, fraction))
        if fraction == 0.0:
            return 0.0
        if self._row_curve is None:
            rows = np.sort((self.matrix.double() ** 2).sum(dim=1).numpy())
            self._row_curve = np.concatenate([[0.0], np.cumsum(rows)]) / self.total
        count = len(self._row_curve) - 1
        return float(np.interp(fraction * count, np.arange(count + 1), self._row_curve))

    def truncated(self, rank: float) -> float:
        full = min(self.matrix.shape)
        if rank >= full:
            return 0.0
        if self._sv is None:
            s = np.linalg.svd(self.matrix.double().numpy(), compute_uv=False) ** 2
            self._sv = np.concatenate([[0.0], np.cumsum(s)]) / max(float(s.sum()), 1e-30)
        return float(1.0 - np.interp(max(0.0, rank), np.arange(full + 1), self._sv))

    def quantized(self, bits: float) -> float:
        if bits >= 32:
            return 0.0
        width = 16 if bits >= 16 else max((b for b in QMAX if b <= bits), default=min(QMAX))
        if width not in self._quant:
            w = self.matrix
            if width == 16:
                back = w.bfloat16().float()
            else:
                q, scale = quantize(w, width)
                back = dequantize(q, scale, width)
            self._quant[width] = float(((back - w).double() ** 2).sum()) / self.total
        return self._quant[width]


def _curve_of(values: np.ndarray, points: int) -> np.ndarray:
    """Energy fraction of the smallest values, sampled at `points` evenly spaced fractions."""
    energy = np.sort(values.astype(np.float64))
    total = float(energy.sum())
    if total <= 0 or energy.size == 0:
        return np.zeros(points)
    cum = np.concatenate([[0.0], np.cumsum(energy)]) / total
    at = np.linspace(0.0, 1.0, points) * energy.size
    return np.interp(at, np.arange(energy.size + 1), cum)


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
            out[name] = LayerProfile(kl.leaf_weight(leaves[0][1]))
    return out


__all__ = ["LayerProfile", "weight_profile"]
