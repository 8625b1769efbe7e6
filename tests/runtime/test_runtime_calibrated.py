"""SmoothQuant, AWQ and QAT: the function kept, the error lowered, the format real."""

import pytest
import torch
import torch.nn as nn

from kmr_dsl.diagnostics import KmrError
from kmr_dsl.rules import awq, prune, qat, quantize, smoothquant
from kmr_dsl.runtime import context, state
from kmr_dsl.runtime import layers as kl
from kmr_dsl.runtime import int8_kernels as k8
from kmr_dsl.runtime import modules as km
from kmr_dsl.runtime.data import Dataset

WIDTH = 32


class PreNorm(nn.Module):
    """A pre-norm block: the norm's output is read by q and k only; the residual reads x."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.norm = nn.LayerNorm(WIDTH)
        self.q, self.k = nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH)
        self.norm2 = nn.LayerNorm(WIDTH)
        self.up = nn.Linear(WIDTH, 64)
        self.down = nn.Linear(64, 5)
        with torch.no_grad():        # outlier channels, as trained transformers have
            self.norm.weight[:3] = 25.0
            self.norm2.weight[:2] = 15.0

    def forward(self, x):
        h = self.norm(x)
        x = x + self.q(h) * torch.sigmoid(self.k(h))
        return self.down(torch.relu(self.up(self.norm2(x))))


class PostNorm(PreNorm):
    def forward(self, x):
        h = self.norm(x)
        return self.down(torch.relu(self.up(h + self.q(h))))     # the residual reads h too


class PreNormDropout(PreNorm):
    """Dropout (identity in eval mode) and a shape read between the norm and its readers."""

    def __init__(self, seed=0):
        super().__init__(seed)
        self.drop = nn.Dropout(0.1)

    def forward(self, x):
        h = self.drop(self.norm(x))
        assert h.shape[-1] == WIDTH
        x = x + self.q(h) * torch.sigmoid(self.k(h))
        return self.down(torch.relu(self.up(self.norm2(x))))


def data(n=256, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, WIDTH, generator=gen)
    return Dataset(x, torch.randint(0, 5, (n,), generator=gen), "calib")


def linears(model, names=("q", "k", "up")):
    return [(n, getattr(model, n)) for n in names]


def out_error(model, reference, x):
    with torch.no_grad():
        return float(((model(x) - reference(x)) ** 2).mean())


def test_smoothquant_keeps_the_function_and_flattens_activations():
    d = data()
    model, reference = PreNorm(), PreNorm()
    with torch.no_grad():
        before = model.norm(d.inputs).abs().amax(dim=0)
    smoothquant.apply(model, linears(model), alpha=0.5, calibration=d)
    with torch.no_grad():
        assert torch.allclose(model(d.inputs), reference(d.inputs), atol=1e-4, rtol=1e-4)
        after = model.norm(d.inputs).abs().amax(dim=0)
    assert after.max() / after.median() < 0.5 * before.max() / before.median()
    assert state.measure_state(model) == state.measure_state(reference)


def test_smoothquant_then_static_int8_beats_static_int8_alone():
    d = data()
    reference = PreNorm()
    errors = {}
    for smooth in (False, True):
        model = PreNorm()
        if smooth:
            smoothquant.apply(model, linears(model), alpha=0.5, calibration=d)
        quantize.apply(model, linears(model), bits=8, scheme="static", calibration=d)
        errors[smooth] = out_error(model, reference, d.inputs)
    assert errors[True] < errors[False]


def test_a_partial_fold_group_is_still_refused():
    model = PreNorm()
    with pytest.raises(KmrError, match="`q` reads the output of `norm`, which `k` also read"):
        smoothquant.apply(model, linears(model, ("q",)), calibration=data())


POST = ("q", "up", "down")          # PostNorm: q reads the norm with the residual, up and down no norm


def test_smoothquant_where_nothing_folds_keeps_an_explicit_vector_and_the_function():
    d = data()
    model, reference = PostNorm(), PostNorm()
    smoothquant.apply(model, linears(model, POST), alpha=0.5, calibration=d)
    with torch.no_grad():
        torch.testing.assert_close(model(d.inputs), reference(d.inputs), atol=1e-4, rtol=1e-4)
    assert torch.equal(model.norm.weight, reference.norm.weight)        # nothing folded into the norm
    measured, before = state.measure_state(model)["layers"], state.measure_state(reference)["layers"]
    for name in POST:
        layer = getattr(model, name)
        assert isinstance(layer, km.ScaledLinear) and isinstance(layer.linear, nn.Linear)
        assert measured[name] == {**before[name], "input_scale": True}
        # the reference formula (SmoothQuant's smooth_ln_fcs): s = max|x|^a / max|w|^(1-a);
        # the layer divides its input by s, its weight's columns were multiplied by s
        with torch.no_grad():
            x = _input_of(reference, getattr(reference, name), d.inputs[:128])     # `samples` = 128
        s = x.abs().amax(dim=0).clamp(min=1e-12) ** 0.5 / \
            getattr(reference, name).weight.abs().amax(dim=0).clamp(min=1e-12) ** 0.5
        torch.testing.assert_close(layer.input_scale, 1 / s, rtol=1e-5, atol=0)
        torch.testing.assert_close(layer.linear.weight, getattr(reference, name).weight * s[None, :])
    # the activations the weights see are flatter: what a static quantizer's one range needs
    with torch.no_grad():
        flat = _input_of(model, model.q.linear, d.inputs).abs().amax(dim=0)
        raw = _input_of(reference, reference.q, d.inputs).abs().amax(dim=0)
    assert flat.max() / flat.median() < 0.5 * raw.max() / raw.median()


def _input_of(root, module, x):
    """The rows of `module`'s input in one forward of `root` on `x`."""
    seen = []
    handle = module.register_forward_hook(lambda m, a, o: seen.append(a[0]))
    try:
        root(x)
    finally:
        handle.remove()
    return seen[0].reshape(-1, seen[0].shape[-1])


def test_smoothquant_then_static_int8_where_nothing_folds_beats_static_int8_alone():
    # a Linear reading the model's input (no norm before it) with three outlier channels
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(256, WIDTH, generator=gen)
    x[:, :3] *= 30
    d = Dataset(x, torch.zeros(256, dtype=torch.long), "calib")

    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(WIDTH, 16))
    reference = make()
    errors = {}
    for smooth in (False, True):
        model = make()
        if smooth:
            smoothquant.apply(model, [("0", model[0])], alpha=0.5, calibration=d)
            assert isinstance(model[0], km.ScaledLinear)
        quantize.apply(model, [("0", model[0])], bits=8, scheme="static", calibration=d)
        # the int8 kernel stays real inside: the vector is a float op before it
        assert isinstance(model[0].linear if smooth else model[0], k8.StaticLinear)
        errors[smooth] = out_error(model, reference, x)
    assert errors[True] < 0.9 * errors[False]


def test_awq_where_nothing_folds_beats_round_to_nearest_with_an_explicit_vector():
    d = data()
    reference = PostNorm()
    errors = {}
    for name in ("rtn", "awq"):
        model = PostNorm()
        if name == "awq":
            awq.apply(model, linears(model, POST), bits=4, group_size=8, calibration=d)
            assert all(isinstance(getattr(model, n), km.ScaledLinear) for n in POST)
            assert all(isinstance(getattr(model, n).linear, km.QuantLinear) for n in POST)
            assert all(getattr(model, n).linear.group_size == 8 for n in POST)
        else:
            quantize.apply(model, linears(model, POST), bits=4, scheme="weight_only", group_size=8)
        errors[name] = out_error(model, reference, d.inputs)
    assert errors["awq"] < errors["rtn"]


def test_an_explicit_vector_round_trips_through_the_artifact_and_its_size_is_counted(tmp_path):
    from kmr_dsl.runtime import artifact
    d = data()
    model = PostNorm()
    awq.apply(model, linears(model, POST), bits=4, group_size=8, calibration=d)
    plain = PostNorm()
    quantize.apply(plain, linears(plain, POST), bits=4, scheme="weight_only", group_size=8)
    path = tmp_path / "m.safetensors"
    written = artifact.save(model, path, {"base": None})
    loaded = artifact.load(path, base=PostNorm())
    with torch.no_grad():
        assert torch.equal(loaded(d.inputs), model(d.inputs))
    assert isinstance(loaded.q, km.ScaledLinear) and torch.equal(loaded.q.input_scale, model.q.input_scale)
    # each vector: in_features fp32 values more than the same layers without it (plus names)
    vectors = sum(4 * getattr(model, n).in_features for n in POST)
    assert written - artifact.nbytes(plain, {"base": None}) >= vectors


def test_awq_beats_round_to_nearest_and_stores_the_quantize_format():
    d = data()
    reference = PreNorm()
    errors = {}
    for name in ("rtn", "awq"):
        model = PreNorm()
        if name == "awq":
            awq.apply(model, linears(model), bits=4, group_size=8, calibration=d)
        else:
            quantize.apply(model, linears(model), bits=4, scheme="weight_only", group_size=8)
        errors[name] = out_error(model, reference, d.inputs)
        assert all(isinstance(getattr(model, n), km.QuantLinear) and getattr(model, n).group_size == 8
                   for n in ("q", "k", "up"))
    assert errors["awq"] < errors["rtn"]


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(WIDTH, 48), nn.ReLU(), nn.Linear(48, 5))


def labelled(n=512):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(n, WIDTH, generator=gen)
    y = (x[:, :5] @ torch.randn(5, 5, generator=gen)).argmax(1)
    return Dataset(x, y, "train")


def accuracy(model, d):
    with torch.no_grad():
        return float((model(d.inputs).argmax(1) == d.targets).float().mean())


def test_qat_trains_on_the_stored_grid_keeps_masks_and_ends_integer():
    from kmr_dsl.rules import finetune
    d = labelled()
    with context.use(context.RunContext(seed=0)):
        base = mlp()
        finetune.apply(base, [], data=d, epochs=5, lr=0.01)
        ptq, trained = mlp(), mlp()
        ptq.load_state_dict(base.state_dict())
        trained.load_state_dict(base.state_dict())
        prune.apply(ptq, kl.select_layers(ptq, ("Linear",)), amount=0.5)
        prune.apply(trained, kl.select_layers(trained, ("Linear",)), amount=0.5)
        zeros = trained[0].weight == 0
        quantize.apply(ptq, kl.select_layers(ptq, ("Linear",)), bits=2)
        qat.apply(trained, kl.select_layers(trained, ("Linear",)), bits=2, data=d, epochs=5, lr=0.01)
    assert isinstance(trained[0], km.QuantLinear) and trained[0].bits == 2
    assert torch.equal(trained[0].int_weight() == 0, zeros)
    st = state.measure_state(trained)
    assert st["layers"]["0"]["density"] == pytest.approx(0.5) and not st["trainable"]
    assert accuracy(trained, d) > accuracy(ptq, d)


def test_qat_needs_a_trainable_model():
    model = mlp()
    quantize.apply(model, [("2", model[2])], bits=8)
    with pytest.raises(KmrError, match="trainable"):
        qat.apply(model, [("0", model[0])], bits=4, data=labelled())


def test_folding_sees_through_eval_dropout_and_shape_reads():
    d = data()
    model, reference = PreNormDropout(), PreNormDropout()
    model.eval(), reference.eval()
    smoothquant.apply(model, linears(model), calibration=d)
    with torch.no_grad():
        assert torch.allclose(model(d.inputs), reference(d.inputs), atol=1e-4, rtol=1e-4)
