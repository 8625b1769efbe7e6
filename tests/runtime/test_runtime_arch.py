"""Real architectures (tiny transformers configurations, no downloads): `kmr check`
predicts what `kmr run` measures, rule by rule.

The conformance table: for each architecture x each standard rule that accepts it, the
verifier's params / nonzero / macs equal the run's measurement, size is within the
header estimate's tolerance (docs/artifact.md) and never below it, and "verified"
implies the run succeeds."""

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from kmr_dsl.app import load_checked  # noqa: E402
from kmr_dsl.cli import main  # noqa: E402
from kmr_dsl.runtime import artifact, layers as kl, meters  # noqa: E402
from kmr_dsl.runtime.session import PipelineSession  # noqa: E402
from kmr_dsl.verify import predict  # noqa: E402

HERE = Path(__file__).resolve().parent
ANALYTIC = ("params", "nonzero", "size", "macs")

PROGRAM = '''
import "std"

model net = factory("{factory}")

pipeline p(net) {{
    {steps}
    budget {{
        params <= baseline.params
        nonzero <= baseline.nonzero
        size <= 2 * baseline.size
        macs <= baseline.macs
    }}
}}
'''

GPT2_STEPS = {
    "magnitude": 'prune(amount = 0.5) on layers(Linear, name = "transformer.*")',
    "nm": 'prune(amount = 0.0, method = nm, n = 2, m = 4) on layers(Linear, name = "transformer.*")',
    "int8": "quantize(bits = 8) on layers(Linear)",
    "int4": "quantize(bits = 4, scheme = weight_only) on layers(Linear)",
    "prune+int8": 'prune(amount = 0.5) on layers(Linear, name = "transformer.*")\n'
                  "    quantize(bits = 8) on layers(Linear)",
    "bf16": "quantize(bits = 16) on layers(Linear, Embedding)",
    "lowrank": 'lowrank(ratio = 0.25) on layers(Linear, name = "*.mlp.*")',
    # the MLP's hidden channels: c_fc feeds only GELU and c_proj (traced dependency graph)
    "channel": 'prune(amount = 0.5, method = channel) on layers(Linear, name = "*.mlp.c_fc")',
}


RESNET_MODULE = """
import torch
from hf_models import make_mobilenet_v2, make_resnet


def example_input():
    return torch.zeros(1, 3, 32, 32)
"""

VIT_MODULE = """
import torch
from hf_models import make_vit


def example_input():
    return torch.zeros(1, 3, 16, 16)
"""


def write_program(tmp_path: Path, factory: str, steps: str) -> Path:
    shutil.copy(HERE / "hf_models.py", tmp_path / "hf_models.py")
    shutil.copy(HERE / "mobilenet_v3.py", tmp_path / "mobilenet_v3.py")
    (tmp_path / "hf_resnet.py").write_text(RESNET_MODULE)
    (tmp_path / "hf_vit.py").write_text(VIT_MODULE)
    factory = factory if ":" in factory else f"hf_models:{factory}"
    path = tmp_path / "arch.kmr"
    path.write_text(PROGRAM.format(factory=factory, steps=steps))
    return path


def check_and_run(tmp_path, monkeypatch, capsys, factory: str, steps: str):
    path = write_program(tmp_path, factory, steps)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMR_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["check", "--format", "json", str(path)]) == 0
    (pipeline,) = json.loads(capsys.readouterr().out)["files"][0]["pipelines"]
    assert pipeline["verdict"] == "proved", pipeline
    program, diags, _ = load_checked(str(path))
    assert program is not None, diags
    want = predict(program, "p", {})
    session = PipelineSession(program, "p")
    outcome = session.evaluate({})
    return want, outcome, session


def outside_entries(model) -> int:
    """Header bytes of the tensors outside every logical layer (RMSNorms, position
    tables): a documented gap of the size model (verify/cost.py), which the facts do
    not name; on these tiny models it is several percent of the file."""
    names = [n for n, _ in kl.logical_layers(model)]
    keys = [k for k in model.state_dict() if not any(k.startswith(n + ".") for n in names)]
    return sum(46 + len(k) + 3 + 2 * 5 + 7 for k in keys)


def assert_agree(want: dict, got: dict, layers: int, slack: int = 0):
    assert got["params"] == want["params"]
    assert got["macs"] == want["macs"]
    # magnitude pruning keeps round_half_up(nnz * (1 - amount)) per layer
    assert abs(got["nonzero"] - want["nonzero"]) <= layers
    # size is the upper end of the file's range (verify/cost.py), short only by the
    # header entries of tensors outside the layers (`slack`); it counts each Linear's
    # config at the longest form of its storage width (an int8 one may be the static
    # layer, which prints two scales): up to ~80 B per layer above the file
    assert want["size"] >= got["size"] - slack
    assert want["size"] <= 1.06 * got["size"] + 200 + 80 * layers


@pytest.mark.parametrize("case", sorted(GPT2_STEPS))
def test_gpt2_conv1d_check_agrees_with_run(case, tmp_path, monkeypatch, capsys):
    want, outcome, session = check_and_run(tmp_path, monkeypatch, capsys, "make_gpt2", GPT2_STEPS[case])
    assert_agree(want, outcome.meters, layers=9, slack=outside_entries(session.baseline))
    assert outcome.feasible
    model = session.apply({})
    # every projection of the result was really transformed (not skipped as unknown)
    kinds = {kl.kind_of(layer) for _, layer in kl.logical_layers(model)}
    assert "Linear" in kinds and None not in kinds


def test_conv1d_is_a_linear_leaf():
    import hf_models
    from transformers.pytorch_utils import Conv1D

    model = hf_models.make_gpt2()
    layer = model.transformer.h[0].mlp.c_fc
    assert isinstance(layer, Conv1D)
    assert kl.kind_of(layer) == "Linear" and kl.is_leaf(layer)
    assert kl.layer_features(layer) == (16, 64)
    assert tuple(kl.leaf_weight(layer).shape) == (64, 16)
    names = [n for n, _ in kl.select_layers(model, ("Linear",))]
    assert "transformer.h.1.attn.c_attn" in names and "lm_head" in names
    lin = kl.as_linear(layer)
    import torch
    x = torch.randn(3, 16)
    torch.testing.assert_close(lin(x), layer(x))


# ViT (patch-embedding Conv2d, attention, MLP) and MobileNetV2 (depthwise convolutions,
# inverted residuals) x every standard rule that accepts their layers
VIT_STEPS = {
    "magnitude": "prune(amount = 0.5) on layers(Linear, Conv2d)",
    "nm": 'prune(amount = 0.0, method = nm, n = 2, m = 4) on layers(Linear, name = "vit.*")',
    # the MLP's hidden channels (fc1 -> GELU -> fc2); the attention projections and the
    # residual stream (it starts at the patch embedding's flatten) are refused
    "channel": r'prune(amount = 0.5, method = channel) on layers(Linear, name = "re:.*(mlp\.fc1|intermediate\.dense)")',
    "int8": "quantize(bits = 8) on layers(Linear)",
    "int4": "quantize(bits = 4, scheme = weight_only) on layers(Linear)",
    "bf16": "quantize(bits = 16) on layers(Linear, Conv2d)",
    "lowrank": "lowrank(ratio = 0.25) on layers(Linear)",
    "prune+int8": "prune(amount = 0.5) on layers(Linear)\n    quantize(bits = 8) on layers(Linear)",
}
MOBILENET_STEPS = {
    "magnitude": "prune(amount = 0.5) on layers(Conv2d, Linear)",
    "global": "prune(amount = 0.5, method = global) on layers(Conv2d)",
    "nm": "prune(amount = 0.0, method = nm, n = 2, m = 4) on layers(Conv2d)",
    # an expansion's channels with its depthwise conv (and both BatchNorms)
    "channel-depthwise": 'prune(amount = 0.5, method = channel) on layers(Conv2d, name = "*.expand_1x1.convolution")',
    # every block: the residual streams' groups (reduce convs of a stage, the next expansions)
    "channel-residual": 'prune(amount = 0.5, method = channel) on layers(Conv2d, name = "mobilenet_v2.layer.*")',
    "int8": "quantize(bits = 8, scheme = weight_only) on layers(Conv2d, Linear)",
    "int4": "quantize(bits = 4, scheme = weight_only) on layers(Conv2d)",
    "bf16": "quantize(bits = 16) on layers(Conv2d, Linear)",
    "channel+int8": 'prune(amount = 0.5, method = channel) on layers(Conv2d, name = "mobilenet_v2.layer.*")\n'
                    "    quantize(bits = 8, scheme = weight_only) on layers(Conv2d)",
}


@pytest.mark.parametrize("case", sorted(VIT_STEPS))
def test_vit_check_agrees_with_run(case, tmp_path, monkeypatch, capsys):
    want, outcome, session = check_and_run(tmp_path, monkeypatch, capsys, "hf_vit:make_vit", VIT_STEPS[case])
    assert_agree(want, outcome.meters, layers=14, slack=outside_entries(session.baseline))
    assert outcome.feasible


@pytest.mark.parametrize("case", sorted(MOBILENET_STEPS))
def test_mobilenet_v2_check_agrees_with_run(case, tmp_path, monkeypatch, capsys):
    want, outcome, session = check_and_run(tmp_path, monkeypatch, capsys, "hf_resnet:make_mobilenet_v2",
                                           MOBILENET_STEPS[case])
    model = session.apply({})
    assert_agree(want, outcome.meters, layers=53, slack=outside_entries(session.baseline))
    assert outcome.feasible
    import torch
    assert model(torch.randn(2, 3, 32, 32)).logits.shape == (2, 5)


# MobileNetV3-Small (mobilenet_v3.py: squeeze-and-excitation, hardswish, 5x5 depthwise
# convolutions) x every standard rule that accepts its layers
MOBILENET_V3_STEPS = {
    "magnitude": "prune(amount = 0.5) on layers(Conv2d, Linear)",
    "global": "prune(amount = 0.5, method = global) on layers(Conv2d)",
    "nm": "prune(amount = 0.0, method = nm, n = 2, m = 4) on layers(Conv2d)",
    # an expansion with its depthwise conv, the SE's second conv (the gate multiplies the
    # depthwise output) and both BatchNorms; the SE's first conv and the projection read them
    "channel-se": 'prune(amount = 0.5, method = channel) on layers(Conv2d, name = "*.expand.conv")',
    # the SE's hidden width: its own group (fc1 -> ReLU -> fc2)
    "channel-se-hidden": 'prune(amount = 0.5, method = channel) on layers(Conv2d, name = "*.se.fc1")',
    # every conv: residual streams, SE groups, the head conv (its consumer is the classifier)
    "channel-all": "prune(amount = 0.5, method = channel) on layers(Conv2d)",
    "int8": "quantize(bits = 8, scheme = weight_only) on layers(Conv2d, Linear)",
    "int4": "quantize(bits = 4, scheme = weight_only) on layers(Conv2d)",
    "bf16": "quantize(bits = 16) on layers(Conv2d, Linear)",
    "channel+int8": "prune(amount = 0.5, method = channel) on layers(Conv2d)\n"
                    "    quantize(bits = 8, scheme = weight_only) on layers(Conv2d, Linear)",
}


@pytest.mark.parametrize("case", sorted(MOBILENET_V3_STEPS))
def test_mobilenet_v3_check_agrees_with_run(case, tmp_path, monkeypatch, capsys):
    want, outcome, session = check_and_run(tmp_path, monkeypatch, capsys, "mobilenet_v3:make_mobilenet_v3",
                                           MOBILENET_V3_STEPS[case])
    model = session.apply({})
    assert_agree(want, outcome.meters, layers=54, slack=outside_entries(session.baseline))
    assert outcome.feasible
    import torch
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    if case.startswith("channel"):      # channels were physically removed
        assert outcome.meters["params"] < outcome.baseline["params"]
        assert outcome.meters["macs"] < outcome.baseline["macs"]


@pytest.mark.parametrize("case", ["magnitude", "int4", "nm"])
def test_gpt2_artifact_reloads_exactly(case, tmp_path):
    import hf_models
    import torch
    from kmr_dsl.facts import LoaderSpec
    from kmr_dsl.rules import prune, quantize

    model = hf_models.make_gpt2()
    layers = kl.select_layers(model, ("Linear",), "transformer.*")
    if case == "magnitude":
        prune.apply(model, layers, amount=0.5)
    elif case == "nm":
        prune.apply(model, layers, amount=0.0, method="nm")
    else:
        quantize.apply(model, layers, bits=4, scheme="weight_only")
    shutil.copy(HERE / "hf_models.py", tmp_path / "hf_models.py")
    base = LoaderSpec("factory", ("hf_models:make_gpt2",), (), str(tmp_path))
    path = tmp_path / "m.safetensors"
    artifact.save(model, path, {"base": base})
    again = artifact.load(path, base_dir=tmp_path)
    x = torch.arange(8).reshape(1, 8) % 64
    torch.testing.assert_close(again(x).logits, model(x).logits, rtol=1e-5, atol=1e-5)
    assert meters.nonzero(again) == meters.nonzero(model)
    assert meters.params(again) == meters.params(model)


# ---------------------------------------------------------------- Hugging Face outputs

def test_as_tensor_reads_hugging_face_outputs():
    import torch
    from transformers.modeling_outputs import (BaseModelOutputWithPooling, BaseModelOutputWithPoolingAndNoAttention,
                                               CausalLMOutput, QuestionAnsweringModelOutput,
                                               SequenceClassifierOutput)
    from kmr_dsl.runtime.forward import as_tensor

    logits = torch.randn(4, 3)
    assert as_tensor(SequenceClassifierOutput(logits=logits)) is logits
    lm = torch.randn(4, 5, 64)
    assert torch.equal(as_tensor(CausalLMOutput(logits=lm)), lm[:, -1])
    start, end = torch.randn(4, 5), torch.randn(4, 5)
    qa = as_tensor(QuestionAnsweringModelOutput(start_logits=start, end_logits=end))
    assert qa.shape == (4, 2, 5) and torch.equal(qa[:, 0], start) and torch.equal(qa[:, 1], end)
    hidden, pooled = torch.randn(4, 5, 16), torch.randn(4, 16)
    assert torch.equal(as_tensor(BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled)),
                       hidden.mean(dim=1))
    image = BaseModelOutputWithPoolingAndNoAttention(last_hidden_state=torch.randn(4, 8, 2, 2),
                                                     pooler_output=torch.randn(4, 8, 1, 1))
    assert torch.equal(as_tensor(image), image.pooler_output.flatten(1))
    assert as_tensor({"logits": logits}) is logits
    with pytest.raises(TypeError):
        as_tensor(CausalLMOutput())


CLASSIFIER = '''
import "std"

model net = factory("hf_models:make_bert_classifier")
data texts = factory("hf_models:make_texts")

pipeline p(net) {
    quantize(bits = 8) on layers(Linear)
    budget {
        accuracy(texts) >= baseline.accuracy(texts) - 50%
        fidelity(texts) >= 50%
    }
}
'''


def test_task_head_accuracy_and_fidelity(tmp_path, monkeypatch, capsys):
    import hf_models
    import torch

    shutil.copy(HERE / "hf_models.py", tmp_path / "hf_models.py")
    (tmp_path / "cls.kmr").write_text(CLASSIFIER)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMR_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["check", str(tmp_path / "cls.kmr")]) == 0
    program, diags, _ = load_checked("cls.kmr")
    assert program is not None, diags
    outcome = PipelineSession(program, "p").evaluate({})
    x, y = hf_models.make_texts()
    with torch.no_grad():
        expected = float((hf_models.make_bert_classifier()(x).logits.argmax(-1) == y).float().mean())
    assert outcome.baseline["accuracy(texts)"] == pytest.approx(expected)
    assert 0.0 <= outcome.meters["accuracy(texts)"] <= 1.0
    # int8 keeps most argmaxes of a 3-class head; a wrong reading (e.g. hidden states)
    # would not even have 3 columns
    assert outcome.meters["fidelity(texts)"] >= 0.5
    assert outcome.feasible


# ---------------------------------------------------------------- explicit input scales

SCALED = """
import "std"

model net = factory("hf_models:make_bert_classifier")
data texts = factory("hf_models:make_texts")

pipeline p(net) {{
    {steps}
    budget {{
        params <= baseline.params
        size <= 2 * baseline.size
        macs <= baseline.macs
    }}
}}
"""

# post-norm BERT: no LayerNorm output is read by Linears alone, so every selected Linear
# keeps its scale as an explicit vector (`layer.input_scale`), counted by `size`
# (steps, the same without the scale)
BERT_SCALED_STEPS = {
    "smoothquant+static": ("smoothquant(calibration = texts, samples = 8) on layers(Linear)\n"
                           "    quantize(bits = 8, scheme = static, calibration = texts, samples = 8) on layers(Linear)",
                           "quantize(bits = 8, scheme = static, calibration = texts, samples = 8) on layers(Linear)"),
    "awq": ("awq(bits = 4, group_size = 8, calibration = texts, samples = 8) on layers(Linear)",
            "quantize(bits = 4, scheme = weight_only, group_size = 8) on layers(Linear)"),
}


@pytest.mark.parametrize("case", sorted(BERT_SCALED_STEPS))
def test_bert_explicit_input_scales_check_agrees_with_run(case, tmp_path, monkeypatch, capsys):
    from kmr_dsl.runtime import modules as km
    shutil.copy(HERE / "hf_models.py", tmp_path / "hf_models.py")
    path = tmp_path / "scaled.kmr"
    steps, plain = BERT_SCALED_STEPS[case]
    path.write_text(SCALED.format(steps=steps))
    (tmp_path / "plain.kmr").write_text(SCALED.format(steps=plain))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMR_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["check", "--format", "json", str(path)]) == 0
    (pipeline,) = json.loads(capsys.readouterr().out)["files"][0]["pipelines"]
    assert pipeline["verdict"] == "proved", pipeline
    program, diags, _ = load_checked(str(path))
    session = PipelineSession(program, "p")
    want, outcome = predict(program, "p", {}), session.evaluate({})
    linears = [n for n, layer in kl.logical_layers(session.baseline) if kl.kind_of(layer) == "Linear"]
    assert_agree(want, outcome.meters, layers=len(linears), slack=outside_entries(session.baseline))
    assert outcome.feasible
    model = session.apply({})
    scaled = [n for n, layer in kl.logical_layers(model) if isinstance(layer, km.ScaledLinear)]
    assert sorted(scaled) == sorted(linears)
    # the vectors' bytes are in the prediction, at both ends: against the same steps without them
    from kmr_dsl.verify.predict import size_range
    vectors = sum(4 * model.get_submodule(n).in_features for n in scaled)
    plain_program, _, _ = load_checked(str(tmp_path / "plain.kmr"))
    (low, high), (plain_low, plain_high) = size_range(program, "p", {}), size_range(plain_program, "p", {})
    assert low - plain_low >= vectors and high - plain_high >= vectors
    again = artifact.load(artifact_path(session, tmp_path), base_dir=tmp_path)
    import torch
    x = torch.arange(8).reshape(1, 8)
    torch.testing.assert_close(again(x).logits, model(x).logits, rtol=1e-5, atol=1e-5)


def artifact_path(session, tmp_path):
    path = tmp_path / "scaled.safetensors"
    artifact.save(session.apply({}), path, {"base": session.program.pipelines["p"].model.loader})
    return path


# ---------------------------------------------------------------- tied weights

LLAMA_STEPS = {
    "prune": 'prune(amount = 0.5) on layers(Linear, name = "lm_head")',
    "prune-all": "prune(amount = 0.5) on layers(Linear)",
    "int8": 'quantize(bits = 8) on layers(Linear, name = "lm_head")',
    "int4": "quantize(bits = 4, scheme = weight_only) on layers(Linear)",
    "prune+int8": "prune(amount = 0.5) on layers(Linear)\n    quantize(bits = 8) on layers(Linear)",
    "lowrank-untied-rest": 'lowrank(ratio = 0.25) on layers(Linear, name = "model.*")',
}


@pytest.mark.parametrize("case", sorted(LLAMA_STEPS))
def test_tied_llama_check_agrees_with_run(case, tmp_path, monkeypatch, capsys):
    want, outcome, session = check_and_run(tmp_path, monkeypatch, capsys, "make_llama", LLAMA_STEPS[case])
    assert_agree(want, outcome.meters, layers=15, slack=outside_entries(session.baseline))
    base = session.baseline
    # the tied table is counted once: the parameters torch sees (deduplicated)
    assert outcome.baseline["params"] == sum(p.numel() for p in base.parameters())
    model = session.apply({})
    # one table, transformed once: the embedding reads what lm_head now holds
    import torch
    from kmr_dsl.runtime import tied
    alias = model.model.embed_tokens
    assert isinstance(alias, tied.TiedEmbedding) and alias.owner is model.lm_head
    torch.testing.assert_close(alias.weight.float(), tied.table(model.lm_head).float())


def test_tied_layer_is_listed_as_tied(tmp_path, monkeypatch):
    shutil.copy(HERE / "hf_models.py", tmp_path / "hf_models.py")
    (tmp_path / "t.kmr").write_text('import "std"\nmodel net = factory("hf_models:make_llama")\n'
                                    'pipeline p(net) {\n    quantize(bits = 8) on layers(Embedding)\n}\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMR_CACHE_DIR", str(tmp_path / "cache"))
    program, diags, _ = load_checked("t.kmr")
    text = "\n".join(str(d.notes) for d in diags)
    assert any(d.code == "KMR214" for d in diags)
    assert "model.embed_tokens is tied to lm_head" in text


@pytest.mark.parametrize("factory", ["make_llama", "make_gpt2"])
def test_tied_artifact_stores_the_table_once_and_reloads_tied(factory, tmp_path):
    import hf_models
    import torch
    from safetensors import safe_open
    from kmr_dsl.facts import LoaderSpec
    from kmr_dsl.runtime import loaders, tied
    from kmr_dsl.rules import prune, quantize

    shutil.copy(HERE / "hf_models.py", tmp_path / "hf_models.py")
    spec = LoaderSpec("factory", (f"hf_models:{factory}",), (("tied", True),), str(tmp_path))
    model = loaders.load_model(spec)
    owner = "lm_head"
    alias = "model.embed_tokens" if factory == "make_llama" else "transformer.wte"
    assert tied.tied_names(model) == {owner: (alias,)}
    prune.apply(model, kl.select_layers(model, ("Linear",), owner), amount=0.5)
    quantize.apply(model, kl.select_layers(model, ("Linear",), owner), bits=4, scheme="weight_only")
    path = tmp_path / "m.safetensors"
    artifact.save(model, path, {"base": spec})
    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
    assert not any(k.startswith(alias + ".") for k in keys)      # stored once, under lm_head
    assert any(k.startswith(owner + ".") for k in keys)
    again = artifact.load(path, base_dir=tmp_path)
    assert again.get_submodule(alias).owner is again.lm_head
    x = torch.arange(8).reshape(1, 8) % 64
    torch.testing.assert_close(again(x).logits, model(x).logits)
    assert meters.params(again) == meters.params(model) == sum(p.numel() for p in again.parameters()) + \
        again.lm_head.numel
    # a fresh instance passed by hand (not through a loader) is linked the same way
    fresh = getattr(hf_models, factory)(tied=True)
    by_hand = artifact.load(path, base=fresh)
    assert by_hand.get_submodule(alias).owner is by_hand.lm_head
    torch.testing.assert_close(by_hand(x).logits, model(x).logits)


def test_factoring_a_tied_layer_is_refused_by_check_and_by_the_rule(tmp_path, monkeypatch, capsys):
    import hf_models
    from kmr_dsl.diagnostics import KmrError
    from kmr_dsl.rules import lowrank
    from kmr_dsl.runtime import tied

    path = write_program(tmp_path, "make_llama", 'lowrank(ratio = 0.5) on layers(Linear, name = "lm_head")')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMR_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["check", str(path)]) != 0
    err = capsys.readouterr().err
    assert "error[KMR245]" in err and "arch.kmr:7:29:" in err and "model.embed_tokens" in err
    model = tied.link(hf_models.make_llama())
    with pytest.raises(KmrError) as info:
        lowrank.apply(model, kl.select_layers(model, ("Linear",), "lm_head"), ratio=0.5)
    assert info.value.diagnostic.code == "KMR405"


# ---------------------------------------------------------------- channel groups (residual blocks)

def test_depgraph_groups_residual_streams():
    import hf_models
    import toy_models
    import torch
    from kmr_dsl.runtime import depgraph

    # a Sequential chain: the trace finds exactly the chain's links (norms, flatten blocks)
    cnn = toy_models.make_cnn()
    traced = depgraph.channel_links(cnn, torch.randn(1, 3, 8, 8))
    chained = kl.channel_links(cnn)
    assert {k: (v.consumers, v.norms) for k, v in traced.items()} == \
        {k: (v.consumers, v.norms) for k, v in chained.items()}
    # ResNet: the first conv of each block feeds only its BatchNorm and the second conv;
    # the stem, the block outputs and the projection shortcut write residual streams,
    # each one group whose members lose the same channels
    resnet = hf_models.make_resnet()
    x = torch.randn(1, 3, 32, 32)
    links = depgraph.channel_links(resnet, x)
    for s in (0, 1):
        first = f"resnet.encoder.stages.{s}.layers.0.layer.0.convolution"
        assert links[first].names == (f"resnet.encoder.stages.{s}.layers.0.layer.0.normalization",
                                      f"resnet.encoder.stages.{s}.layers.0.layer.1.convolution")
        assert links[first].coupled == []
    stream1 = links["resnet.encoder.stages.1.layers.0.layer.1.convolution"]
    assert stream1.coupled == ["resnet.encoder.stages.1.layers.0.shortcut.convolution"]
    assert set(stream1.norms) == {"resnet.encoder.stages.1.layers.0.layer.1.normalization",
                                  "resnet.encoder.stages.1.layers.0.shortcut.normalization"}
    assert stream1.consumers == [("classifier.1", 1)]
    stream0 = links["resnet.embedder.embedder.convolution"]
    assert stream0.coupled == ["resnet.encoder.stages.0.layers.0.layer.1.convolution"]
    assert {c for c, _ in stream0.consumers} == {
        "resnet.encoder.stages.0.layers.0.layer.0.convolution", "resnet.encoder.stages.1.layers.0.layer.0.convolution",
        "resnet.encoder.stages.1.layers.0.shortcut.convolution"}
    # the classifier's outputs are the model's: never linked, and the trace says why
    assert "classifier.1" not in links
    assert depgraph.refusals(resnet, x)["classifier.1"] == "they are an output of the model"
    bottleneck = depgraph.channel_links(hf_models.make_resnet("bottleneck"), x)
    # two inner groups per block, two members of each stream
    assert len(bottleneck) == 4 + 4
    assert all(len(v.coupled) == (".layer.2." in k or "embedder" in k or "shortcut" in k) for k, v in bottleneck.items())


RESNET = "hf_resnet:make_resnet"


def test_resnet_channel_pruning_check_agrees_with_run(tmp_path, monkeypatch, capsys):
    steps = 'prune(amount = 0.5, method = channel) on layers(Conv2d, name = "*.layer.0.convolution")'
    want, outcome, session = check_and_run(tmp_path, monkeypatch, capsys, RESNET, steps)
    # BatchNorm running statistics are header entries the size bound counts (verify/layer_cost.py)
    assert want["size"] >= outcome.meters["size"]
    assert_agree(want, outcome.meters, layers=0, slack=outside_entries(session.baseline))
    assert outcome.meters["macs"] < outcome.baseline["macs"]
    model = session.apply({})
    block = model.resnet.encoder.stages[1].layers[0].layer
    assert block[0].convolution.out_channels == 8 and block[0].normalization.num_features == 8
    assert block[1].convolution.in_channels == 8
    import torch
    assert model(torch.randn(2, 3, 32, 32)).logits.shape == (2, 5)


def test_resnet_channel_pruning_of_the_output_layer_is_refused_by_check(tmp_path, monkeypatch, capsys):
    steps = 'prune(amount = 0.5, method = channel) on layers(Linear, name = "classifier.*")'
    path = write_program(tmp_path, RESNET, steps)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMR_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["check", str(path)]) != 0
    err = capsys.readouterr().err
    assert "error[KMR304]" in err and "arch.kmr:7:" in err
    assert "`classifier.1`'s channels cannot be removed: they are an output of the model" in err


def test_mobilenet_v3_channel_pruning_of_the_logits_is_refused_by_check(tmp_path, monkeypatch, capsys):
    # the hidden Linear of the classifier is prunable, the logits are not: refused at check
    steps = "prune(amount = 0.5, method = channel) on layers(Linear)"
    path = write_program(tmp_path, "mobilenet_v3:make_mobilenet_v3", steps)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMR_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["check", str(path)]) != 0
    err = capsys.readouterr().err
    assert "error[KMR304]" in err and "arch.kmr:7:" in err
    assert "`classifier.3`'s channels cannot be removed: they are an output of the model" in err
    assert "classifier.0" not in err


@pytest.mark.parametrize("rule", ["gptq", "sparsegpt", "smoothquant", "awq"])
def test_calibrated_rules_take_gpt2_conv1d(rule):
    import importlib

    import hf_models
    import torch
    from kmr_dsl.runtime.data import Dataset

    model = hf_models.make_gpt2()
    x = torch.arange(8).reshape(1, 8) % 64
    before = model(x).logits
    data = Dataset(torch.randint(0, 64, (16, 8), generator=torch.Generator().manual_seed(0)), None, "tokens")
    layers = kl.select_layers(model, ("Linear",), "*.mlp.c_fc")
    kwargs = {"gptq": {"bits": 8, "group_size": 0}, "sparsegpt": {"amount": 0.5}, "smoothquant": {},
              "awq": {"bits": 8, "group_size": 0}}[rule]
    importlib.import_module(f"kmr_dsl.rules.{rule}").apply(model, layers, calibration=data, samples=16, **kwargs)
    for name, layer in kl.select_layers(model, ("Linear",), "*.mlp.c_fc"):
        assert not kl.is_conv1d(layer), name
    after = model(x).logits
    assert after.shape == before.shape
    # a calibrated 8-bit / half-sparse FFN input keeps the outputs close (a transposed
    # weight would not)
    assert torch.nn.functional.cosine_similarity(after.flatten(), before.flatten(), dim=0) > 0.9


# ---------------------------------------------------------------- gated units (SwiGLU)

SWIGLU_STEPS = {
    # one projection of the pair selected: the group (gate, up, down's inputs) is pruned
    "gate": 'prune(amount = 0.25, method = channel) on layers(Linear, name = "*.mlp.gate_proj")',
    "up": 'prune(amount = 0.5, method = channel) on layers(Linear, name = "*.mlp.up_proj")',
    # both selected in one step: the group is pruned once, not twice
    "both": 'prune(amount = 0.5, method = channel) on layers(Linear, name = ["*.gate_proj", "*.up_proj"])',
    # two steps compound, then quantization of the smaller layers
    "twice+int4": 'prune(amount = 0.5, method = channel) on layers(Linear, name = "*.gate_proj")\n'
                  '    prune(amount = 0.5, method = channel) on layers(Linear, name = "*.up_proj")\n'
                  "    quantize(bits = 4, scheme = weight_only) on layers(Linear)",
}


def test_depgraph_couples_a_gated_unit():
    import hf_models
    import torch
    from kmr_dsl.runtime import depgraph

    links = depgraph.channel_links(hf_models.make_llama(), torch.zeros(1, 8, dtype=torch.long))
    for i in (0, 1):
        mlp = f"model.layers.{i}.mlp"
        assert links[f"{mlp}.gate_proj"].coupled == [f"{mlp}.up_proj"]
        assert links[f"{mlp}.up_proj"].coupled == [f"{mlp}.gate_proj"]
        assert links[f"{mlp}.gate_proj"].consumers == [(f"{mlp}.down_proj", 1)]
    # a residual stream (a sum of producers) is not linked here
    assert not any(k.endswith(("o_proj", "down_proj")) for k in links)


@pytest.mark.parametrize("case", sorted(SWIGLU_STEPS))
def test_swiglu_channel_pruning_check_agrees_with_run(case, tmp_path, monkeypatch, capsys):
    import torch

    want, outcome, session = check_and_run(tmp_path, monkeypatch, capsys, "make_llama", SWIGLU_STEPS[case])
    assert outcome.meters["params"] < outcome.baseline["params"]
    assert_agree(want, outcome.meters, layers=15, slack=outside_entries(session.baseline))
    assert outcome.meters["nonzero"] == want["nonzero"]       # no unstructured rounding: exact
    assert outcome.feasible
    model = session.apply({})
    kept = {"gate": 24, "up": 16, "both": 16, "twice+int4": 8}[case]
    for i in (0, 1):
        mlp = model.model.layers[i].mlp
        assert kl.layer_features(mlp.gate_proj)[1] == kl.layer_features(mlp.up_proj)[1] == kept
        assert kl.layer_features(mlp.down_proj)[0] == kept
    assert model(torch.zeros(2, 8, dtype=torch.long)).logits.shape == (2, 8, 64)


def test_swiglu_group_removes_the_same_channels_ranked_by_their_sum():
    import hf_models
    import torch
    from kmr_dsl.rules import prune

    model = hf_models.make_llama()
    mlp = model.model.layers[0].mlp
    gate, up, down = (m.weight.detach().clone() for m in (mlp.gate_proj, mlp.up_proj, mlp.down_proj))
    score = gate.norm(dim=1) + up.norm(dim=1)
    idx = torch.sort(torch.topk(score, 16).indices).values
    from kmr_dsl.runtime import context
    with context.use(context.RunContext(example=((1, 8), "int64"))):
        prune.apply(model, [("model.layers.0.mlp.up_proj", mlp.up_proj)], amount=0.5, method="channel")
    mlp = model.model.layers[0].mlp
    torch.testing.assert_close(mlp.gate_proj.weight, gate[idx])
    torch.testing.assert_close(mlp.up_proj.weight, up[idx])
    torch.testing.assert_close(mlp.down_proj.weight, down[:, idx])


def test_scaling_a_tied_layer_is_refused_by_check_and_by_the_rule(tmp_path, monkeypatch, capsys):
    """A migrated scale multiplies the weight's columns, which the tied embedding reads
    as its table: `kmr check` refuses smoothquant and awq there (KMR245), the rule too."""
    import hf_models
    from kmr_dsl.diagnostics import KmrError
    from kmr_dsl.rules import smoothquant
    from kmr_dsl.runtime import tied
    from kmr_dsl.runtime.data import Dataset

    (tmp_path / "ids.py").write_text("import torch\n\ndef load():\n    return torch.zeros(4, 8, dtype=torch.long)\n")
    path = write_program(tmp_path, "make_llama", 'smoothquant(calibration = ids) on layers(Linear, name = "lm_head")')
    path.write_text(path.read_text().replace('model net = factory("hf_models:make_llama")',
                                             'model net = factory("hf_models:make_llama")\ndata ids = factory("ids:load")'))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMR_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["check", str(path)]) != 0
    err = capsys.readouterr().err
    assert "error[KMR245]" in err and "`smoothquant` cannot scale `lm_head`" in err
    model = tied.link(hf_models.make_llama())
    import torch
    data = Dataset(torch.zeros(4, 8, dtype=torch.long), None, "ids")
    with pytest.raises(KmrError) as info:
        smoothquant.apply(model, kl.select_layers(model, ("Linear",), "lm_head"), calibration=data)
    assert info.value.diagnostic.code == "KMR405" and "tied" in info.value.diagnostic.message
