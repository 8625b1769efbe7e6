"""A free prior on quality: how much of the model's weights a setting removes.

Contract: `QualityPrior(profiles, initial).distortion(layers)` takes the verifier's
predicted final state per layer (`kmr_dsl.verify.predict_layers`: density, bits, rank,
out_features ...) and returns the sum over profiled layers of the estimated relative
squared weight error of that state (each layer's share capped at 1):

    magnitude pruning to density d  ->  pruned(1 - d / d0)
    fewer output channels           ->  channels(1 - out / out0)
    rank below min(in, out)         ->  truncated(rank)
    storage at b < b0 bits          ->  quantized(b) * d / d0 (only kept weights are rounded)

with d0 and out0 the layer's values before the pipeline (`initial`). Layers count
equally: a small output layer matters as much as a large hidden one. Knobs that act
only through training (epochs, lr) do not change it. It ranks settings the analytic
budget admits by how likely they are to keep quality (kmr_dsl.search.budgeted picks
its first run with it); it never replaces a measured meter. Numpy only: the weight
profiles come from the runtime (kmr_dsl.runtime.profile).
"""

from __future__ import annotations


class QualityPrior:
    def __init__(self, profiles: dict, initial: dict[str, dict[str, float]]):
        self.profiles = profiles
        self.initial = initial

    def distortion(self, layers: dict[str, dict[str, float]]) -> float:
        total = 0.0
        for name, prof in self.profiles.items():
            st, st0 = layers.get(name), self.initial.get(name)
            if not st or not st0:
                continue
            kept = _ratio(st.get("density"), st0.get("density"))
            err = prof.pruned(1.0 - kept)
            err += prof.channels(1.0 - _ratio(st.get("out_features"), st0.get("out_features")))
            full = min(st.get("in_features", 0.0), st.get("out_features", 0.0))
            rank = st.get("rank")
            if rank is not None and full and rank < full:
                err += prof.truncated(rank)
            bits = st.get("bits")
            if bits is not None and bits < st0.get("bits", 32.0):
                err += prof.quantized(bits) * kept
            total += min(1.0, err)
        return total


def _ratio(now: float | None, before: float | None) -> float:
    if now is None or not before:
        return 1.0
    return min(1.0, max(0.0, now / before))


__all__ = ["QualityPrior"]
