"""Weight profiles (kmr_dsl.runtime.profile) against the real rules: the error a profile
predicts for a compression is the error the rule's output really has."""

import copy

import pytest
import torch

from kmr_dsl.rules import lowrank, prune, quantize
from kmr_dsl.runtime import layers as kl
from kmr_dsl.runtime.profile import weight_profile
from kmr_dsl.search.prior import QualityPrior


def rel_error(before: torch.Tensor, after: torch.Tensor) -> float:
    before, after = before.double(), after.double()
    return float(((after - before) ** 2).sum() / (before ** 2).sum())


def weight_of(model, name: str) -> torch.Tensor:
    (leaf_name, leaf), = kl.leaves(name, kl.get_module(model, name))
    return kl.leaf_weight(leaf).reshape(leaf.weight.shape[0] if hasattr(leaf, "weight") else -1, -1)


def names(model, kinds=("Linear",)):
    return [n for n, _ in kl.select_layers(model, kinds)]


@pytest.mark.parametrize("amount", [0.1, 0.5, 0.9])
def test_pruned_is_the_energy_magnitude_pruning_removes(mlp, amount):
    profiles = weight_profile(mlp, names(mlp))
    model = copy.deepcopy(mlp)
    pruned = prune.apply(model, kl.select_layers(model, ("Linear",)), amount=amount)
    for name, prof in profiles.items():
        want = rel_error(weight_of(mlp, name), weight_of(pruned, name))
        assert prof.pruned(amount) == pytest.approx(want, rel=0.02, abs=1e-4), name
    assert all(p.pruned(0.0) == 0.0 and p.pruned(1.0) == pytest.approx(1.0) for p in profiles.values())


@pytest.mark.parametrize("bits", [2, 4, 8, 16])
def test_quantized_is_the_round_trip_error_of_the_quantize_rule(mlp, bits):
    profiles = weight_profile(mlp, names(mlp))
    model = copy.deepcopy(mlp)
    model = quantize.apply(model, kl.select_layers(model, ("Linear",)), bits=bits,
                           scheme="weight_only" if bits == 8 else "dynamic")
    for name, prof in profiles.items():
        want = rel_error(weight_of(mlp, name), kl.leaf_weight(kl.get_module(model, name)).reshape(
            weight_of(mlp, name).shape))
        assert prof.quantized(bits) == pytest.approx(want, rel=1e-6, abs=1e-12), name
    assert all(p.quantized(32) == 0.0 for p in profiles.values())
    # fewer bits, more error
    prof = next(iter(profiles.values()))
    assert prof.quantized(2) > prof.quantized(4) > prof.quantized(8) > prof.quantized(16) > 0


def test_channels_is_the_energy_of_the_weakest_rows_channel_pruning_removes(cnn):
    profiles = weight_profile(cnn, names(cnn, ("Conv2d",)))
    model = copy.deepcopy(cnn)
    model = prune.apply(model, kl.select_layers(model, ("Conv2d",))[:1], amount=0.5, method="channel")
    before = cnn[0].weight.detach().reshape(8, -1).double()
    kept = model[0].weight.detach().reshape(4, -1).double()
    want = 1.0 - float((kept ** 2).sum() / (before ** 2).sum())
    assert profiles["0"].channels(0.5) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_truncated_is_the_error_of_the_low_rank_factorization(mlp, ratio):
    name = names(mlp)[1]
    profiles = weight_profile(mlp, [name])
    model = copy.deepcopy(mlp)
    model = lowrank.apply(model, [(name, kl.get_module(model, name))], ratio=ratio)
    rank = min(mlp[2].weight.shape)
    k = max(1, round(ratio * rank))
    want = rel_error(mlp[2].weight.detach(), lowrank.effective_weight(kl.get_module(model, name)))
    assert profiles[name].truncated(k) == pytest.approx(want, rel=1e-6)
    assert profiles[name].truncated(rank) == 0.0


def test_the_prior_sums_layer_errors_and_ignores_what_did_not_change(mlp):
    layers = names(mlp)
    profiles = weight_profile(mlp, layers)
    initial = {n: {"density": 1.0, "bits": 32.0, "rank": 16.0, "in_features": 16.0, "out_features": 32.0}
               for n in layers}
    prior = QualityPrior(profiles, initial)
    assert prior.distortion(initial) == 0.0
    half = {n: dict(st, density=0.5) for n, st in initial.items()}
    assert prior.distortion(half) == pytest.approx(sum(p.pruned(0.5) for p in profiles.values()))
    four = {n: dict(st, bits=4.0) for n, st in half.items()}
    # only the weights pruning kept are rounded
    assert prior.distortion(four) == pytest.approx(
        sum(p.pruned(0.5) + 0.5 * p.quantized(4) for p in profiles.values()))
    # a layer stored in half precision from the start loses nothing at 16 bits
    halfprec = QualityPrior(profiles, {n: dict(st, bits=16.0) for n, st in initial.items()})
    assert halfprec.distortion({n: dict(st, bits=16.0) for n, st in initial.items()}) == 0.0
