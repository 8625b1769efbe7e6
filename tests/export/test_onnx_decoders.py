"""`kmr export --format onnx` of transformers decoders (GPT-2, Llama), built from configs:
transformers 5 builds their causal masks with `torch.diff` and a bool `cumsum`, which
torch's TorchScript exporter cannot translate (KMR521 before); KMR translates both while
it exports. The files are loaded back with onnxruntime and compared with the artifact on
a batch and sequence length the export never saw."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from kmr_dsl.diagnostics import KmrError  # noqa: E402
from kmr_dsl.export import onnx_ops  # noqa: E402
from kmr_dsl.export.onnx_export import export_onnx  # noqa: E402
from kmr_dsl.facts import LoaderSpec  # noqa: E402
from kmr_dsl.rules import quantize  # noqa: E402
from kmr_dsl.runtime import layers as kl  # noqa: E402
from kmr_dsl.runtime import int8_kernels as k8  # noqa: E402
from kmr_dsl.runtime.artifact import load  # noqa: E402
from tests.export.conftest import DECODERS, program_module, save  # noqa: E402

MODELS = DECODERS + textwrap.dedent("""
    class FixedBatch(torch.nn.Module):
        # reads its batch size as a Python int: traced, the graph keeps the traced one
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.fc = torch.nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(x).reshape(int(x.shape[0]), 2, 2)

        def example_input(self):
            return (1, 8)


    def make_fixed_batch():
        return FixedBatch().eval()
""")

GPT2_CONV1D = [f"transformer.h.{i}.{p}" for i in range(2)
               for p in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]
# a batch size and a sequence length the exporter's samples (3 x 64 and 2 x 43) never use
FRESH = torch.randint(0, 128, (5, 23), generator=torch.Generator().manual_seed(7))


@pytest.fixture
def decoders(tmp_path, monkeypatch):
    yield from program_module(tmp_path, monkeypatch, "decoders", MODELS)


def _artifact(folder, fn, quantized=(), scheme="weight_only"):
    import decoders

    model = getattr(decoders, fn)()
    if quantized:
        quantize.apply(model, [(n, kl.get_module(model, n)) for n in quantized], bits=8, scheme=scheme)
    return save(model, folder, LoaderSpec("factory", (f"decoders:{fn}",), (), str(folder)))


def _onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


def _logits(artifact, folder, x):
    with torch.no_grad():
        return load(artifact, base_dir=str(folder))(x).logits


@pytest.mark.parametrize("fn", ["make_gpt2", "make_llama"])
def test_float_decoder_exports_and_matches_on_unseen_shapes(decoders, fn, capfd):
    path = _artifact(decoders, fn)
    result = export_onnx(str(path), decoders / "onnx", base_dir=str(decoders))
    assert set(result.encodings.values()) == {"float32"} and result.check.ok
    assert result.check.vs_float is None and result.check.vs_artifact.max_abs < 1e-5
    assert "graph" not in capfd.readouterr().out
    ref, got = _logits(path, decoders, FRESH), _onnx(result.path, FRESH)
    assert got.shape == ref.shape == (5, 23, 128)
    # docs/export.md's float rule: max |diff| <= 1e-4 * max(1, max |ref|), relative L2 <= 1e-4
    assert (got - ref).abs().max() <= 1e-4 * max(1.0, float(ref.abs().max()))
    assert (got - ref).norm() / ref.norm() <= 1e-4


def test_gpt2_int8_weight_only_conv1d_is_exact_with_kmr_codes(decoders):
    """GPT-2's Conv1D projections (weights [in, out]) are Linear layers in the artifact
    ([out, in]); the file holds KMR's [out, in] codes and per-row scales, dequantized on
    axis 0 and transposed for the MatMul, and onnxruntime (default optimizations) computes
    exactly the artifact's logits."""
    path = _artifact(decoders, "make_gpt2", GPT2_CONV1D)
    result = export_onnx(str(path), decoders / "onnx", base_dir=str(decoders))
    assert all(result.encodings[n] == "int8 DequantizeLinear" for n in GPT2_CONV1D)
    assert result.check.vs_float is None and result.check.vs_artifact.max_abs < 1e-5

    model = load(path, base_dir=str(decoders))
    graph = onnx.load(str(result.path)).graph
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    deqs = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    assert len(deqs) == 8 and all(next(a.i for a in n.attribute if a.name == "axis") == 0 for n in deqs)
    transposed = {n.input[0] for n in graph.node if n.op_type == "Transpose"}
    for name in GPT2_CONV1D:
        leaf = model.get_submodule(name)
        codes, scale = leaf.int_weight().numpy(), leaf.scale.numpy()
        (deq,) = [n for n in deqs if np.array_equal(inits[n.input[0]], codes)]
        assert inits[deq.input[0]].dtype == np.int8 and np.array_equal(inits[deq.input[1]], scale)
        assert deq.output[0] in transposed       # [out, in] -> the MatMul's [in, out]

    ref, got = _logits(path, decoders, FRESH), _onnx(result.path, FRESH)
    assert (got - ref).abs().max() <= 1e-4 * max(1.0, float(ref.abs().max()))
    # what onnxruntime runs: no fused int8-activation kernel for these weights
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(decoders / "optimized.onnx")
    ort.InferenceSession(str(result.path), opts, providers=["CPUExecutionProvider"])
    ops = {n.op_type for n in onnx.load(str(decoders / "optimized.onnx")).graph.node}
    assert "MatMulNBits" not in ops and "DequantizeLinear" in ops


def test_gpt2_int8_dynamic_conv1d_uses_kmr_codes(decoders):
    path = _artifact(decoders, "make_gpt2", GPT2_CONV1D, scheme="dynamic")
    result = export_onnx(str(path), decoders / "onnx", base_dir=str(decoders))
    assert all(result.encodings[n] == "int8 dynamic (onnxruntime)" for n in GPT2_CONV1D)
    assert result.check.ok and result.check.vs_float.rel_l2 <= result.check.bound

    model = load(path, base_dir=str(decoders))
    graph = onnx.load(str(result.path)).graph
    assert sum(n.op_type == "MatMulInteger" for n in graph.node) == 8
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    stored = [v.astype(np.int16).T - 128 for k, v in inits.items() if k.endswith("_quantized") and v.dtype == np.uint8]
    for name in GPT2_CONV1D:
        q, _, _ = k8.dynamic_parts(model.get_submodule(name))
        assert any(s.shape == tuple(q.shape) and np.array_equal(s, q.numpy()) for s in stored)
    ref, got = _logits(path, decoders, FRESH), _onnx(result.path, FRESH)
    assert got.shape == ref.shape and float((got - ref).norm() / ref.norm()) < 0.05


def test_llama_int8_weight_only_and_dynamic(decoders):
    folder = decoders
    linears = [f"model.layers.{i}.{p}" for i in range(2)
               for p in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")]
    mlps = [f"model.layers.{i}.mlp.{p}" for i in range(2) for p in ("gate_proj", "up_proj", "down_proj")]
    import decoders as mods

    model = mods.make_llama()
    quantize.apply(model, [(n, kl.get_module(model, n)) for n in linears], bits=8, scheme="weight_only")
    quantize.apply(model, [(n, kl.get_module(model, n)) for n in mlps], bits=8, scheme="dynamic")
    path = save(model, folder, LoaderSpec("factory", ("decoders:make_llama",), (), str(folder)))
    result = export_onnx(str(path), folder / "onnx", base_dir=str(folder))
    assert {result.encodings[n] for n in linears} == {"int8 DequantizeLinear"}
    assert {result.encodings[n] for n in mlps} == {"int8 dynamic (onnxruntime)"}
    assert result.check.ok
    ref, got = _logits(path, folder, FRESH), _onnx(result.path, FRESH)
    assert got.shape == ref.shape and float((got - ref).norm() / ref.norm()) < 0.05


def test_graph_that_fixes_the_batch_size_is_refused(decoders):
    """The graph declares its batch axis free; a forward that reads the batch size as a
    Python int bakes the traced one in. The check runs a batch of another size, so this
    is KMR522 instead of a file that fails (or is wrong) on other batches."""
    import decoders as mods

    path = save(mods.make_fixed_batch(), decoders,
                LoaderSpec("factory", ("decoders:make_fixed_batch",), (), str(decoders)))
    with pytest.raises(KmrError) as err:
        export_onnx(str(path), decoders / "onnx", base_dir=str(decoders))
    d = err.value.diagnostic
    assert d.code == "KMR522" and "traced on a batch of shape (3, 8), run on (2, 8)" in d.notes[0]
    assert "Reshape" in d.notes[0] and "batch size" in d.hint
    assert not any((decoders / "onnx").glob("*.onnx*"))


def test_diff_and_cumsum_translations_match_torch(tmp_path):
    class Ops(torch.nn.Module):
        def forward(self, x):
            ids = x.round().long()
            steps = torch.diff(ids, prepend=ids[:, :1] - 1, dim=-1)
            second = torch.diff(x, n=2, dim=0, append=x[:1])
            flips = torch.diff(x > 0, dim=1)
            return (steps != 1).cumsum(-1).float().sum(-1), second, flips.cumsum(1), x.cumsum(1, dtype=torch.float64)

    x = torch.randn(4, 9, generator=torch.Generator().manual_seed(1)) * 3
    path = tmp_path / "ops.onnx"
    onnx_ops.register(17)
    torch.onnx.export(Ops(), (x,), str(path), dynamo=False, opset_version=17, input_names=["x"],
                      dynamic_axes={"x": {0: "rows", 1: "cols"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for y in (x, torch.randn(3, 6, generator=torch.Generator().manual_seed(2)) * 3):
        want = Ops()(y)
        got = session.run(None, {"x": y.numpy()})
        for w, g in zip(want, got):
            assert g.dtype == w.numpy().dtype and g.shape == tuple(w.shape)
            np.testing.assert_allclose(g, w.numpy(), rtol=1e-6, atol=1e-6)
