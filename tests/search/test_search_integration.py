"""`kmr search` with the real checker, verifier and torch session on a tiny model.

Skipped only when the runtime session (or torch) is missing.
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


def make_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 3))


def example_input():
    return torch.zeros(1, 4)
'''

PROGRAM = '''
import "std"

model net = factory("tiny_search_model:make_mlp")
data train = sklearn("iris", split = "train")
data val = sklearn("iris", split = "val")
data test = sklearn("iris", split = "test")

knob sparsity : float in [0.0, 0.9] step 0.1 = 0.0
knob bits : int in {8, 16, 32} = 32

pipeline shrink(net) {
    prune(amount = sparsity) on layers(Linear)
    finetune(data = train, epochs = 10, lr = 0.01)
    quantize(bits = bits) on layers(Linear)

    budget {
        size <= 8 KB
        accuracy(val) >= 50%
    }
    objective maximize accuracy(val)
    report accuracy(test)
    search budgeted(max_steps = 4)
}
'''


@pytest.mark.slow
def test_search_on_a_real_tiny_model(tmp_path, monkeypatch, capsys):
    (tmp_path / "tiny_search_model.py").write_text(textwrap.dedent(MODEL))
    (tmp_path / "tiny.kmr").write_text(PROGRAM)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMR_CACHE_DIR", str(tmp_path / "cache"))
    code = cli.main(["search", "tiny.kmr"])
    captured = capsys.readouterr()
    err = captured.err
    assert code == 0, err
    out = tmp_path / "out" / "shrink-search"          # the default OUT
    report = json.loads((out / "search.json").read_text())
    assert report["found"] and 1 <= report["counts"]["runs"] <= 4
    best = report["best"]
    assert best["meters"]["size"] <= 8000 and best["meters"]["accuracy(val)"] >= 0.5
    # the test split is read on the chosen setting only: in no trial, once in the report
    assert all("accuracy(test)" not in t["meters"] for t in report["trials"])
    assert "accuracy(test)" not in err and "accuracy(test)" not in (out / "trials.md").read_text().split("stopped:")[0]
    (reported,) = report["report"]
    assert reported["text"] == "accuracy(test)" and 0 <= reported["value"] <= 1
    assert "reported on the chosen setting (never used to choose): accuracy(test)" in captured.out
    assert (out / "best" / "model.safetensors").stat().st_size <= 8000
    saved = json.loads((out / "best" / "report.json").read_text())     # written like `kmr run` does
    assert saved["setting"] == best["setting"] and saved["search"]["trial"] == best["index"]
    assert saved["report"] == report["report"]
    assert (out / "trials.md").exists()

    # every setting that ran meets the analytic budget by the verifier's own check
    from kmr_dsl.verify import is_feasible

    program, _, _ = load_checked("tiny.kmr")
    ran = [t for t in read_trials(out / "journal.jsonl") if t.ran]
    assert ran and all(is_feasible(program, "shrink", t.setting) for t in ran)
    assert "[1/4] " in err

    # the first run is the admissible setting the weight-error prior rates best
    import itertools

    from kmr_dsl.runtime.session import PipelineSession
    from kmr_dsl.search.problem import ProgramProblem

    problem = ProgramProblem(program, "shrink", profiles=PipelineSession(program, "shrink").weight_profiles)
    axes = problem.space.axes
    settings = [dict(zip(axes, v)) for v in itertools.product(*(a.ladder for a in axes.values()))]
    least = min(problem.distortion(s) for s in settings if problem.admissible(s))
    assert problem.distortion(ran[0].setting) == pytest.approx(least)
    assert problem.distortion({"sparsity": 0.0, "bits": 32}) == 0.0

    # resuming a finished search reruns nothing and ends with the same best
    assert cli.main(["search", "tiny.kmr", "--resume"]) == 0
    again = json.loads((out / "search.json").read_text())
    assert again["counts"]["replayed"] == report["counts"]["runs"]
    assert again["best"]["setting"] == best["setting"]


def test_threads_option_sets_torch_threads_for_rules_and_meters(tmp_path, monkeypatch, capsys):
    import torch

    from kmr_dsl.runtime import meters, training

    (tmp_path / "tiny_search_model.py").write_text(textwrap.dedent(MODEL))
    (tmp_path / "tiny.kmr").write_text(PROGRAM)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMR_CACHE_DIR", str(tmp_path / "cache"))
    seen = {"meter": set(), "training": set()}
    accuracy, train = meters.accuracy, training.fixed_threads

    def counting_accuracy(*args, **kwargs):
        seen["meter"].add(torch.get_num_threads())
        return accuracy(*args, **kwargs)

    def counting_threads(n):
        seen["training"].add(n)
        return train(n)

    monkeypatch.setattr(meters, "accuracy", counting_accuracy)
    monkeypatch.setattr(training, "fixed_threads", counting_threads)
    before = torch.get_num_threads()
    assert cli.main(["run", "tiny.kmr", "--threads", "2", "--set", "bits=32", "--out", "o"]) in (0, 1)
    assert seen["meter"] == {2} and seen["training"] == {2}
    assert torch.get_num_threads() == before          # restored afterwards
    # without --threads a model this small (under 1 M parameters) runs on one thread
    seen["meter"].clear(), seen["training"].clear()
    assert cli.main(["run", "tiny.kmr", "--set", "bits=32", "--out", "o"]) in (0, 1)
    assert seen["meter"] == {1} and seen["training"] == {1}


def test_meter_labels_match_the_session_keys():
    from kmr_dsl.core.program import DataRef, MeterRef, ModelArg
    from kmr_dsl.diagnostics import Span
    from kmr_dsl.runtime.session import meter_key
    from kmr_dsl.search.problem import meter_label

    sp = Span.unknown()
    refs = [MeterRef("size", (), False, True, sp),
            MeterRef("accuracy", (("data", DataRef("test", sp)),), False, False, sp),
            MeterRef("latency", (("batch", 8),), False, False, sp),
            MeterRef("fidelity", (("data", DataRef("test", sp)), ("teacher", ModelArg("baseline", sp))), False,
                     False, sp)]
    assert [meter_label(r) for r in refs] == [meter_key(r) for r in refs]
