"""`kmr search` over a per-layer width family {4, 8, 16} where each width is a GPTQ step:
the shape of examples/minilm/mixed.kmr, on a 4-Linear MLP small enough for CI.

The model's weights are heavy-tailed (Student's t), so int4 costs real fidelity: the
cheapest setting (every layer at 4, the verifier's witness) misses the fidelity line
and the defaults (every layer at 8) miss the size line, so a setting meeting both has
to mix widths. The test asserts the mechanism, not a number fitted to it: `kmr check`
proves the program and the size line feasible, the search finds a setting meeting both
lines, every setting it ran meets the analytic budget by the verifier's own check (the
Budgeted-KMR invariant), it skipped some settings without running them, and the best
setting's artifact really is within the size line. Skipped only without torch.
"""

import json
import textwrap

import pytest

pytest.importorskip("kmr_dsl.runtime.session")
pytest.importorskip("torch")

import kmr_dsl.cli as cli  # noqa: E402
from kmr_dsl.app import load_checked  # noqa: E402
from kmr_dsl.search.journal import read_trials  # noqa: E402

MODEL = '''
import torch
import torch.nn as nn


def make():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(32, 128), nn.GELU(), nn.Linear(128, 128), nn.GELU(),
                        nn.Linear(128, 128), nn.GELU(), nn.Linear(128, 32))
    heavy = torch.distributions.StudentT(3.0)
    with torch.no_grad():
        for layer in net:
            if isinstance(layer, nn.Linear):
                layer.weight.copy_(2 * heavy.sample(layer.weight.shape) / layer.in_features ** 0.5)
    return net.eval()


def inputs(split="val"):
    g = torch.Generator().manual_seed({"calibrate": 1, "val": 2, "test": 3}[split])
    return torch.randn(64, 32, generator=g)


def example_input():
    return torch.zeros(1, 32)
'''

PROGRAM = '''
import "std"

model net = factory("tiny_mixed_model:make")
data calib = factory("tiny_mixed_model:inputs", split = "calibrate")
data val = factory("tiny_mixed_model:inputs", split = "val")
data test = factory("tiny_mixed_model:inputs", split = "test")

knob b[l in layers(Linear)] : int in {4, 8, 16} = 8

pipeline compress(net) {
    for l in layers(Linear) {
        gptq(bits = b[l], group_size = 32, calibration = calib, samples = 64, act_order = true)
    }

    budget {
        size <= 22% * baseline.size
        fidelity(val) >= 0.98
    }
    objective maximize fidelity(val)
    report fidelity(test)
    search budgeted(max_steps = 8)
}
'''

LAYERS = ("0", "2", "4", "6")


@pytest.fixture
def mixed(tmp_path, monkeypatch):
    (tmp_path / "tiny_mixed_model.py").write_text(textwrap.dedent(MODEL))
    (tmp_path / "mixed.kmr").write_text(PROGRAM)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMR_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def everywhere(bits: int) -> list[str]:
    return [arg for name in LAYERS for arg in ("--set", f"b[{name}]={bits}")]


@pytest.mark.slow
def test_search_mixes_gptq_widths_to_meet_size_and_fidelity(mixed, capsys):
    assert cli.main(["check", "--format", "json", "mixed.kmr"]) == 0
    (pipeline,) = json.loads(capsys.readouterr().out)["files"][0]["pipelines"]
    assert pipeline["verdict"] == "proved"
    program, _, _ = load_checked("mixed.kmr")
    from kmr_dsl.verify import is_feasible

    def setting(bits: int) -> dict:
        return {f"b[{name}]": bits for name in LAYERS}

    # neither uniform width meets the whole budget: 8 breaks the size line (analytic),
    # 4 the fidelity line (measured below)
    assert not is_feasible(program, "compress", setting(8))
    assert is_feasible(program, "compress", setting(4))
    assert cli.main(["run", "mixed.kmr", "--out", "all4", *everywhere(4)]) == 1
    all4 = json.loads((mixed / "all4" / "report.json").read_text())
    assert not next(line for line in all4["budget"] if line["text"].startswith("fidelity"))["holds"]
    capsys.readouterr()

    assert cli.main(["search", "mixed.kmr"]) == 0, capsys.readouterr().err
    out = mixed / "out" / "compress-search"
    report = json.loads((out / "search.json").read_text())
    assert report["found"] and 1 <= report["counts"]["runs"] <= 8
    best = report["best"]
    trials = read_trials(out / "journal.jsonl")
    baseline = next(t.baseline["size"] for t in trials if t.ran)
    assert best["meters"]["size"] <= 0.22 * baseline and best["meters"]["fidelity(val)"] >= 0.98
    widths = {best["setting"][f"b[{name}]"] for name in LAYERS}
    assert 4 in widths and widths - {4}, f"not a mix: {best['setting']}"
    # the Budgeted-KMR invariant: every setting that ran meets the analytic budget, and
    # some were ruled out without a run
    ran = [t for t in trials if t.ran]
    assert ran and all(is_feasible(program, "compress", t.setting) for t in ran)
    assert all(t.meters["size"] <= 0.22 * baseline for t in ran)
    assert report["counts"]["skipped_infeasible"] >= 1
    assert not any(is_feasible(program, "compress", t.setting) for t in trials if not t.ran)
    assert (out / "best" / "model.safetensors").stat().st_size <= 0.22 * baseline
