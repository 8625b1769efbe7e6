"""PipelineSession: timed meters are read beside a fresh baseline reading."""

import textwrap
import time

import torch.nn as nn

from kmr_dsl.runtime import meters

MODEL = '''
import torch
import torch.nn as nn


def make_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))


def example_input():
    return torch.zeros(1, 4)
'''

PROGRAM = '''
import "std"

model net = factory("tiny_session_model:make_mlp")
data test = sklearn("iris", split = "test")

knob bits : int in {8, 32} = 8

pipeline shrink(net) {
    quantize(bits = bits) on layers(Linear)
    budget {
        latency(batch = 4) <= 60% * baseline.latency(batch = 4)
    }
}
'''


class Sleepy(nn.Module):
    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    def forward(self, x):
        time.sleep(self.seconds)
        return x


def test_latency_paired_times_both_models_in_the_same_rounds():
    slow, fast = Sleepy(0.004), Sleepy(0.0)
    got_slow, got_fast = meters.latency_paired(slow, fast, batch=1, input_shape=(1, 2), repeats=6, warmup=1)
    assert got_slow >= 0.004 > got_fast
    assert meters.latency.paired is meters.latency_paired


def test_a_timed_line_is_judged_against_the_baseline_read_beside_it(tmp_path, monkeypatch):
    from kmr_dsl.app import load_checked
    from kmr_dsl.runtime.session import PipelineSession

    (tmp_path / "tiny_session_model.py").write_text(textwrap.dedent(MODEL))
    (tmp_path / "tiny.kmr").write_text(PROGRAM)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMR_CACHE_DIR", str(tmp_path / "cache"))
    program, diags, _ = load_checked("tiny.kmr")
    assert program is not None, diags
    session = PipelineSession(program, "shrink")
    calls = []
    readings = iter([(1.0, 2.0), (3.0, 2.5)])

    def paired(model, baseline, **kwargs):
        calls.append((model, baseline, kwargs["batch"]))
        return next(readings)

    monkeypatch.setattr(meters.latency, "paired", paired)
    first = session.evaluate({"bits": 8})
    assert first.meters["latency(batch=4)"] == 1.0 and first.baseline["latency(batch=4)"] == 2.0
    assert first.feasible                                   # 1.0 <= 60% of 2.0
    second = session.evaluate({"bits": 8})
    assert second.baseline["latency(batch=4)"] == 2.5 and not second.feasible
    assert first.baseline["latency(batch=4)"] == 2.0        # each outcome keeps its own reading
    assert all(b is session.baseline and isinstance(m, nn.Module) and m is not b and n == 4
               for m, b, n in calls)
