"""Small artifacts for the export tests, written with the runtime's own save()."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from kmr_dsl.facts import LoaderSpec
from kmr_dsl.runtime import int8_kernels as k8
from kmr_dsl.runtime import artifact, layers as kl, modules as km, quant

MLP = textwrap.dedent("""
    import torch
    import torch.nn as nn

    class Spectral(nn.Module):
        def forward(self, x):
            return torch.fft.rfft(x).abs()

    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))

    def make_spectral():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(16, 16), Spectral())
""")


# two small transformers decoders built from configs (no download), for the export tests
# that need a real architecture; a test module adds its own models after these
DECODERS = textwrap.dedent("""
    import torch
    import transformers


    def make_gpt2():
        torch.manual_seed(0)
        cfg = transformers.GPT2Config(vocab_size=128, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                      use_cache=False, bos_token_id=0, eos_token_id=0)
        return transformers.GPT2LMHeadModel(cfg).eval()


    def make_llama():
        torch.manual_seed(0)
        cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                       tie_word_embeddings=False, use_cache=False)
        return transformers.LlamaForCausalLM(cfg).eval()
""")


def program_module(tmp_path, monkeypatch, name: str, source: str):
    """A program folder holding the module `name` (its factories), importable while the
    test runs and forgotten after it (a generator: `yield from` it in a fixture)."""
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop(name, None)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    yield from program_module(tmp_path, monkeypatch, "tinymlp", MLP)


def save(model, folder, spec: LoaderSpec, name="out"):
    path = folder / name / "model.safetensors"
    artifact.save(model, path, {"base": spec})
    return path


def mlp_spec(folder, fn="make"):
    return LoaderSpec("factory", (f"tinymlp:{fn}",), (), str(folder))


def quantize_layers(model, how: dict[str, str]):
    """{layer: "dynamic" | "int8" | "int4" | "half" | "prune"} applied with the runtime's modules."""
    for name, kind in how.items():
        layer = kl.get_module(model, name)
        w = layer.weight.detach()
        if kind == "dynamic":
            q, s = quant.quantize(w, 8)
            kl.set_module(model, name, k8.dynamic_linear(q, s, layer.bias))
        elif kind in ("int8", "int4", "int2"):
            kl.set_module(model, name, km.quantized_leaf(layer, w, int(kind[3:])))
        elif kind == "half":
            km.to_half(layer)
        elif kind == "prune":
            with torch.no_grad():
                layer.weight[layer.weight.abs() < layer.weight.abs().median()] = 0
    return model


@pytest.fixture
def mlp_artifact(folder):
    import tinymlp

    model = quantize_layers(tinymlp.make(), {"0": "dynamic", "2": "int8", "4": "prune"})
    return save(model, folder, mlp_spec(folder)), model
