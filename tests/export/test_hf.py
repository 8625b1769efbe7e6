"""`kmr export --format hf`: a save_pretrained folder that transformers' AutoModel loads
on CPU, int8 weights in the compressed-tensors format (KMR's own codes and scales), and
clear refusals naming the layer for what a checkpoint cannot hold."""

from __future__ import annotations

import json

import pytest
import torch

import transformers  # noqa: E402

from kmr_dsl.diagnostics import KmrError  # noqa: E402
from kmr_dsl.export.hf_export import export_hf  # noqa: E402
from kmr_dsl.facts import LoaderSpec  # noqa: E402
from kmr_dsl.runtime import int8_kernels as k8  # noqa: E402
from kmr_dsl.runtime import layers as kl, modules as km  # noqa: E402
from tests.export.conftest import mlp_spec, quantize_layers, save  # noqa: E402

QUERY = "encoder.layer.0.attention.self.query"
DENSE = "encoder.layer.0.intermediate.dense"


@pytest.fixture
def bert(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64)
    transformers.BertModel(cfg).save_pretrained(tmp_path / "bert")
    spec = LoaderSpec("hf", ("bert",), (), str(tmp_path))

    def model():
        return transformers.BertModel.from_pretrained(tmp_path / "bert").eval()
    return tmp_path, spec, model


def _load(folder):
    return transformers.AutoModel.from_pretrained(str(folder)).eval()


def test_int8_layers_are_compressed_tensors_and_load(bert):
    folder, spec, fresh = bert
    model = fresh()
    how = {}
    for name, layer in kl.logical_layers(model):
        if kl.kind_of(layer) == "Linear":
            how[name] = "int8" if "attention" in name else "dynamic"
    quantize_layers(model, how)
    path = save(model, folder, spec)
    result = export_hf(str(path), folder / "hf", base_dir=str(folder))
    assert result.check.ok and result.check.vs_float is not None
    assert result.encodings[QUERY] == "int8 W8A16 (pack-quantized)"
    assert result.encodings[DENSE] == "int8 W8A8 (int-quantized)"

    qc = json.loads((folder / "hf" / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors"
    groups = {bool(g["input_activations"]): g for g in qc["config_groups"].values()}
    w8a8, w8a16 = groups[True], groups[False]
    assert len(qc["config_groups"]) == 2 and w8a8["input_activations"]["dynamic"] is True
    assert w8a8["format"] == "int-quantized" and w8a16["format"] == "pack-quantized"
    assert w8a16["weights"]["num_bits"] == 8 and w8a16["weights"]["strategy"] == "channel"
    assert f"re:^{DENSE.replace('.', chr(92) + '.')}$" in w8a8["targets"]

    from safetensors import safe_open
    with safe_open(str(folder / "hf" / "model.safetensors"), "pt") as f:
        stored = f.get_tensor(f"{DENSE}.weight")
        scale = f.get_tensor(f"{DENSE}.weight_scale")
    q, s, _ = k8.dynamic_parts(model.get_submodule(DENSE))
    assert stored.dtype == torch.int8 and torch.equal(stored, q) and torch.equal(scale.flatten(), s)

    # what a user does: AutoModel on CPU, then compare with the artifact on fresh ids
    loaded = _load(folder / "hf")
    ids = torch.randint(0, 100, (2, 11), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref, got = model(ids).last_hidden_state, loaded(ids).last_hidden_state
    assert (ref - got).norm() / ref.norm() < 0.05
    # the weight-only layer computes with exactly KMR's values once decompressed
    w = loaded.get_submodule(QUERY).weight
    assert torch.equal(w.float(), model.get_submodule(QUERY).dequantized())


def test_float_model_is_a_plain_checkpoint(bert):
    folder, spec, fresh = bert
    model = fresh()
    quantize_layers(model, {DENSE: "prune", QUERY: "half"})
    result = export_hf(str(save(model, folder, spec)), folder / "hf", base_dir=str(folder))
    assert result.check.vs_float is None and result.check.vs_artifact.max_abs < 1e-4
    assert "quantization_config" not in json.loads((folder / "hf" / "config.json").read_text())
    assert result.encodings[QUERY] == "float32 (from bfloat16)"
    _load(folder / "hf")


def test_refusals_name_the_layer(bert):
    folder, spec, fresh = bert
    model = quantize_layers(fresh(), {QUERY: "int4"})
    path = save(model, folder, spec, "low")
    with pytest.raises(KmrError) as err:
        export_hf(str(path), folder / "hf", base_dir=str(folder))
    assert err.value.diagnostic.code == "KMR520" and QUERY in err.value.diagnostic.message
    assert not (folder / "hf").exists()
    result = export_hf(str(path), folder / "hf", dense=True, base_dir=str(folder))
    assert result.encodings[QUERY] == "float32 (dense, from int4)" and result.check.vs_artifact.max_abs < 1e-4

    model = fresh()
    layer = model.get_submodule(DENSE)
    first = torch.nn.Linear(32, 8, bias=False)
    second = torch.nn.Linear(8, 64)
    kl.set_module(model, DENSE, km.FactorizedLinear(first, second))
    path = save(model, folder, spec, "lowrank")
    with pytest.raises(KmrError) as err:
        export_hf(str(path), folder / "hf2", base_dir=str(folder))
    assert err.value.diagnostic.code == "KMR520" and "factorized" in err.value.diagnostic.message
    assert export_hf(str(path), folder / "hf2", dense=True, base_dir=str(folder)).check.vs_artifact.max_abs < 1e-4

    model = fresh()
    layer = model.get_submodule(DENSE)
    kl.set_module(model, DENSE, torch.nn.Linear(32, 48))  # channel-pruned: config says 64
    del layer
    with pytest.raises(KmrError) as err:
        export_hf(str(save(model, folder, spec, "pruned")), folder / "hf3", base_dir=str(folder))
    assert err.value.diagnostic.code == "KMR520" and "config" in err.value.diagnostic.message


def test_an_explicit_input_scale_is_refused_unless_dense(bert):
    folder, spec, fresh = bert
    model = fresh()
    layer = model.get_submodule(QUERY)
    kl.set_module(model, QUERY, km.ScaledLinear(layer, torch.linspace(0.5, 2.0, 32)))
    path = save(model, folder, spec, "scaled")
    with pytest.raises(KmrError) as err:
        export_hf(str(path), folder / "hf", base_dir=str(folder))
    assert err.value.diagnostic.code == "KMR520" and "explicit input vector" in err.value.diagnostic.message
    result = export_hf(str(path), folder / "hf", dense=True, base_dir=str(folder))
    assert result.check.vs_artifact.max_abs < 1e-4


def test_not_a_transformers_model(folder):
    import tinymlp

    path = save(tinymlp.make(), folder, mlp_spec(folder))
    with pytest.raises(KmrError) as err:
        export_hf(str(path), folder / "hf", base_dir=str(folder))
    assert err.value.diagnostic.code == "KMR523"


def test_int8_embeddings_export(bert):
    folder, spec, fresh = bert
    model = quantize_layers(fresh(), {"embeddings.word_embeddings": "int8", DENSE: "int8"})
    result = export_hf(str(save(model, folder, spec)), folder / "hf", base_dir=str(folder))
    assert result.encodings["embeddings.word_embeddings"] == "int8 W8A16 (int-quantized)"
    assert result.check.vs_artifact.max_abs < 1e-4
    loaded = _load(folder / "hf")
    with torch.no_grad():
        loaded(torch.zeros(1, 4, dtype=torch.long))  # compressed-tensors decompresses on the first forward
    table = loaded.get_submodule("embeddings.word_embeddings").weight.float()
    assert torch.equal(table, model.get_submodule("embeddings.word_embeddings").dequantized())
