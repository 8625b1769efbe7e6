"""`kmr export --format hf` of head- and channel-pruned transformers models: config.json
describes the pruned widths (Llama: head counts, head_dim, intermediate_size; BERT:
intermediate_size), `from_pretrained` loads the folder and computes what KMR's pruned
model computes; what a config cannot state (per-layer counts, BERT heads) is KMR520
naming the layer, or with `--dense` zero-padded to a width it can state."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from kmr_dsl.diagnostics import KmrError  # noqa: E402
from kmr_dsl.export.hf_export import export_hf  # noqa: E402
from kmr_dsl.facts import LoaderSpec  # noqa: E402
from kmr_dsl.rules import prune, quantize  # noqa: E402
from kmr_dsl.runtime import context, layers as kl  # noqa: E402
from tests.export.conftest import DECODERS, program_module, quantize_layers, save  # noqa: E402

IDS = torch.randint(1, 128, (2, 10), generator=torch.Generator().manual_seed(5))


MODELS = DECODERS + """

def make_bert():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=64)
    return transformers.BertModel(cfg).eval()


class Pooled(transformers.BertModel):
    # a sentence encoder defined in the program folder: BERT with its own pooling

    def forward(self, input_ids):
        return super().forward(input_ids).last_hidden_state.mean(dim=1)


def make_pooled():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=64)
    return Pooled(cfg).eval()
"""


@pytest.fixture
def models(tmp_path, monkeypatch):
    yield from program_module(tmp_path, monkeypatch, "pruned_models", MODELS)


def _model(folder, fn):
    import pruned_models

    return LoaderSpec("factory", (f"pruned_models:{fn}",), (), str(folder)), getattr(pruned_models, fn)()


def _llama(folder):
    return _model(folder, "make_llama")


def _bert(folder):
    return _model(folder, "make_bert")


def _prune(model, names, amount, method):
    with context.use(context.RunContext(example=((1, 8), "int64"))):
        prune.apply(model, [(n, model.get_submodule(n)) for n in names], amount=amount, method=method)
    return model


def _close(model, folder, cls, field):
    loaded = cls.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        want, got = getattr(model(IDS), field), getattr(loaded(IDS), field)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    return loaded


def _config(folder):
    return json.loads((folder / "config.json").read_text())


LLAMA_Q = [f"model.layers.{i}.self_attn.q_proj" for i in range(2)]
LLAMA_GATE = [f"model.layers.{i}.mlp.gate_proj" for i in range(2)]


def test_llama_heads_and_swiglu_channels_are_in_the_config(models):
    tmp_path = models
    spec, model = _llama(tmp_path)
    _prune(model, LLAMA_Q, 0.5, "head")              # 2 key/value heads -> 1 (with its 2 query heads)
    _prune(model, LLAMA_GATE, 0.25, "channel")       # 64 -> 48, gate and up together, down's columns
    result = export_hf(str(save(model, tmp_path, spec)), tmp_path / "hf", base_dir=str(tmp_path))
    cfg = _config(tmp_path / "hf")
    assert (cfg["num_key_value_heads"], cfg["num_attention_heads"], cfg["head_dim"], cfg["intermediate_size"]) \
        == (1, 2, 8, 48)
    assert result.config_changes["intermediate_size"] == (64, 48)
    assert result.check.vs_artifact.max_abs < 1e-4
    loaded = _close(model, tmp_path / "hf", transformers.AutoModelForCausalLM, "logits")
    assert loaded.model.layers[1].self_attn.k_proj.weight.shape == (8, 32)
    assert loaded.model.layers[0].mlp.down_proj.weight.shape == (32, 48)
    base = transformers.AutoModel.from_pretrained(str(tmp_path / "hf")).eval()   # the base model loads too
    with torch.no_grad():
        torch.testing.assert_close(base(IDS).last_hidden_state, model.model(IDS).last_hidden_state,
                                   atol=1e-4, rtol=1e-4)


def test_llama_layers_pruned_differently_are_refused_or_padded(models):
    tmp_path = models
    spec, model = _llama(tmp_path)
    _prune(model, LLAMA_GATE[:1], 0.5, "channel")      # block 0: 32 channels, block 1: 64
    path = save(model, tmp_path, spec)
    with pytest.raises(KmrError) as err:
        export_hf(str(path), tmp_path / "hf", base_dir=str(tmp_path))
    diag = err.value.diagnostic
    assert diag.code == "KMR520" and "model.layers.0.mlp" in diag.message and "--dense" in diag.hint
    assert not (tmp_path / "hf").exists()
    result = export_hf(str(path), tmp_path / "hf", dense=True, base_dir=str(tmp_path))
    assert _config(tmp_path / "hf")["intermediate_size"] == 64 and not result.config_changes
    assert "zero-padded" in result.encodings["model.layers.0.mlp.down_proj"]
    _close(model, tmp_path / "hf", transformers.AutoModelForCausalLM, "logits")


def test_llama_heads_differing_per_layer_pad_to_the_widest(models):
    tmp_path = models
    spec, model = _llama(tmp_path)
    _prune(model, LLAMA_Q[1:], 0.5, "head")
    path = save(model, tmp_path, spec)
    with pytest.raises(KmrError) as err:
        export_hf(str(path), tmp_path / "hf", base_dir=str(tmp_path))
    assert err.value.diagnostic.code == "KMR520" and "model.layers.1.self_attn" in err.value.diagnostic.message
    export_hf(str(path), tmp_path / "hf", dense=True, base_dir=str(tmp_path))
    assert _config(tmp_path / "hf")["num_key_value_heads"] == 2
    _close(model, tmp_path / "hf", transformers.AutoModelForCausalLM, "logits")


def test_pruned_and_int8_llama_is_compressed_tensors(models):
    tmp_path = models
    pytest.importorskip("compressed_tensors")
    spec, model = _llama(tmp_path)
    _prune(model, LLAMA_GATE, 0.5, "channel")
    quantize_layers(model, {f"model.layers.{i}.mlp.down_proj": "int8" for i in range(2)})
    export_hf(str(save(model, tmp_path, spec)), tmp_path / "hf", base_dir=str(tmp_path))
    cfg = _config(tmp_path / "hf")
    assert cfg["intermediate_size"] == 32 and cfg["quantization_config"]["quant_method"] == "compressed-tensors"
    loaded = _close(model, tmp_path / "hf", transformers.AutoModelForCausalLM, "logits")
    assert torch.equal(loaded.model.layers[0].mlp.down_proj.weight.float(),
                       model.model.layers[0].mlp.down_proj.dequantized())


BERT_DENSE = [f"encoder.layer.{i}.intermediate.dense" for i in range(2)]
BERT_QUERY = [f"encoder.layer.{i}.attention.self.query" for i in range(2)]


def test_bert_intermediate_channels_are_in_the_config(models):
    tmp_path = models
    spec, model = _bert(tmp_path)
    _prune(model, BERT_DENSE, 0.5, "channel")
    result = export_hf(str(save(model, tmp_path, spec)), tmp_path / "hf", base_dir=str(tmp_path))
    assert _config(tmp_path / "hf")["intermediate_size"] == 32 and result.config_changes
    loaded = _close(model, tmp_path / "hf", transformers.AutoModel, "last_hidden_state")
    assert loaded.encoder.layer[1].output.dense.weight.shape == (32, 32)


def test_bert_heads_need_dense_and_are_padded_back(models):
    tmp_path = models
    spec, model = _bert(tmp_path)
    _prune(model, BERT_QUERY, 0.5, "head")
    path = save(model, tmp_path, spec)
    with pytest.raises(KmrError) as err:
        export_hf(str(path), tmp_path / "hf", base_dir=str(tmp_path))
    diag = err.value.diagnostic
    assert diag.code == "KMR520" and "encoder.layer.0.attention.self" in diag.message
    assert "same width" in diag.message
    result = export_hf(str(path), tmp_path / "hf", dense=True, base_dir=str(tmp_path))
    assert _config(tmp_path / "hf")["num_attention_heads"] == 4
    assert "zero-padded" in result.encodings["encoder.layer.1.attention.self.value"]
    _close(model, tmp_path / "hf", transformers.AutoModel, "last_hidden_state")


def test_a_subclass_exports_as_the_architecture_it_extends(models):
    tmp_path = models
    spec, model = _model(tmp_path, "make_pooled")
    _prune(model, BERT_DENSE, 0.25, "channel")
    export_hf(str(save(model, tmp_path, spec)), tmp_path / "hf", base_dir=str(tmp_path))
    assert _config(tmp_path / "hf")["intermediate_size"] == 48
    loaded = transformers.AutoModel.from_pretrained(str(tmp_path / "hf")).eval()
    assert type(loaded) is transformers.BertModel
    with torch.no_grad():
        want = transformers.BertModel.forward(model, IDS).last_hidden_state
        torch.testing.assert_close(loaded(IDS).last_hidden_state, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("pruned", [False, True])
def test_gpt2_conv1d_layers_and_n_inner(models, pruned):
    """GPT-2's Conv1D projections go back to Conv1D; a pruned MLP width is `n_inner`."""
    tmp_path = models
    spec, model = _model(tmp_path, "make_gpt2")
    if pruned:
        _prune(model, [f"transformer.h.{i}.mlp.c_fc" for i in range(2)], 0.25, "channel")     # 128 -> 96
    result = export_hf(str(save(model, tmp_path, spec)), tmp_path / "hf", base_dir=str(tmp_path))
    assert result.config_changes == ({"n_inner": (None, 96)} if pruned else {})
    loaded = _close(model, tmp_path / "hf", transformers.AutoModelForCausalLM, "logits")
    assert loaded.transformer.h[1].mlp.c_proj.weight.shape == ((96, 32) if pruned else (128, 32))


GPT2_CONV1D = [f"transformer.h.{i}.{p}" for i in range(2) for p in ("attn.c_attn", "attn.c_proj", "mlp.c_fc",
                                                                    "mlp.c_proj")]


@pytest.mark.parametrize("scheme", ["weight_only", "dynamic"])
def test_int8_gpt2_conv1d_is_refused_or_written_dense(models, scheme):
    """compressed-tensors quantizes only nn.Linear and nn.Embedding, and GPT-2 builds its
    projections as Conv1D: int8 ones are KMR520 naming the layer; --dense writes their
    dequantized values as float Conv1D weights, which transformers loads and which compute
    the artifact's logits (weight-only: exactly; dynamic: its float model exactly)."""
    tmp_path = models
    spec, model = _model(tmp_path, "make_gpt2")
    quantize.apply(model, [(n, kl.get_module(model, n)) for n in GPT2_CONV1D], bits=8, scheme=scheme)
    path = save(model, tmp_path, spec)
    with pytest.raises(KmrError) as err:
        export_hf(str(path), tmp_path / "hf", base_dir=str(tmp_path))
    diag = err.value.diagnostic
    assert diag.code == "KMR520" and "`transformer.h.0.attn.c_attn` is a transformers Conv1D" in diag.message
    assert "nn.Linear" in diag.notes[0] and "--dense" in diag.hint
    assert not (tmp_path / "hf").exists()

    result = export_hf(str(path), tmp_path / "hf", dense=True, base_dir=str(tmp_path))
    fmt = "int8" if scheme == "weight_only" else "int8_dynamic"
    assert all(result.encodings[n].startswith(f"float32 (dense, from {fmt}") for n in GPT2_CONV1D)
    assert "quantization_config" not in _config(tmp_path / "hf")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
    c_attn = loaded.transformer.h[0].attn.c_attn
    assert kl.is_conv1d(c_attn) and c_attn.weight.shape == (32, 96)
    art = model.transformer.h[0].attn.c_attn
    want = art.dequantized() if scheme == "weight_only" else kl.leaf_weight(art)
    assert torch.equal(c_attn.weight, want.t())
    with torch.no_grad():
        got, ref = loaded(IDS).logits, model(IDS).logits
    if scheme == "weight_only":
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
        assert result.check.vs_float is None and result.check.vs_artifact.max_abs < 1e-5
    else:       # int8 activations are the artifact's alone: judged against its float model
        assert result.check.ok and result.check.vs_float.max_abs < 1e-5
        assert 0 < float((got - ref).norm() / ref.norm()) < 0.05


def test_int8_tied_lm_head_is_refused_or_written_dense_and_tied(models):
    """GPT-2's lm_head is tied to its input embedding; transformers ties them by sharing
    the weight compressed-tensors replaces with codes (the loader failed with an
    AttributeError): KMR520, or with --dense one float table, still tied."""
    tmp_path = models
    spec, model = _model(tmp_path, "make_gpt2")
    from kmr_dsl.runtime import tied
    tied.link(model)
    assert tied.tied_names(model) == {"lm_head": ("transformer.wte",)}
    quantize.apply(model, [("lm_head", model.lm_head)], bits=8, scheme="weight_only")
    path = save(model, tmp_path, spec)
    with pytest.raises(KmrError) as err:
        export_hf(str(path), tmp_path / "hf", base_dir=str(tmp_path))
    diag = err.value.diagnostic
    assert diag.code == "KMR520" and "`lm_head` is stored as int8 and tied to `transformer.wte`" in diag.message
    result = export_hf(str(path), tmp_path / "hf", dense=True, base_dir=str(tmp_path))
    assert result.encodings["lm_head"] == "float32 (dense, from int8: tied)"
    loaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    assert torch.equal(loaded.lm_head.weight, model.lm_head.dequantized())
    with torch.no_grad():
        torch.testing.assert_close(loaded(IDS).logits, model(IDS).logits, atol=1e-5, rtol=1e-5)
