"""`kmr export --format onnx`: the ONNX file runs in onnxruntime and matches the torch
artifact; int8 weights stay int8 with KMR's own codes; what ONNX cannot hold is an error
naming the layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from kmr_dsl.diagnostics import KmrError  # noqa: E402
from kmr_dsl.export.onnx_export import export_onnx  # noqa: E402
from kmr_dsl.runtime import int8_kernels as k8  # noqa: E402
from kmr_dsl.runtime.artifact import load  # noqa: E402
from tests.export.conftest import mlp_spec, quantize_layers, save  # noqa: E402


def _run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


def test_mixed_int8_mlp_exports_and_matches(mlp_artifact, folder):
    path, model = mlp_artifact
    result = export_onnx(str(path), folder / "onnx", base_dir=str(folder))
    assert result.path == folder / "onnx" / "model.onnx" and result.path.is_file()
    assert result.encodings == {"0": "int8 dynamic (onnxruntime)", "2": "int8 DequantizeLinear", "4": "float32"}
    assert result.check.ok and result.check.vs_float is not None

    # independently of the exporter's own check: a fresh batch size, the reloaded artifact
    reloaded = load(path, base_dir=str(folder))
    x = torch.randn(7, 16, generator=torch.Generator().manual_seed(5))
    ref = reloaded(x)
    got = _run(result.path, x)
    assert got.shape == ref.shape
    assert (got - ref).norm() / ref.norm() < 0.05

    graph = onnx.load(str(result.path)).graph
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    # the weight-only layer: KMR's int8 codes and scales, dequantized in the graph
    q2, s2 = model[2].int_weight().numpy(), model[2].scale.numpy()
    (deq,) = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    codes, scales = inits[deq.input[0]], inits[deq.input[1]]
    axis = next(a.i for a in deq.attribute if a.name == "axis")
    assert codes.dtype == np.int8 and np.array_equal(codes if axis == 0 else codes.T, q2)
    assert np.array_equal(scales, s2)
    # the dynamic layer: onnxruntime re-quantized the (already int8-grid) weight to the same
    # codes (stored q + 128), with KMR's scales
    q0, s0, _ = k8.dynamic_parts(model[0])
    quantized = [k for k, v in inits.items() if v.dtype == np.uint8 and k.endswith("_quantized")]
    assert len(quantized) == 1
    assert np.array_equal(inits[quantized[0]].astype(np.int16).T - 128, q0.numpy())
    assert np.array_equal(inits[quantized[0][: -len("_quantized")] + "_scale"], s0.numpy())
    assert sum(n.op_type == "MatMulInteger" for n in graph.node) == 1
    # nothing of the float layer was quantized
    assert any(v.dtype == np.float32 and v.shape in ((4, 32), (32, 4)) for v in inits.values())


def test_float_and_bf16_layers_match_tightly(folder):
    import tinymlp

    model = quantize_layers(tinymlp.make(), {"0": "half", "2": "prune"})
    path = save(model, folder, mlp_spec(folder))
    result = export_onnx(str(path), folder / "onnx", base_dir=str(folder))
    assert result.check.vs_float is None and result.check.vs_artifact.max_abs < 1e-5
    assert result.encodings["0"] == "float32 (from bfloat16)"


def test_low_bit_layer_is_refused_by_name_unless_dense(folder):
    import tinymlp

    model = quantize_layers(tinymlp.make(), {"2": "int4", "4": "int2"})
    path = save(model, folder, mlp_spec(folder))
    with pytest.raises(KmrError) as err:
        export_onnx(str(path), folder / "onnx", base_dir=str(folder))
    d = err.value.diagnostic
    assert d.code == "KMR520" and "`2`" in d.message and "int4" in d.message
    assert not (folder / "onnx" / "model.onnx").exists()
    result = export_onnx(str(path), folder / "onnx", dense=True, base_dir=str(folder))
    assert result.encodings["2"] == "float32 (dense, from int4)" and result.check.vs_artifact.max_abs < 1e-5


def test_operator_onnx_lacks_is_a_clear_error(folder, capfd):
    import tinymlp

    path = save(tinymlp.make_spectral(), folder, mlp_spec(folder, "make_spectral"))
    with pytest.raises(KmrError) as err:
        export_onnx(str(path), folder / "onnx", base_dir=str(folder))
    d = err.value.diagnostic
    assert d.code == "KMR521" and "fft_rfft" in d.notes[0]
    # torch's C++ side prints the whole traced graph on such a failure; it stays off stdout
    assert "aten::fft_rfft" not in capfd.readouterr().out
    assert not any((folder / "onnx").glob("*.onnx*"))


def test_not_an_artifact(folder):
    bad = folder / "model.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(bad))
    with pytest.raises(KmrError) as err:
        export_onnx(str(bad), folder / "onnx")
    assert err.value.diagnostic.code == "KMR402"


def test_cli_export_onnx_and_errors(mlp_artifact, folder, capsys):
    from kmr_dsl.cli import main

    path, _ = mlp_artifact
    assert main(["export", str(path), "--format", "onnx", "--base-dir", str(folder)]) == 0
    out = capsys.readouterr().out
    assert (path.parent / "model.onnx").is_file() and "checked on 4 sample batches" in out and "passed: int8" in out
    assert main(["export", str(path), "--format", "onnx", "-o", str(folder / "x"), "--base-dir", str(folder),
                 "--json"]) == 0
    import json

    data = json.loads(capsys.readouterr().out)
    assert data["layers"]["2"] == "int8 DequantizeLinear" and data["check"]["ok"]
    assert data["check"]["rel_l2_to_float"] <= data["check"]["bound"]
    assert main(["export", str(folder / "missing.safetensors"), "--format", "onnx"]) == 2
    assert "KMR501" in capsys.readouterr().err
    assert main(["export", str(path), "--format", "tflite"]) == 2
