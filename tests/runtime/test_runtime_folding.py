"""`layer.foldable`: the model facts say which Linears a scale folds into (smoothquant,
awq), read by the same trace the rules fold by (runtime.norms), so `kmr check` predicts
exactly what `kmr run` does: a Linear no normalization feeds alone keeps its scale as an
explicit vector (`layer.input_scale`, counted by `size`), a selection that leaves a
reader of the norm out is refused (KMR306), an unmerged adapter too (`requires
layer.adapter_rank == 0`). A pre-norm model is proved and runs."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from kmr_dsl.app import load_checked
from kmr_dsl.cli import main
from kmr_dsl.diagnostics import KmrError
from kmr_dsl.facts import ModelFacts
from kmr_dsl.runtime import introspect, norms, state, tied
from kmr_dsl.runtime.session import PipelineSession

HERE = Path(__file__).resolve().parent

BLOCK = '''
import torch
import torch.nn as nn

WIDTH = 8


class Block(nn.Module):
    """Pre-norm: `norm` feeds q and k only (the residual reads x); `norm2` feeds up."""

    def __init__(self):
        super().__init__()
        self.norm, self.q, self.k = nn.LayerNorm(WIDTH), nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH)
        self.norm2, self.up, self.down = nn.LayerNorm(WIDTH), nn.Linear(WIDTH, 16), nn.Linear(16, 3)
        with torch.no_grad():
            self.norm.weight[:2] = 20.0

    def forward(self, x):
        h = self.norm(x)
        x = x + self.q(h) * torch.sigmoid(self.k(h))
        return self.down(torch.relu(self.up(self.norm2(x))))


def make(seed: int = 0):
    torch.manual_seed(seed)
    return Block().eval()


def example_input():
    return torch.zeros(1, WIDTH)


def data(n: int = 32):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, WIDTH, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def tokens(n: int = 16):
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, 64, (n, 8), generator=gen), torch.randint(0, 3, (n,), generator=gen)
'''

PROGRAM = '''
import "std"
model net = factory("{factory}")
data calib = factory("{data}")
{knobs}
pipeline p(net) {{
    {steps}
    budget {{
        params <= baseline.params
    }}
}}
'''


def write(tmp_path, monkeypatch, steps: str, factory: str = "block:make", data: str = "block:data",
          knobs: str = "") -> Path:
    (tmp_path / "block.py").write_text(BLOCK)
    shutil.copy(HERE / "hf_models.py", tmp_path / "hf_models.py")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMR_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "fold.kmr"
    path.write_text(PROGRAM.format(factory=factory, data=data, knobs=knobs, steps=steps))
    return path


def check(path: Path, capsys) -> tuple[int, dict, str]:
    """(exit code, the pipeline's JSON report, the text diagnostics)."""
    code = main(["check", "--format", "json", str(path)])
    (pipeline,) = json.loads(capsys.readouterr().out)["files"][0]["pipelines"]
    assert main(["check", str(path)]) == code
    return code, pipeline, capsys.readouterr().err


def session(path: Path) -> PipelineSession:
    program, diags, _ = load_checked(str(path))
    assert program is not None, diags
    return PipelineSession(program, "p")


def _facts(model, shape, dtype="float32"):
    tied.link(model)
    return introspect.model_facts_from_module(model, shape, dtype)


# ---------------------------------------------------------------- the facts

def test_facts_group_the_linears_a_norm_feeds_and_the_measured_state_agrees():
    module: dict = {}
    exec(compile(BLOCK, "block.py", "exec"), module)
    model = module["make"]()
    facts = _facts(model, (1, 8))
    folds = {f.name: (f.fold_norm, f.fold_group) for f in facts.layers if f.foldable}
    assert folds == {"q": ("norm", ("k", "q")), "k": ("norm", ("k", "q")), "up": ("norm2", ("up",))}
    assert ModelFacts.from_json(json.loads(json.dumps(facts.to_json()))) == facts
    measured = state.measure_state(model)
    assert {n for n, st in measured["layers"].items() if st["foldable"]} == set(folds)


def test_real_architectures_fold_groups():
    import hf_models
    llama = _facts(hf_models.make_llama(), (1, 8), "int64")
    group = {f.name: f.fold_group for f in llama.layers if f.foldable}
    attn = tuple(f"model.layers.0.self_attn.{p}_proj" for p in ("k", "q", "v"))
    mlp = tuple(f"model.layers.0.mlp.{p}_proj" for p in ("gate", "up"))
    assert group[attn[1]] == attn and group[mlp[1]] == mlp
    assert llama.layer(attn[0]).fold_norm == "model.layers.0.input_layernorm"
    # o_proj reads attention, down_proj a product; lm_head is tied to the embedding
    assert not any(n.endswith(("o_proj", "down_proj", "lm_head")) for n in group)
    # post-norm BERT: every LayerNorm's output also feeds a residual addition
    bert = _facts(hf_models.make_bert_classifier(), (1, 8), "int64")
    assert not any(f.foldable for f in bert.layers)
    # GPT-2's Conv1D c_attn and c_fc read ln_1 and ln_2 alone
    gpt2 = _facts(hf_models.make_gpt2(), (1, 8), "int64")
    assert {f.name for f in gpt2.layers if f.foldable} == {f"transformer.h.{i}.{n}" for i in (0, 1)
                                                           for n in ("attn.c_attn", "mlp.c_fc")}


def test_a_residual_read_or_a_foreign_op_makes_a_norm_unfoldable():
    class Post(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.norm, self.fc = torch.nn.LayerNorm(4), torch.nn.Linear(4, 4)

        def forward(self, x):
            h = self.norm(x)
            return h + self.fc(h)

    readers = norms.norm_readers(Post(), torch.randn(2, 4))
    assert readers == {"norm": {"fc", "`add`"}}
    assert norms.fold_groups(Post(), torch.randn(2, 4)) == {}


# ---------------------------------------------------------------- check agrees with run

def test_a_linear_no_norm_feeds_takes_an_explicit_vector_that_check_counts(tmp_path, monkeypatch, capsys):
    from kmr_dsl.runtime import modules as km
    from kmr_dsl.verify.predict import size_range
    path = write(tmp_path, monkeypatch, 'smoothquant(calibration = calib) on layers(Linear, name = "down")')
    code, pipeline, err = check(path, capsys)
    assert code == 0 and pipeline["verdict"] == "proved", err
    program, _, _ = load_checked(str(path))
    s = session(path)
    model = s.apply({})
    assert isinstance(model.down, km.ScaledLinear) and model.down.input_scale.numel() == 16
    x = torch.randn(16, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x), s.baseline(x), rtol=1e-4, atol=1e-4)
    from kmr_dsl.runtime import artifact
    written = artifact.nbytes(model, {"base": program.pipelines["p"].model.loader, "pipeline": "p"})
    low, high = size_range(program, "p", {})
    assert low <= written <= high
    base_low, base_high = size_range(program, "p", {}, baseline=True)
    assert low - base_low >= 16 * 4          # the vector's 16 fp32 values at least, on both ends


def test_check_refuses_part_of_a_fold_group_and_so_does_run(tmp_path, monkeypatch, capsys):
    path = write(tmp_path, monkeypatch, 'awq(bits = 4, group_size = 0, calibration = calib) on layers(Linear, name = "q")')
    code, pipeline, err = check(path, capsys)
    assert code == 1 and pipeline["verdict"] == "refuted"
    assert "error[KMR306]" in err and "`q` reads the output of `norm`, which `k` also read(s)" in err
    with pytest.raises(KmrError, match="also read") as exc:
        session(path).evaluate({})
    assert exc.value.diagnostic.code == "KMR405"


def test_check_proves_a_whole_group_and_run_keeps_the_function(tmp_path, monkeypatch, capsys):
    path = write(tmp_path, monkeypatch, 'smoothquant(calibration = calib) on layers(Linear, name = ["q", "k", "up"])')
    code, pipeline, _ = check(path, capsys)
    assert code == 0 and pipeline["verdict"] == "proved", pipeline
    s = session(path)
    model = s.apply({})
    x = torch.randn(16, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x), s.baseline(x), rtol=1e-4, atol=1e-4)
        assert not torch.equal(model.norm.weight, s.baseline.norm.weight)     # a scale was folded


def test_lowrank_before_smoothquant_a_factorized_reader_gets_a_vector(tmp_path, monkeypatch, capsys):
    from kmr_dsl.runtime import modules as km
    steps = 'lowrank(ratio = r) on layers(Linear, name = "q")\n' \
            '    smoothquant(calibration = calib) on layers(Linear, name = ["q", "k"])'
    path = write(tmp_path, monkeypatch, steps, knobs="knob r : float in [0.25, 1.0] step 0.75 = 1.0")
    code, pipeline, err = check(path, capsys)
    assert code == 0, err
    s = session(path)
    x = torch.randn(16, 8)
    whole = s.apply({"r": 1.0})             # one Linear stays: the fold takes q and k
    assert not isinstance(whole.q, km.ScaledLinear)
    factored = s.apply({"r": 0.25})         # 2 * (8 + 8) < 64: two Linears, q keeps its own vector
    assert isinstance(factored.q, km.ScaledLinear) and isinstance(factored.q.linear, km.FactorizedLinear)
    assert not isinstance(factored.k, km.ScaledLinear)
    with torch.no_grad():
        torch.testing.assert_close(whole(x), s.baseline(x), rtol=1e-4, atol=1e-4)
    from kmr_dsl.verify.predict import size_range
    program, _, _ = load_checked(str(path))
    for r in (1.0, 0.25):
        low, high = size_range(program, "p", {"r": r})
        assert low <= s.evaluate({"r": r}).meters["size"] <= high


def test_an_unmerged_adapter_takes_no_scale(tmp_path, monkeypatch, capsys):
    steps = 'lora(data = calib, rank = 2, merge = m, batch_size = 16) on layers(Linear, name = "up")\n' \
            '    smoothquant(calibration = calib) on layers(Linear, name = "up")'
    path = write(tmp_path, monkeypatch, steps, knobs="knob m : bool = true")
    code, pipeline, err = check(path, capsys)
    assert code == 1 and "counterexample: m = false" in err and "adapter_rank == 0" in err
    s = session(path)
    s.evaluate({"m": True})
    with pytest.raises(KmrError, match="adapter"):
        s.evaluate({"m": False})


def test_llama_smoothquant_and_awq_proved_and_run(tmp_path, monkeypatch, capsys):
    sel = 'layers(Linear, name = "re:.*(q|k|v|gate|up)_proj$")'
    steps = f"smoothquant(calibration = calib, samples = 8) on {sel}\n" \
            f"    awq(bits = 8, group_size = 0, calibration = calib, samples = 8) on {sel}"
    path = write(tmp_path, monkeypatch, steps, factory="hf_models:make_llama", data="block:tokens")
    code, pipeline, _ = check(path, capsys)
    assert code == 0 and pipeline["verdict"] == "proved", pipeline
    s = session(path)
    model = s.apply({})
    x = torch.arange(8).reshape(1, 8)
    with torch.no_grad():
        got, want = model(x).logits.flatten(), s.baseline(x).logits.flatten()
    assert torch.nn.functional.cosine_similarity(got, want, dim=0) > 0.99


def test_bert_takes_explicit_vectors_and_keeps_its_function(tmp_path, monkeypatch, capsys):
    from kmr_dsl.runtime import modules as km
    path = write(tmp_path, monkeypatch, 'smoothquant(calibration = calib, samples = 8) on layers(Linear, name = "*.query")',
                 factory="hf_models:make_bert_classifier", data="block:tokens")
    code, pipeline, err = check(path, capsys)
    assert code == 0 and pipeline["verdict"] == "proved", err
    s = session(path)
    model = s.apply({})
    queries = [m for n, m in model.named_modules() if n.endswith(".query")]
    assert queries and all(isinstance(m, km.ScaledLinear) for m in queries)
    x = torch.arange(8).reshape(1, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, s.baseline(x).logits, rtol=1e-4, atol=1e-4)


def test_the_facts_cache_keeps_fold_groups_and_misses_facts_from_before_them(tmp_path, monkeypatch):
    from kmr_dsl import facts as kfacts
    from kmr_dsl.app import facts_provider
    from kmr_dsl.diagnostics import Span

    write(tmp_path, monkeypatch, "")
    spec = kfacts.LoaderSpec("factory", ("block:make",), (), str(tmp_path))
    first = facts_provider(spec, True, Span.unknown())
    assert first.layer("q").fold_group == ("k", "q")
    assert kfacts.load_cached(spec) == first          # stored, and read back with its groups
    (path,) = (tmp_path / "cache").glob("facts-*.json")
    old = json.loads(path.read_text())
    old["version"] = 3                                # facts written before fold groups existed
    for layer in old["layers"]:
        layer.pop("fold_norm"), layer.pop("fold_group")
    path.write_text(json.dumps(old))
    assert kfacts.load_cached(spec) is None
    assert facts_provider(spec, True, Span.unknown()).layer("q").fold_group == ("k", "q")
