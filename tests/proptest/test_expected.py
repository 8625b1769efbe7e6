"""The comparison of a measured state with a contract's prediction (no torch here)."""

import copy

from kmr_dsl.proptest.expected import compare


def layer(kind="Linear", i=8, o=8, density=1.0, bits=32, rank=None, frozen=False):
    return {"kind": kind, "in_features": i, "out_features": o, "params": i * o, "density": density, "bits": bits,
            "rank": min(i, o) if rank is None else rank, "adapter_rank": 0, "frozen": frozen, "group_size": 0,
            "symmetric": True, "foldable": False, "heads": 0, "input_scale": False}


BEFORE = {"layers": {"a": layer(o=9), "bn": layer("BatchNorm1d", 9, 9), "b": layer(i=9, o=4)}, "trainable": True}
WEIGHTS = {"a": (9, 72), "bn": (9, 9), "b": (4, 36)}
CONSUMERS = {"a": ("bn", "b")}


def after(**changes):
    state = copy.deepcopy(BEFORE)
    for path, value in changes.items():
        name, field = path.split("__")
        if name == "model":
            state[field] = value
        else:
            state["layers"][name][field] = value
    return state


def problems(state, predicted, upper=frozenset()):
    found, _ = compare(BEFORE, state, "a", predicted, CONSUMERS, WEIGHTS, upper)
    return [m.text() for m in found]


def test_a_fractional_count_may_be_rounded_either_way():
    predicted = {("layer", "out_features"): 9 * 0.5}        # 4.5 channels
    shrunk = dict(a__out_features=4, a__rank=4, bn__in_features=4, bn__out_features=4, bn__rank=4, b__in_features=4)
    assert problems(after(**shrunk), predicted) == []
    grown = dict(a__out_features=5, a__rank=5, bn__in_features=5, bn__out_features=5, bn__rank=5, b__in_features=5)
    assert problems(after(**grown), predicted) == []
    wrong = dict(a__out_features=3, a__rank=3, bn__in_features=3, bn__out_features=3, bn__rank=3, b__in_features=3)
    assert problems(after(**wrong), predicted)[0] == "layer.out_features is 3, the effect says 4.5"


def test_consumers_follow_the_measured_channels_exactly():
    predicted = {("layer", "out_features"): 4.5}
    state = after(a__out_features=4, a__rank=4, bn__in_features=4, bn__out_features=4, bn__rank=4, b__in_features=5)
    assert problems(state, predicted) == [
        "layer `b`.in_features is 5, as a consumer of `a`'s channels (9 -> 4) it should be 4"]


def test_a_field_no_effect_names_must_not_change():
    assert problems(after(b__bits=8), {}) == ["layer `b`.bits is 8, but no effect names it, so it should stay 32"]
    assert problems(after(model__trainable=False), {}) == [
        "model.trainable is false, but no effect names it, so it should stay true"]


def test_density_tolerance_is_half_a_weight_per_row():
    predicted = {("layer", "density"): 0.5}
    assert problems(after(a__density=0.5 + 4.5 / 72), predicted) == []       # 9 rows: 4.5 weights
    assert problems(after(a__density=0.5 + 5.5 / 72), predicted) != []


def test_an_upper_bound_admits_anything_from_one_to_the_bound():
    predicted = {("layer", "rank"): 8 * 0.5}
    assert problems(after(a__rank=2), predicted, upper=frozenset({"rank"})) == []
    assert problems(after(a__rank=2), predicted) == ["layer.rank is 2, the effect says 4"]
    assert problems(after(a__rank=5), predicted, upper=frozenset({"rank"})) != []


def test_a_bound_on_foldable_admits_a_layer_that_stays_foldable_never_one_that_stops():
    """lowrank's `foldable` is false wherever the layer may become two Linears; one that
    stays one Linear may stay foldable. The other way round would be unsound."""
    assert problems(after(a__foldable=True), {("layer", "foldable"): False}, upper=frozenset({"foldable"})) == []
    assert problems(after(a__foldable=True), {("layer", "foldable"): False}) == \
        ["layer.foldable is true, the effect says false"]
    assert problems(after(), {("layer", "foldable"): True}, upper=frozenset({"foldable"})) == \
        ["layer.foldable is false, the effect says true"]
