"""`quantize(symmetric = false)` (zero points), `activations = token` (per-token W8A8) and
the int8 kernels' saturation guard: numbers against reference computations, exact
artifacts, the layout's byte formula."""

import pytest
import torch
import torch.nn as nn

from kmr_dsl import artifact_layout as layout
from kmr_dsl.diagnostics import KmrError
from kmr_dsl.rules import prune, quantize
from kmr_dsl.runtime import artifact, codec, quant, state
from kmr_dsl.runtime import layers as kl
from kmr_dsl.runtime import int8_kernels as k8
from kmr_dsl.runtime import modules as km
from kmr_dsl.runtime.data import Dataset


def skewed(rows=24, cols=64, seed=0):
    """Weights whose rows sit mostly on one side of zero (post-ReLU-like, shifted)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(rows, cols, generator=gen) * 0.8 - 0.1


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 10))


@pytest.mark.parametrize("bits,group_size", [(8, 0), (4, 0), (4, 16), (2, 0), (2, 16)])
def test_affine_dequantization_is_the_reference_formula(bits, group_size):
    w = skewed()
    q, scale, zero = quant.quantize_affine(w, bits, group_size)
    assert q.dtype == torch.int8 and zero.dtype == torch.int8 and zero.shape == scale.shape
    assert int(q.min()) >= quant.QMIN[bits] and int(q.max()) <= quant.QMAX_AFFINE[bits]
    # (q - zero) * scale at 8 bits, midrise levels from the zero point at 4 and 2, element by element
    want = torch.empty_like(w)
    for r in range(w.shape[0]):
        for c in range(w.shape[1]):
            g = c // group_size if group_size else 0
            s = scale[r, g] if group_size else scale[r]
            z = zero[r, g] if group_size else zero[r]
            d = int(q[r, c]) - int(z)
            steps = d if bits == 8 else (abs(d) - 0.5) * (1 if d > 0 else -1 if d < 0 else 0)
            want[r, c] = steps * float(s)
    assert torch.equal(quant.dequantize(q, scale, bits, group_size, zero), want)


@pytest.mark.parametrize("bits,group_size", [(8, 0), (4, 0), (4, 16), (2, 0)])
def test_asymmetric_error_is_at_most_symmetric_on_skewed_weights(bits, group_size):
    w = skewed()
    sym = quant.dequantize(*quant.quantize(w, bits, group_size), bits, group_size)
    q, scale, zero = quant.quantize_affine(w, bits, group_size)
    asym = quant.dequantize(q, scale, bits, group_size, zero)
    err_sym, err_asym = float(((sym - w) ** 2).sum()), float(((asym - w) ** 2).sum())
    assert err_asym <= err_sym, (err_asym, err_sym)
    assert err_asym < 0.7 * err_sym       # and markedly so: no codes spent on values not there


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_affine_codes_keep_zeros_zero_and_nonzeros_nonzero(bits):
    w = skewed(seed=3)
    w[w.abs() < 0.2] = 0.0                 # pruned weights, and tiny ones next to them
    w[0, :3] = torch.tensor([1e-6, -1e-6, 0.0])
    q, scale, zero = quant.quantize_affine(w, bits, 16)
    at_zero = quant.zero_codes(q, zero, 16)
    assert torch.equal(at_zero, w == 0)
    assert torch.equal(quant.dequantize(q, scale, bits, 16, zero) == 0, w == 0)


def test_int8_kernel_codes_do_not_saturate_full_range_activations():
    torch.manual_seed(0)
    lin = nn.Linear(16, 32)
    x = torch.randn(64, 16) * 3
    layer = quantize.convert(lin, "Linear", 8, "dynamic", "fc")
    assert isinstance(layer, k8.DynamicLinear)
    q, scale, bias = k8.dynamic_parts(layer)
    assert int(q.abs().max()) <= quant.KERNEL_QMAX and layer.full_range
    reference = nn.functional.linear(x, quant.dequantize(q, scale), bias)

    def bound(levels, q, scale):    # one activation step per input, at most
        step = float(x.max() - x.min()) / levels
        return step * float((q.abs().float() * scale[:, None]).sum(dim=1).max()) + 1e-4
    assert float((layer(x) - reference).abs().max()) <= bound(255, q, scale)
    # codes of +-127 (an older artifact) keep torch's 7-bit activations, within their bound
    wide, wide_scale = quant.quantize(lin.weight.detach(), 8)
    wide_layer = k8.dynamic_linear(wide, wide_scale, bias)
    wide_ref = nn.functional.linear(x, quant.dequantize(wide, wide_scale), bias)
    assert not wide_layer.full_range
    assert float((wide_layer(x) - wide_ref).abs().max()) <= bound(127, wide, wide_scale)
    # ... since with full-range activations they saturate (why the codes are narrowed)
    wide_layer.full_range = True
    assert float((wide_layer(x) - wide_ref).abs().max()) > 4 * bound(127, wide, wide_scale)


def test_per_token_linear_is_the_reference_computation():
    torch.manual_seed(1)
    lin = nn.Linear(32, 8)
    x = torch.randn(5, 7, 32)
    x[0, 0] *= 50                                   # one outlier token: others keep their steps
    for symmetric in (True, False):
        layer = quantize.convert(lin, "Linear", 8, "dynamic", "fc", symmetric=symmetric, activations="token")
        assert isinstance(layer, km.TokenLinear) and layer.symmetric == symmetric
        w = layer.dequantized()
        want = torch.empty(5, 7, 8)
        for i in range(5):
            for t in range(7):
                v = x[i, t]
                if symmetric:
                    s = float(v.abs().max()) / 127
                    xq = torch.round(v / s).clamp(-127, 127) * s
                else:
                    lo, hi = min(float(v.min()), 0.0), max(float(v.max()), 0.0)
                    s = (hi - lo) / 255
                    z = round(-lo / s)
                    xq = ((torch.round(v / s) + z).clamp(0, 255) - z) * s
                want[i, t] = nn.functional.linear(xq, w, lin.bias.detach())
        assert torch.allclose(layer(x), want, atol=1e-4, rtol=1e-4)
        # per-token is closer to the float layer than one scale for the whole tensor
        per_tensor = quantize.convert(lin, "Linear", 8, "dynamic", "fc", symmetric=symmetric)
        exact = lin(x).detach()
        assert (layer(x) - exact)[1:].abs().max() < (per_tensor(x) - exact)[1:].abs().max()


def test_token_activations_need_dynamic_w8():
    model = mlp()
    with pytest.raises(KmrError, match="activations = token"):
        quantize.apply(model, kl.select_layers(model, ("Linear",)), bits=4, scheme="weight_only",
                       activations="token")


@pytest.mark.parametrize("args", [
    {"bits": 8, "symmetric": False},
    {"bits": 8, "activations": "token"},
    {"bits": 8, "activations": "token", "symmetric": False},
    {"bits": 4, "scheme": "weight_only", "group_size": 8, "symmetric": False},
    {"bits": 2, "scheme": "weight_only", "symmetric": False},
    {"bits": 8, "scheme": "static", "symmetric": False},
])
@pytest.mark.parametrize("pruned", [False, True])
def test_asymmetric_artifacts_roundtrip_exactly_at_the_layout_size(args, pruned, tmp_path):
    model = mlp()
    x = torch.randn(32, 16)
    if pruned:
        prune.apply(model, kl.select_layers(model, ("Linear",)), amount=0.8)
    density = {n: st["density"] for n, st in state.measure_state(model)["layers"].items()}
    calibration = Dataset(x, None, "x") if args.get("scheme") == "static" else None
    quantize.apply(model, kl.select_layers(model, ("Linear",)), calibration=calibration, **args)
    after = state.measure_state(model)["layers"]
    for name, st in after.items():
        assert st["density"] == density[name] and st["symmetric"] == args.get("symmetric", True)
    forms = []
    for name, leaf in kl.select_layers(model, ("Linear",)):
        numel, rows, bits, nnz = codec.weight_record(leaf)
        stored = codec.encode_weight(f"{name}.weight", leaf, 6)
        zeros = not codec.leaf_symmetric(leaf)
        # the writer's form: its data and header entries are the fewer bytes
        sparse = layout.is_sparse(f"{name}.weight", kl.leaf_weight(leaf).shape, bits, nnz, 6)
        want = layout.sparse_bytes(numel, rows, bits, nnz, zeros) if sparse else \
            layout.dense_bytes(numel, rows, bits, zeros)
        assert sum(t.numel() * t.element_size() for t in stored.values()) == want
        assert sorted(stored) == sorted(layout.weight_entry_names(f"{name}.weight", bits, sparse, zeros))
        forms.append(sparse)
    # pruned, the larger layers store sparse (at 2 bits, none of these small layers saves
    # as much as the sparse form's second entry costs)
    assert any(forms) == (pruned and bits >= 4)
    path = tmp_path / "m.safetensors"
    artifact.save(model, path, {"base": None})
    loaded = artifact.load(path, base=mlp())
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert state.measure_state(loaded)["layers"] == after
