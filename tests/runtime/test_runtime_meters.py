"""Meters measured on real models equal the analytic expectation from the state;
the artifact's size equals the byte layout of kmr_dsl.artifact_layout."""

import copy
import json
import struct

import pytest
import torch

from runtime_helpers import spec
from kmr_dsl import artifact_layout as layout
from kmr_dsl.rules import lora, lowrank, prune, quantize
from kmr_dsl.runtime import artifact, codec, context, introspect, layers as kl, loaders, meters, state
from kmr_dsl.runtime.data import Dataset

SIZES = (64, 128, 64, 10)     # the digits MLP's shape: 70 KB in fp32


def big_mlp():
    return loaders.load_model(spec(sizes=list(SIZES)))


def pipeline(name, model, data=None):
    sel = lambda: kl.select_layers(model, ("Linear",))  # noqa: E731
    if name == "prune50-q8":
        prune.apply(model, sel(), amount=0.5)
        quantize.apply(model, sel(), bits=8)
    elif name == "prune90":
        prune.apply(model, sel(), amount=0.9)
    elif name == "nm-q16":
        prune.apply(model, sel(), amount=0.0, method="nm")
        quantize.apply(model, sel(), bits=16)
    elif name == "q4":
        quantize.apply(model, sel(), bits=4)
    elif name == "p80-q2":
        prune.apply(model, sel(), amount=0.8)
        quantize.apply(model, sel(), bits=2, scheme="weight_only")
    elif name == "lowrank-q8":
        lowrank.apply(model, sel(), ratio=0.25)
        quantize.apply(model, sel(), bits=8)
    elif name == "channel-q8w":
        prune.apply(model, [s for s in sel() if s[0] != "4"], amount=0.5, method="channel")
        quantize.apply(model, sel(), bits=8, scheme="weight_only")
    elif name == "lora-unmerged":
        with context.use(context.RunContext(seed=0)):
            lora.apply(model, sel(), data=data, rank=4, epochs=1, merge=False)
    return model


PIPELINES = ["none", "prune50-q8", "prune90", "nm-q16", "q4", "p80-q2", "lowrank-q8", "channel-q8w", "lora-unmerged"]


@pytest.fixture
def digits_like():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(80, 64, generator=gen)
    return Dataset(x, (x[:, :10].argmax(1)), "digits-like")


def predicted(st: dict, model) -> dict:
    """params, nonzero, macs and the data bytes of the artifact, from the state only
    (what the verifier's cost model computes), for MLPs of Linear layers."""
    params = nonzero = macs = data = 0
    # the writer weighs each weight's forms with its entries' offsets at these digits
    digits = layout.offset_digits(sum(codec.data_bound(n, layer) for n, layer in kl.logical_layers(model)))
    for name, L in st["layers"].items():
        i, o, b, r, d = L["in_features"], L["out_features"], L["bits"], L["rank"], L["density"]
        factorized = r * (i + o) < i * o and isinstance(kl.get_module(model, name), __import__(
            "kmr_dsl.runtime.modules", fromlist=["x"]).FactorizedLinear)
        shapes = [(r, i), (o, r)] if factorized else [(o, i)]
        bias_bytes = o * (2 if b == 16 else 4)
        for (rows, cols), weight in zip(shapes, [f"{name}.first.weight", f"{name}.second.weight"]
                                        if factorized else [f"{name}.weight"]):
            numel = rows * cols
            nnz = round(d * sum(a * c for a, c in shapes)) if len(shapes) == 1 else None
            if nnz is None:   # factorized: density is per layer; measure per factor
                nnz = numel if d == 1 else None
            assert nnz is not None
            sparse = layout.is_sparse(weight, (rows, cols), b, nnz, digits, "BF16" if b == 16 else "F32")
            data += layout.sparse_bytes(numel, rows, b, nnz) if sparse else layout.dense_bytes(numel, rows, b)
            params += numel
            nonzero += nnz
            macs += numel
        data += bias_bytes
        params, nonzero = params + o, nonzero + o
        a = L["adapter_rank"]
        if a:
            params, nonzero, macs = params + a * (i + o), nonzero + a * (i + o), macs + a * (i + o)
            data += 4 * a * (i + o)
    return {"params": params, "nonzero": nonzero, "macs": macs, "data": data}


@pytest.mark.parametrize("name", PIPELINES)
def test_meters_match_analytic_prediction(name, digits_like, tmp_path):
    model = pipeline(name, big_mlp(), digits_like)
    st = state.measure_state(model)
    want = predicted(st, model)
    assert meters.params(model) == want["params"]
    assert meters.nonzero(model) == want["nonzero"]
    assert meters.macs(model, (1, 64)) == want["macs"]
    path = tmp_path / "m.safetensors"
    size = artifact.save(model, path, {"base": spec(sizes=list(SIZES))})
    header = 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]
    assert size == path.stat().st_size == want["data"] + header
    assert meters.size(model, {"base": spec(sizes=list(SIZES))}) == size


@pytest.mark.parametrize("bits", [32, 8, 4])
def test_recipe_config_estimate_per_kind(cnn, bits, tmp_path):
    # convolutions and norms have longer recipe configs than a Linear's: the estimate
    # per kind is within 25 characters of each layer's real entry
    if bits < 32:
        quantize.apply(cnn, kl.select_layers(cnn, ("Conv2d", "Linear")), bits=bits, scheme="weight_only")
    path = tmp_path / "m.safetensors"
    artifact.save(cnn, path, {"base": spec("make_cnn"), "pipeline": "p", "knobs": {}})
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    recipe = json.loads(json.loads(raw[8:8 + n])["__metadata__"]["kmr_recipe"])
    facts = {f.name: f.kind for f in introspect.model_facts_from_module(cnn, (1, 3, 8, 8)).layers}
    assert {"Conv2d", "BatchNorm2d", "Linear"} <= set(facts.values())
    for name, config in recipe["layers"].items():
        real = layout.escaped_json_chars({name: config}) - 2          # without the braces
        assert abs(len(name) + 4 + layout.config_chars(facts[name]) - real) <= 25, (name, real)


@pytest.mark.parametrize("name", PIPELINES)
def test_header_estimate_within_two_percent(name, digits_like, tmp_path):
    model = pipeline(name, big_mlp(), digits_like)
    path = tmp_path / "m.safetensors"
    size = artifact.save(model, path, {"base": spec(sizes=list(SIZES)), "pipeline": "compress",
                                       "knobs": {"sparsity": 0.5, "bits": 8}})
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    recipe = json.loads(header.pop("__metadata__")["kmr_recipe"])
    entries = [(k, len(v["shape"])) for k, v in header.items()]
    factorized = [k for k, v in recipe["layers"].items() if v["type"] == "FactorizedLinear"]
    estimate = layout.header_bytes_estimate(entries, list(recipe["layers"]), size - 8 - n, factorized=factorized)
    if size >= 20_000:
        assert abs(estimate - (8 + n)) <= 0.02 * size
    assert abs(estimate - (8 + n)) <= 200


def test_int8_artifact_is_about_a_quarter(tmp_path):
    model = big_mlp()
    fp32 = artifact.save(model, tmp_path / "a.safetensors", {"base": spec(sizes=list(SIZES))})
    quantize.apply(model, kl.select_layers(model), bits=8)
    int8 = artifact.save(model, tmp_path / "b.safetensors", {"base": spec(sizes=list(SIZES))})
    assert 0.25 < int8 / fp32 < 0.30


def test_trainable_params(mlp, data):
    total = sum(p.numel() for p in mlp.parameters())
    assert meters.trainable_params(mlp) == total
    quantize.apply(mlp, [("0", mlp[0])], bits=8)
    assert meters.trainable_params(mlp) == 0 and not state.is_trainable(mlp)


def test_cnn_macs_match_facts(cnn, cnn_spec):
    facts = introspect.model_facts(cnn_spec)
    assert meters.macs(cnn, facts.input_shape) == facts.total_macs == sum(l.macs for l in facts.layers)
    quantize.apply(cnn, kl.select_layers(cnn, ("Conv2d", "Linear")), bits=8)
    assert meters.macs(cnn, facts.input_shape) == facts.total_macs


def test_accuracy_loss_fidelity(mlp, data):
    with torch.no_grad():
        out = mlp(data.inputs)
    assert meters.accuracy(mlp, data) == pytest.approx(float((out.argmax(1) == data.targets).float().mean()))
    assert meters.loss(mlp, data) == pytest.approx(float(torch.nn.functional.cross_entropy(out, data.targets)), rel=1e-5)
    assert meters.fidelity(mlp, copy.deepcopy(mlp), data) == 1.0
    other = copy.deepcopy(mlp)
    prune.apply(other, kl.select_layers(other), amount=0.9)
    agree = float((other(data.inputs).argmax(1) == out.argmax(1)).float().mean())
    assert meters.fidelity(other, mlp, data) == pytest.approx(agree)
    unlabelled = Dataset(data.inputs, None, "u")
    assert meters.fidelity(mlp, copy.deepcopy(mlp), unlabelled) == pytest.approx(1.0)
    assert meters.fidelity(other, mlp, unlabelled) < 1.0


def test_meter_errors(mlp, data):
    from kmr_dsl.diagnostics import KmrError
    with pytest.raises(KmrError) as e:
        meters.accuracy(mlp, Dataset(data.inputs, None, "u"))
    assert e.value.diagnostic.code == "KMR408"
    with pytest.raises(KmrError) as e:
        meters.accuracy(mlp, Dataset(torch.zeros(4, 7), torch.zeros(4, dtype=torch.long), "narrow"))
    assert e.value.diagnostic.code == "KMR404"


def test_latency_fixes_and_restores_threads(mlp):
    before = torch.get_num_threads()
    seconds = meters.latency(mlp, batch=4, input_shape=(1, 16), repeats=5, warmup=1, threads=1)
    assert 0 < seconds < 1 and torch.get_num_threads() == before
