"""runtime/fusion: sibling int8 Linears reading one input run as one GEMM, with results
bit-identical to running each alone, and nothing saved or measured changing."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
import torch.nn as nn

from kmr_dsl.rules import quantize
from kmr_dsl.runtime import artifact, fusion
from kmr_dsl.runtime import layers as kl
from kmr_dsl.runtime import int8_kernels as k8

import hf_models  # noqa: E402  (tests/runtime is on the path: conftest)


def _int8(model):
    quantize.apply(model, kl.select_layers(model, ("Linear",)), bits=8)
    return model


class Attention(nn.Module):
    """Self-attention's projections as BERT names them, each called on one tensor."""

    def __init__(self, width=24, out=(24, 24, 16), bias=True, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.query, self.key, self.value = (nn.Linear(width, o, bias=bias) for o in out)

    def forward(self, x, other=None):
        other = x if other is None else other
        return self.query(x), self.key(other), self.value(other)


def _alone(model, *args):
    """The same forward with every Linear run alone (the group unlinked, then restored)."""
    saved = {m: m.siblings for m in model.modules() if isinstance(m, k8.DynamicLinear)}
    fusion.uninstall(model)
    try:
        with torch.no_grad():
            return model(*args)
    finally:
        for m, group in saved.items():
            m.siblings = group


def _equal(a, b):
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_columns_are_bit_identical_to_each_linear_alone(symmetric, bias):
    model = Attention(bias=bias)
    quantize.apply(model, kl.select_layers(model, ("Linear",)), bits=8, symmetric=symmetric)
    assert fusion.install(model) == 3
    group, = fusion.groups(model)
    x = torch.randn(2, 5, 24) * 3
    with torch.no_grad():
        fused = model(x)
    assert group.fused is not None         # the one GEMM ran
    assert _equal(fused, _alone(model, x))
    assert [t.shape[-1] for t in fused] == [24, 24, 16]


def test_wider_codes_keep_their_activation_range_and_stay_identical():
    """Codes beyond KERNEL_QMAX run on 7-bit activations (reduce_range); the group does too."""
    model = Attention()
    for lin in (model.query, model.key, model.value):
        w = lin.weight.detach()
        scale = w.abs().amax(1) / 127
        q = torch.round(w / scale[:, None]).to(torch.int8)
        kl.set_module(model, next(n for n, m in model.named_children() if m is lin),
                      k8.dynamic_linear(q, scale, lin.bias))
    assert not model.query.full_range
    assert fusion.install(model) == 3
    x = torch.randn(7, 24)
    with torch.no_grad():
        assert _equal(model(x), _alone(model, x))


def test_only_siblings_of_one_format_are_linked():
    model = Attention(out=(24, 24, 24))
    quantize.apply(model, [("query", model.query), ("key", model.key)], bits=8)
    quantize.apply(model, [("value", model.value)], bits=8, symmetric=False)
    assert fusion.install(model) == 2       # value's asymmetric grid is another format
    assert model.value.siblings is None
    x = torch.randn(3, 24)
    with torch.no_grad():
        assert _equal(model(x), _alone(model, x))
    other = Attention(bias=False)
    _int8(other)
    other.key = k8.dynamic_linear(*k8.dynamic_parts(other.key)[:2], torch.zeros(24))    # a bias: another format
    assert fusion.install(other) == 2


def test_a_tiny_bert_artifact_loads_fused_and_saves_the_same_bytes(tmp_path):
    model = _int8(hf_models.make_bert_classifier())
    first = tmp_path / "a.safetensors"
    artifact.save(model, first)
    loaded = artifact.load(first, base=hf_models.make_bert_classifier(seed=1))
    groups = fusion.groups(loaded)
    assert [len(g.members) for g in groups] == [3]       # one layer: its query, key, value
    ids = torch.randint(1, 64, (3, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = loaded(input_ids=ids).logits
        reference = model(input_ids=ids).logits
    assert groups[0].fused is not None and groups[0].misses == 0
    assert torch.equal(out, reference)
    second = tmp_path / "b.safetensors"
    artifact.save(loaded, second)
    assert first.read_bytes() == second.read_bytes()
    assert set(loaded.state_dict()) == set(model.state_dict())


def test_a_tiny_llama_fuses_qkv_and_gate_up():
    model = _int8(hf_models.make_llama(tied=False))
    assert fusion.install(model) == 2 * (3 + 2)
    ids = torch.randint(1, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(input_ids=ids).logits
    assert all(g.fused is not None and g.misses == 0 for g in fusion.groups(model))
    assert torch.equal(out, _alone(model, ids).logits)


def test_an_input_changed_in_place_between_siblings_is_computed_again():
    model = _int8(Attention(out=(24, 24, 24)))
    fusion.install(model)
    x = torch.randn(4, 24)
    with torch.no_grad():
        q = model.query(x)
        x.mul_(2)
        k = model.key(x)
        v = model.value(x)
        fusion.uninstall(model)
        assert torch.equal(k, model.key(x)) and torch.equal(v, model.value(x))
        assert not torch.equal(k, model.key(x / 2))
        assert torch.equal(q, model.query(x / 2))


def test_siblings_on_different_inputs_stay_right_and_stop_fusing():
    """Cross-attention: key and value read other states than query."""
    model = _int8(Attention())
    fusion.install(model)
    group, = fusion.groups(model)
    x, other = torch.randn(3, 24), torch.randn(5, 24)
    for _ in range(fusion.MISS_LIMIT + 2):
        with torch.no_grad():
            assert _equal(model(x, other), _alone(model, x, other))
    assert group.misses == fusion.MISS_LIMIT


def test_replaced_weights_are_used_at_once():
    model = _int8(Attention())
    fusion.install(model)
    x = torch.randn(3, 24)
    with torch.no_grad():
        model(x)
        q, scale, bias = k8.dynamic_parts(model.key)
        k8.set_dynamic(model.key, -q, scale, bias)
        assert _equal(model(x), _alone(model, x))


def test_inference_mode_threads_and_copies_give_the_same_results():
    model = _int8(Attention(out=(24, 24, 24)))
    fusion.install(model)
    x, y = torch.randn(3, 24), torch.randn(3, 24)
    expected = _alone(model, x)
    with torch.inference_mode():
        assert _equal(model(x), expected)
    # another thread's call between two siblings sees its own input only
    with torch.no_grad():
        q = model.query(x)
        seen = {}
        worker = threading.Thread(target=lambda: seen.update(k=model.key(y)))
        worker.start()
        worker.join()
        k, v = model.key(x), model.value(x)
    assert _equal((q, k, v), expected)
    assert torch.equal(seen["k"], _alone(model, y)[1])
    twin = copy.deepcopy(model)
    group, = fusion.groups(twin)
    assert set(group.members) == {twin.query, twin.key, twin.value}
    with torch.no_grad():
        assert _equal(twin(x), expected)


def _linked_while_timed(model):
    """The sibling groups installed on `model` at each of its forwards."""
    seen = []
    handle = model.register_forward_pre_hook(lambda mod, args: seen.append(fusion.groups(mod)))
    return seen, handle


def test_the_latency_meter_times_the_fused_form_and_leaves_the_model_as_it_was(tmp_path):
    from kmr_dsl.runtime import meters
    from kmr_dsl.runtime.data import Dataset

    baseline = hf_models.make_llama(tied=False)
    model = _int8(copy.deepcopy(baseline))
    ids = torch.randint(1, 64, (6, 8), generator=torch.Generator().manual_seed(0))
    data = Dataset(ids, None, "sample")
    fidelity = meters.fidelity(model, baseline, data)
    artifact.save(model, tmp_path / "before.safetensors")
    seen, handle = _linked_while_timed(model)
    try:
        meters.latency_paired(model, baseline, batch=2, input_shape=(1, 8), input_dtype="int64", repeats=2, warmup=1)
    finally:
        handle.remove()
    # every timed forward ran with each layer's q/k/v and gate/up linked, and fused
    assert len(seen) == 3 and all(len(groups) == 2 * 2 for groups in seen)
    assert all(g.fused is not None and g.misses == 0 for g in seen[-1])
    # afterwards: unlinked again, nothing saved changed, the output meters read the same
    assert fusion.groups(model) == []
    artifact.save(model, tmp_path / "after.safetensors")
    assert (tmp_path / "before.safetensors").read_bytes() == (tmp_path / "after.safetensors").read_bytes()
    assert meters.fidelity(model, baseline, data) == fidelity
    # a model that is not eligible (float) is timed as it is
    seen, handle = _linked_while_timed(baseline)
    try:
        meters.latency(baseline, batch=1, input_shape=(1, 8), input_dtype="int64", repeats=1, warmup=0)
    finally:
        handle.remove()
    assert seen == [[]]


def test_a_loaded_artifact_keeps_its_links_through_the_latency_meter(tmp_path):
    from kmr_dsl.runtime import meters

    model = _int8(hf_models.make_bert_classifier())
    artifact.save(model, tmp_path / "a.safetensors")
    loaded = artifact.load(tmp_path / "a.safetensors", base=hf_models.make_bert_classifier(seed=1))
    groups = fusion.groups(loaded)
    meters.latency(loaded, batch=1, input_shape=(1, 10), input_dtype="int64", repeats=1, warmup=0)
    assert fusion.groups(loaded) == groups and len(groups) == 1
