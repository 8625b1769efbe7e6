"""The verifier's cost model against the runtime's meters, on one generated model.

Contract: `cost_at(facts, state, rank_set)` (the verifier's public `kmr_dsl.verify.cost_at`)
evaluates the analytic meters' cost model (the same formulas `kmr check` proves budgets with)
at a *measured* state (`runtime.state.measure_state`), for the model `facts` describe
before the step; `rank_set` names the layers whose `rank` a rule set (the cost model
then counts a layer as two factors when that is smaller, as `lowrank` builds it).
`meter_mismatches(...)` compares it with the meters measured on the model after the
step:
- `params`, `nonzero`, `macs`, `trainable_params`: equal as whole numbers (|diff| < 0.5);
- `size`: the cost model's `size` is the upper end of a range (docs/artifact.md), so
  the file after the step must not exceed it; and the change the step made, measured
  (after - before, both real artifact files), must not exceed the predicted change
  (cost model after - cost model before) by more than 2% of the larger measured size
  plus HEADER_SLACK bytes. Only that direction is checked: the upper end counts each
  Linear's configuration at the longest form its storage width allows (a factorized
  layer or an adapter more), so a step may change the file by less than predicted
  (measured: +160 B against +414 B for lowrank), which is slack, not an error. Comparing the change cancels
  what the cost model estimates once per file (the recipe's loader call, header
  entries of tensors outside the layers, the offsets' digits); the slack covers the
  one estimate a step moves: the recipe's per-layer configuration, counted at
  `artifact_layout.config_chars(kind)` characters whatever the layer becomes
  (measured 57-182: a factorized layer or an adapter adds about 110).
Why the measured state and not the effects' prediction: the state keeps exact
products (`out * (1 - amount)`) where the runtime rounds, so meters predicted from the
effects differ by design; the effects are compared with the measured state separately
(`kmr_dsl.proptest.expected`), so together the two checks bound the prediction.
"""

from __future__ import annotations

from kmr_dsl.core.state import ANALYTIC_METERS
from kmr_dsl.verify import cost_at

HEADER_SLACK = 128           # bytes; see the module docstring
SIZE_TOLERANCE = 0.02
COUNT_METERS = tuple(m for m, dim in ANALYTIC_METERS.items() if dim == "count")


def meter_mismatches(measured: dict[str, float], predicted: dict[str, float],
                     size_before: tuple[float, float]) -> list[str]:
    """Lines describing each meter where the runtime and the cost model disagree.

    size_before: (measured, predicted) size of the model before the step.
    """
    out = []
    for meter in COUNT_METERS:
        m, p = measured[meter], predicted[meter]
        if abs(m - p) >= 0.5:
            out.append(f"meter {meter} measures {m:.0f}, the cost model predicts {p:.6g}")
    m0, p0 = size_before
    m_delta, p_delta = measured["size"] - m0, predicted["size"] - p0
    if measured["size"] > predicted["size"]:
        out.append(f"meter size measures {measured['size']:.0f} B, above the cost model's upper end "
                   f"{predicted['size']:.0f} B")
    allowed = SIZE_TOLERANCE * max(m0, measured["size"]) + HEADER_SLACK
    if m_delta - p_delta > allowed:
        out.append(f"meter size changed by {m_delta:+.0f} B, the cost model predicts {p_delta:+.0f} B "
                   f"(allowed difference {allowed:.0f} B)")
    return out


__all__ = ["COUNT_METERS", "HEADER_SLACK", "SIZE_TOLERANCE", "cost_at", "meter_mismatches"]
