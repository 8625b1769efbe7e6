"""Models too big to load: meta-device factories and `hf(PATH, weights = false)`.

A Llama-shaped config.json (tiny hidden size) is written here; nothing is downloaded.
`kmr check` reads facts off the meta model (densities 1, no `.item()`), verifies
per-layer bit and sparsity families against three budget lines, and `kmr run`'s loader
refuses the same model (KMR412).
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from kmr_dsl.check import check_source
from kmr_dsl.diagnostics import KmrError, render_all
from kmr_dsl.facts import LoaderSpec
from kmr_dsl.runtime import introspect, loaders
from kmr_dsl.verify import Verdict, verify

transformers = pytest.importorskip("transformers")

LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 32,
         "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2,
         "vocab_size": 128, "max_position_embeddings": 256, "tie_word_embeddings": False}

PROGRAM = """import "std"
model llm = hf("{folder}", weights = false)
knob s[l in layers(Linear)] : float in [0.0, 0.9] step 0.1 = 0.0
knob b[l in layers(Linear)] : int in {{4, 8, 16}} = 16
pipeline compress(llm) {{
    for l in layers(Linear) {{
        prune(amount = s[l])
        quantize(bits = b[l])
    }}
    budget {{
        size <= {size}% * baseline.size
        nonzero >= 50% * baseline.nonzero
        params <= baseline.params
    }}
}}
"""


def provider(spec, trust, span):
    return introspect.model_facts(spec, trust=trust, span=span)


@pytest.fixture
def llama(tmp_path):
    folder = tmp_path / "llama"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA))
    return folder


def test_hf_without_weights_is_a_meta_architecture_with_its_head(llama):
    spec = LoaderSpec("hf", (str(llama),), (("weights", False),), str(llama.parent))
    model = loaders.load_model(spec, allow_meta=True)
    assert loaders.is_meta(model) and type(model).__name__ == "LlamaForCausalLM"
    facts = introspect.model_facts(spec)
    linears = [l for l in facts.layers if l.kind == "Linear"]
    assert len(linears) == 3 * 7 + 1                         # 7 projections per block + lm_head
    assert [l.kind for l in facts.layers].count("Embedding") == 1
    assert all(l.density == 1.0 and l.bits == 32 for l in facts.layers if l.weight_params)
    assert facts.total_macs > 0                               # counted on the meta device


def test_run_refuses_a_model_without_weights(llama):
    spec = LoaderSpec("hf", (str(llama),), (("weights", False),), str(llama.parent))
    with pytest.raises(KmrError) as info:
        loaders.load_model(spec)
    assert info.value.diagnostic.code == "KMR412"


@pytest.mark.parametrize("size,verdict", [(40, Verdict.PROVED), (5, Verdict.REFUTED)])
def test_check_a_meta_llama_with_families_and_three_lines(llama, size, verdict):
    src = PROGRAM.format(folder=llama.name, size=size)
    program, diags = check_source(src, str(llama.parent / "llm.kmr"), facts_provider=provider)
    assert program is not None, render_all(diags)
    report = verify(program)
    feas = next(r for r in report.results if r.kind == "feasibility")
    assert feas.verdict is verdict, report.dumps()
    families = {r.family for r in report.results if r.family}
    assert len(report.render()) == len(families) + 1           # one line per precondition family + the budget


def test_weights_of_hf_must_be_false(llama):
    src = PROGRAM.format(folder=llama.name, size=40).replace("weights = false", 'weights = "w.safetensors"')
    _, diags = check_source(src, str(llama.parent / "llm.kmr"), facts_provider=provider)
    assert any(d.code == "KMR211" and "`weights` of `hf`" in d.message for d in diags)


def test_factory_returning_a_meta_model(tmp_path, monkeypatch):
    (tmp_path / "meta_mlp.py").write_text(
        "import torch, torch.nn as nn\n"
        "def make():\n"
        "    with torch.device('meta'):\n"
        "        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))\n")
    spec = LoaderSpec("factory", ("meta_mlp:make",), (("input_shape", "1, 8"),), str(tmp_path))
    facts = introspect.model_facts(spec)
    assert [l.density for l in facts.layers] == [1.0, 1.0] and facts.input_shape == (1, 8)
    assert facts.total_macs == 8 * 16 + 16 * 4
    with pytest.raises(KmrError) as info:
        loaders.load_model(spec)
    assert info.value.diagnostic.code == "KMR412"


def test_kmr404_hint_can_be_written_in_the_language(tmp_path):
    (tmp_path / "convnet.py").write_text(
        "import torch.nn as nn\n"
        "def make():\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))\n")
    spec = LoaderSpec("factory", ("convnet:make",), (), str(tmp_path))
    with pytest.raises(KmrError) as info:
        introspect.model_facts(spec)
    hint = info.value.diagnostic.hint
    assert 'input_shape = "1, 3, 32, 32"' in hint and "[1, C, H, W]" not in hint
    spec = LoaderSpec("factory", ("convnet:make",), (("input_shape", "1, 3, 8, 8"),), str(tmp_path))
    assert introspect.model_facts(spec).input_shape == (1, 3, 8, 8)


MASKED_LLAMA = '''
import torch
import torch.nn as nn
from transformers import LlamaConfig, LlamaModel


class Masked(nn.Module):
    """A Llama that passes its own attention mask and positions (as a sentence encoder does)."""

    def __init__(self, attention):
        super().__init__()
        torch.manual_seed(0)
        self.body = LlamaModel(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                           num_attention_heads=4, num_key_value_heads=2, head_dim=4,
                                           max_position_embeddings=64, attn_implementation=attention))

    def forward(self, ids):
        mask = (ids != 0).long()
        positions = torch.arange(ids.shape[1], device=ids.device)[None].expand(ids.shape[0], -1)
        return self.body(ids, attention_mask=mask, position_ids=positions).last_hidden_state


class Reads(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(x) * float(x.abs().max())     # reads a value


def make(meta=True, attention="sdpa"):
    if not meta:
        return Masked(attention).eval()
    with torch.device("meta"):
        return Masked(attention).eval()


def make_reads():
    with torch.device("meta"):
        return Reads()
'''


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_meta_llama_that_passes_an_attention_mask(tmp_path, monkeypatch, attention):
    """transformers' sdpa mask code asks `.all()` of an attention mask (`.item()`, which a
    meta tensor cannot answer): the meta forward runs on fake tensors, and its facts are
    the real model's, densities aside."""
    (tmp_path / "masked_llama.py").write_text(MASKED_LLAMA)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = LoaderSpec("factory", ("masked_llama:make",), (("input_shape", "1, 12"), ("input_dtype", "int64"),
                                                          ("attention", attention)), str(tmp_path))
    meta = introspect.model_facts(spec)
    import masked_llama
    real = introspect.model_facts_from_module(masked_llama.make(False, attention), (1, 12), "int64")
    fields = ("name", "kind", "weight_shape", "macs", "consumers", "coupled", "heads", "head_group", "fold_group")
    assert [tuple(getattr(f, k) for k in fields) for f in meta.layers] == \
           [tuple(getattr(f, k) for k in fields) for f in real.layers]
    assert any(f.heads == 2 for f in meta.layers) and any(f.coupled for f in meta.layers)
    if attention == "eager":    # torch's CPU flash kernel (sdpa on real tensors) counts no FLOPs
        assert meta.total_macs == real.total_macs > 0


def test_meta_forward_that_reads_a_value_is_located(tmp_path, monkeypatch):
    (tmp_path / "masked_llama.py").write_text(MASKED_LLAMA)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = LoaderSpec("factory", ("masked_llama:make_reads",), (("input_shape", "1, 8"),), str(tmp_path))
    from kmr_dsl.diagnostics import Span
    span = Span("m.kmr", 2, 1, 2, 30)
    with pytest.raises(KmrError) as info:
        introspect.model_facts(spec, span=span)
    assert info.value.diagnostic.code == "KMR412" and info.value.diagnostic.span == span
    assert "reads a tensor's value" in info.value.diagnostic.message


@pytest.mark.parametrize("text,note", [('{"model_type": "nosuch", "hidden_size": 8}', "nosuch"),
                                       ('{"model_type": "llama", "hidden_size": 32', "valid JSON")])
def test_a_config_transformers_cannot_read_is_located(tmp_path, text, note):
    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "config.json").write_text(text)
    src = 'import "std"\nmodel llm = hf("cfg", weights = false)\npipeline p(llm) { quantize(bits = 8) on layers(Linear) }\n'
    _, diags = check_source(src, str(tmp_path / "llm.kmr"), facts_provider=provider)
    (diag,) = [d for d in diags if d.code == "KMR402"]
    assert (diag.span.line, diag.span.col) == (2, 1) and note in diag.notes[0]
    assert "config.json" in diag.hint and "\n" not in diag.notes[0]
