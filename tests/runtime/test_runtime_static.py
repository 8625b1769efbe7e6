"""Static W8A8: calibrated activation ranges, torch's int8 kernels, exact artifacts."""

import pytest
import torch
import torch.nn as nn

from kmr_dsl.diagnostics import KmrError
from kmr_dsl.rules import prune, quantize
from kmr_dsl.runtime import artifact, meters, state
from kmr_dsl.runtime import layers as kl
from kmr_dsl.runtime import int8_kernels as k8
from kmr_dsl.runtime import modules as km
from kmr_dsl.runtime.data import Dataset


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2)
        self.fc = nn.Linear(8 * 3 * 3, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv(x))))
        return self.head(torch.relu(self.fc(x.flatten(1))))


def images(n=64, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return Dataset(torch.randn(n, 3, 8, 8, generator=gen), torch.randint(0, 4, (n,), generator=gen), "images")


def static(model, data, **kw):
    return quantize.apply(model, kl.select_layers(model, ("Linear", "Conv2d")), bits=8, scheme="static",
                          calibration=data, **kw)


def test_static_runs_torch_int8_kernels_and_stays_close():
    data = images()
    reference = Net()
    model = static(Net(), data)
    import torch.ao.nn.quantized as nnq
    for name in ("conv", "conv2", "fc", "head"):
        layer = getattr(model, name)
        assert isinstance(layer, k8.StaticInt8) and isinstance(layer.kernel, (nnq.Linear, nnq.Conv2d))
    with torch.no_grad():
        want, got = reference(data.inputs), model(data.inputs)
    cos = nn.functional.cosine_similarity(want.flatten(), got.flatten(), dim=0)
    assert cos > 0.99
    st = state.measure_state(model)
    assert all(layer["bits"] == 8 for layer in st["layers"].values()) and not st["trainable"]


def test_static_artifact_roundtrip_is_exact(tmp_path):
    data = images()
    model = Net()
    prune.apply(model, [("fc", model.fc)], amount=0.5)
    static(model, data)
    path = tmp_path / "m.safetensors"
    artifact.save(model, path, {"base": None})
    loaded = artifact.load(path, base=Net())
    with torch.no_grad():
        assert torch.equal(loaded(data.inputs), model(data.inputs))
    assert state.measure_state(loaded) == state.measure_state(model)


def test_static_macs_are_counted_like_the_float_layers():
    x = images(1).inputs
    before = meters.count_macs(Net(), x)
    after = meters.count_macs(static(Net(), images()), x)
    assert after[0] == before[0] and after[1] == before[1]


def test_static_needs_calibration_and_eight_bits():
    with pytest.raises(KmrError, match="needs `calibration`"):
        quantize.apply(Net(), [("fc", Net().fc)], bits=8, scheme="static")
    with pytest.raises(KmrError, match="8 bits"):
        model = Net()
        quantize.apply(model, [("fc", model.fc)], bits=4, scheme="static", calibration=images())


def test_static_layer_can_go_to_fewer_bits_and_be_channel_pruned_as_a_consumer():
    data = images()
    model = Net()
    static(model, data)
    quantize.apply(model, [("head", model.head)], bits=4)
    assert isinstance(model.head, km.QuantLinear) and torch.isfinite(model(data.inputs)).all()
    mlp = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))
    feats = Dataset(torch.randn(32, 6), None, "x")
    quantize.apply(mlp, [("2", mlp[2])], bits=8, scheme="static", calibration=feats)
    prune.apply(mlp, [("0", mlp[0])], amount=0.5, method="channel")
    assert mlp[2].in_features == 6 and mlp(feats.inputs).shape == (32, 3)
