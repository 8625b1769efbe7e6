"""A rule's contract, evaluated on a measured state, and compared with the state after it.

Contract (no torch here: states are the plain dicts of `runtime.state.measure_state`):
- `requires_failing(rule, before, layer, params)` is the first `requires` clause that is
  false in the state before the step (None when all hold), evaluated with the one IR
  evaluator `kmr_dsl.core.evaluate` (`Env.params`, `Env.fields`).
- `predict(rule, before, layer, params)` evaluates every `effect` there (simultaneous
  assignment: all effects read the state before the step).
- `compare(...)` lists every way the state after the step differs from the contract:
  1. a field an effect names must have the effect's value;
  2. derived fields (docs/design.md, "State"): when an effect changes a layer's
     `out_features`, each layer in its `consumers` has `in_features` scaled by the
     measured ratio new/old (a norm in between: `out_features` too); a layer whose
     shape changed and whose `rank` no effect names has rank min(old rank, in, out);
  3. every other field keeps its value (`params` is excluded: spec section 5 makes it
     a static fact; the `params` meter, compared by `kmr_dsl.proptest.costcheck`,
     covers what a rule does to the parameter count); the layers are the same.
Tolerances (docs/testing.md):
- `kind`, `frozen`, `trainable`: equal;
- `bits`, `in_features`, `out_features`, `rank`, `adapter_rank`: a whole prediction
  must be met exactly; a fractional one (channel pruning's `out * (1 - amount)`,
  lowrank's `rank * ratio`) may be rounded either way (floor or ceil), and one between
  0 and 1 may be met by 1 (a layer keeps at least one channel or rank); a field listed
  in `upper` (an effect documented as an upper bound) may be anything from 1 to the
  prediction rounded up; derived shapes (step 2) are exact;
- `foldable`: equal; a listed bound may be true where the effect says false;
- `density`: within half a weight per output row, 0.5 * rows / weights + 1e-6 (a kept
  count is rounded to whole weights once per layer, or once per row for N:M's tail
  groups); unchanged density within 1e-9.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kmr_dsl.core import state as core_state
from kmr_dsl.core import step as core_step
from kmr_dsl.core.evaluate import Env, evaluate
from kmr_dsl.core.program import Rule
from kmr_dsl.core.state import COUNT_FIELDS

# every state field but `params` (a static fact, see the module docstring)
LAYER_FIELDS = tuple(f for f in core_state.LAYER_FIELDS if f != "params")


@dataclass(frozen=True)
class Mismatch:
    field: str           # `layer.density` of the selected layer, `layer 3.in_features`, `model.trainable`
    measured: object
    expected: object
    why: str             # "the effect says", "but no effect names it, so it should stay", ...

    def text(self) -> str:
        return f"{self.field} is {_show(self.measured)}, {self.why} {_show(self.expected)}"

    def to_json(self) -> dict:
        return {"field": self.field, "measured": self.measured, "expected": self.expected, "why": self.why}


def _show(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def fields_env(before: dict, layer: str | None, params: dict) -> Env:
    fields = {("model", "trainable"): bool(before["trainable"])}
    if layer is not None:
        fields.update({("layer", f): v for f, v in before["layers"][layer].items()})
    return Env(params=dict(params), fields=fields)


def requires_failing(rule: Rule, before: dict, layer: str | None, params: dict):
    """The first requires clause that does not hold before the step, or None."""
    env = fields_env(before, layer, params)
    for clause in rule.requires:
        if not bool(evaluate(clause, env)):
            return clause
    return None


def predict(rule: Rule, before: dict, layer: str | None, params: dict) -> dict[tuple[str, str], object]:
    """{(scope, field): value} of every effect, all evaluated in the state before the step."""
    env = fields_env(before, layer, params)
    return {(eff.scope, eff.field): evaluate(eff.expr, env) for eff in rule.effects}


def _count_ok(measured, predicted, upper: bool) -> bool:
    p = float(predicted)
    if upper:
        return 1 <= measured <= max(1, math.ceil(p - 1e-9))
    if 0 < p < 1 and measured == 1:
        return True         # a layer keeps at least one channel, one rank
    if abs(p - round(p)) < 1e-9:
        return measured == round(p)
    return measured in (math.floor(p), math.ceil(p))


def _field_ok(name: str, measured, predicted, density_tol: float, upper: bool) -> bool:
    if name in COUNT_FIELDS:
        return isinstance(predicted, (int, float)) and not isinstance(predicted, bool) \
            and _count_ok(measured, predicted, upper)
    if name == "density":
        return abs(float(measured) - float(predicted)) <= density_tol
    if name in ("frozen", "trainable", "symmetric", "input_scale"):
        return bool(measured) == bool(predicted)
    if name == "foldable":
        # a bound on `foldable` is a sound one: the layer may stay foldable where the
        # effect says false, never the other way round
        return bool(measured) == bool(predicted) or (upper and bool(measured) and not bool(predicted))
    return measured == predicted


def compare(before: dict, after: dict, layer: str | None, predicted: dict, consumers: dict[str, tuple[str, ...]],
            weights: dict[str, tuple[int, int]], upper: frozenset[str] = frozenset(),
            coupled: dict[str, tuple[str, ...]] | None = None,
            depthwise: frozenset[str] = frozenset()) -> tuple[list[Mismatch], set[str]]:
    """(mismatches, layers whose rank an effect changed) for one step on `layer`.

    consumers: layer -> the layers that shrink with its output channels (facts);
    coupled: layer -> the other members of its channel group (their out_features follow
    it; a depthwise member, `depthwise`, its in_features too);
    weights: layer -> (rows, weight elements) after the step, for the density tolerance.
    """
    out: list[Mismatch] = []
    before_layers, after_layers = before["layers"], after["layers"]
    if set(before_layers) != set(after_layers):
        gone, new = sorted(set(before_layers) - set(after_layers)), sorted(set(after_layers) - set(before_layers))
        out.append(Mismatch("the model's layers", ", ".join(new) or "(none new)", ", ".join(gone) or "(none lost)",
                            "new ones appeared, or these disappeared:"))
        return out, set()
    expected: dict[str, dict[str, tuple[object, str]]] = {
        name: {f: (st[f], "but no effect names it, so it should stay") for f in LAYER_FIELDS}
        for name, st in before_layers.items()}
    model_expected = (bool(before["trainable"]), "but no effect names it, so it should stay")
    effected: dict[str, set[str]] = {name: set() for name in before_layers}
    for (scope, fname), value in predicted.items():
        if scope == "model":
            model_expected = (value, "the effect says")
        elif layer is not None:
            expected[layer][fname] = (value, "the effect says")
            effected[layer].add(fname)
    rank_set: set[str] = set()
    old_rank = before_layers[layer]["rank"] if layer is not None else None
    if layer is not None and "rank" in effected[layer] and (
            expected[layer]["rank"][0] != old_rank or after_layers[layer]["rank"] != old_rank):
        rank_set.add(layer)     # as the verifier's state records it: a rule changed the rank

    # derived: consumers follow a changed out_features (at the measured, rounded ratio)
    if layer is not None and "out_features" in effected[layer]:
        old, new = before_layers[layer]["out_features"], after_layers[layer]["out_features"]
        value = expected[layer]["out_features"][0]
        if old and new != old and _field_ok("out_features", new, value, 0.0, False):
            for c in consumers.get(layer, ()):
                if c not in expected:
                    continue
                why = f"as a consumer of `{layer}`'s channels ({old} -> {new}) it should be"
                for f, v in core_step.shrink_consumer(before_layers[c], old, new).items():
                    expected[c][f] = (float(v), why)
            for m in (layer, *(coupled or {}).get(layer, ())):
                why = f"as a member of `{layer}`'s channel group ({old} -> {new}) it should be"
                if m != layer and m in expected:
                    expected[m]["out_features"] = (new, why)
                if m in depthwise and m in expected:
                    expected[m]["in_features"] = (float(before_layers[m]["in_features"] * new / old), why)
    # derived: an unnamed rank follows a changed shape
    for name, st in after_layers.items():
        b = before_layers[name]
        if "rank" not in effected[name] and (st["in_features"], st["out_features"]) != (b["in_features"], b["out_features"]):
            # min(rank, in, out): for a shrinking layer the same as min(in, out) when no rule set the rank
            rank = core_step.follow_rank(b["rank"], st["in_features"], st["out_features"], True)
            expected[name]["rank"] = (rank, "with its new shape its rank should be min(old rank, in, out) =")

    for name in before_layers:
        rows, numel = weights.get(name, (1, 1))
        for fname in LAYER_FIELDS:
            value, why = expected[name][fname]
            measured = after_layers[name][fname]
            named = fname in effected[name]
            tol = (0.5 * max(1, rows) / max(1, numel) + 1e-6) if named else 1e-9
            if not _field_ok(fname, measured, value, tol, named and fname in upper):
                label = f"layer.{fname}" if name == layer else f"layer `{name}`.{fname}"
                out.append(Mismatch(label, measured, value, why))
    value, why = model_expected
    if not _field_ok("trainable", after["trainable"], value, 0.0, False):
        out.append(Mismatch("model.trainable", bool(after["trainable"]), bool(value), why))
    return out, rank_set


__all__ = ["COUNT_FIELDS", "LAYER_FIELDS", "Mismatch", "compare", "fields_env", "predict", "requires_failing"]
