"""Counts at their rounding breakpoints: the verifier's prediction against the run.

Every rule below keeps round_half_up(n * (1 - a)) of some n (weights of a layer, of a
pooled selection, output channels), so the count steps at a = q = (2n + 1 - 2k) / 2n.
The knob is set on the float nearest q and on the floats just below and above it. A
float is read as the decimal it shows (core/step.py `exact`), which may lie on either
side of q, and between q and the double nearest q: the prediction must compare the
same decimal with the same exact q as the runtime's rounding. The breakpoints picked
are those where the decimal compares differently with the double than with q (the ones
a float comparison misjudged), up to two per count.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from kmr_dsl.runtime import session as session_mod
from kmr_dsl.verify import predict
from tests.verify.soundness import Harness

MODEL = 'model m = factory("sound_factory:make", family = "mlp", sizes = "11,11,4", bias = "00")'
DATA = 'data train = factory("sound_factory:data", family = "mlp", sizes = "11,11,4", n = 16)'

# (rule text, the counts n whose breakpoints are set, the meters compared)
RULES = {
    "magnitude": ("prune(amount = a)", (121, 44), ("nonzero",)),
    "global": ("prune(amount = a, method = global)", (165,), ("nonzero",)),
    "sparsegpt": ("sparsegpt(amount = a, calibration = train, samples = 16)", (121,), ("nonzero",)),
    "gradually": ("prune_gradually(final = a, data = train, epochs = 1, batch_size = 16)", (44,), ("nonzero",)),
    "channel": ('prune(amount = a, method = channel) on layers(Linear, name = "0")', (11,),
                ("params", "nonzero")),
}


def breakpoints(n: int, most: int = 2) -> list[Fraction]:
    """The breakpoints q in (0, 0.9) of round_half_up(n * (1 - a)) whose shown decimal
    compares differently with q than with q's nearest double (or the first `most` of all
    if none do)."""
    qs = [Fraction(2 * n + 1 - 2 * k, 2 * n) for k in range(n, 0, -1)]
    qs = [q for q in qs if 0 < q < Fraction(9, 10)]
    split = [q for q in qs if _differs(Fraction(repr(float(q))), Fraction(float(q)), q)]
    return (split or qs)[:most]


def _differs(shown: Fraction, double: Fraction, q: Fraction) -> bool:
    return (shown <= double) != (shown <= q) or (shown < double) != (shown < q)


def floats_at(q: Fraction) -> list[float]:
    near = float(q)
    return [math.nextafter(near, 0.0), near, math.nextafter(near, 1.0)]


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Harness(tmp_path_factory.mktemp("breakpoints"))
    torch.set_num_threads(threads)


def test_the_picked_breakpoints_are_the_hard_ones():
    """121 weights: 85/242 shows as a decimal below it and above its double (the
    `prune-breakpoint-under` reproducer of tests/verify/test_soundness.py)."""
    q = Fraction(85, 242)
    assert q in breakpoints(121, most=60)
    assert Fraction(float(q)) < Fraction(repr(float(q))) < q
    assert all(a < b for a, b in zip(floats_at(q), floats_at(q)[1:]))


@pytest.mark.parametrize("name", sorted(RULES))
def test_prediction_equals_the_run_on_breakpoints(harness, name):
    steps, counts, meters = RULES[name]
    text = (f'import "std"\n{MODEL}\n{DATA}\nknob a : float in [0.0, 0.9] = 0.5\n'
            f"pipeline p(m) {{\n    {steps}\n    budget {{\n        params <= 1000000\n    }}\n}}\n")
    program, diags = harness.check(text)
    assert program is not None, diags
    session = session_mod.PipelineSession(program, "p", threads=1, seed=0)
    wrong = []
    for n in counts:
        for q in breakpoints(n):
            for a in floats_at(q):
                measured = session.evaluate({"a": a}).meters
                predicted = predict(program, "p", {"a": a})
                for meter in meters:
                    if abs(measured[meter] - predicted[meter]) > 1e-6:
                        wrong.append(f"{meter} at a = {a!r} (n = {n}, breakpoint {q}): "
                                     f"measured {measured[meter]}, predicted {predicted[meter]}")
    assert not wrong, "\n".join(wrong)


def test_a_witness_on_a_breakpoint_is_one_the_run_reads_back(harness):
    """A solver's witness is a vertex of its constraints: here a = 95/242, where the
    121-weight layer keeps 74 (`nonzero >= 101` holds); shown as a float it would read
    back as 0.3925619834710744, above 95/242, where the run keeps 73. The reported
    witness is a decimal the run reads back exactly, re-checked there."""
    from kmr_dsl.verify.budget import budget_lines
    from kmr_dsl.verify.feasibility_results import proved_result
    from kmr_dsl.verify.line_checks import meets_all
    from kmr_dsl.verify.obligations import pipeline_model

    text = (f'import "std"\n{MODEL}\nknob a : float in [0.0, 0.9] = 0.5\n'
            "pipeline p(m) {\n    prune(amount = a)\n    budget {\n        nonzero >= 101\n    }\n}\n")
    program, _ = harness.check(text)
    model = pipeline_model(program, "p")
    lines = budget_lines(model)[0]
    q = Fraction(95, 242)
    assert meets_all(lines, model, {"a": q}) and not meets_all(lines, model, {"a": Fraction(repr(float(q)))})
    result, _ = proved_result(model, lines, {"a": q}, "z3")
    a = result.witness["a"]
    assert Fraction(repr(a)) <= q and abs(a - float(q)) < 1e-12
    assert meets_all(lines, model, model.knobs.complete({"a": a}))
    measured = session_mod.PipelineSession(program, "p", threads=1, seed=0).evaluate({"a": a}).meters
    assert measured["nonzero"] >= 101


def test_writable_moves_only_a_value_that_does_not_read_back(harness):
    program, _ = harness.check(f'import "std"\n{MODEL}\nknob a : float in [0.0, 0.9] = 0.5\n'
                               "knob b : float in [0.0, 0.9] step 0.1 = 0.2\n"
                               "pipeline p(m) {\n    prune(amount = a)\n}\n")
    from kmr_dsl.verify.obligations import pipeline_model
    knobs = pipeline_model(program, "p").knobs
    q = Fraction(103, 264)              # shown as 0.39015151515151514, a decimal below q
    calls = []

    def above(s):
        calls.append(s)
        return s["a"] >= q
    moved = knobs.writable({"a": q, "b": Fraction(1, 5)}, above)
    assert moved["a"] >= q and knobs.by_name["a"].reads_back(moved["a"]) and moved["b"] == Fraction(1, 5)
    below = knobs.writable({"a": q, "b": Fraction(1, 5)}, lambda s: s["a"] <= q)
    assert below["a"] == Fraction(repr(float(q))) < q          # the shown decimal itself, when it holds
    assert knobs.writable({"a": q, "b": Fraction(1, 5)}, lambda s: s["a"] == q) is None
    calls.clear()
    assert knobs.writable({"a": Fraction(3, 8), "b": Fraction(1, 5)}, above) == {"a": Fraction(3, 8),
                                                                                 "b": Fraction(1, 5)}
    assert not calls                    # every value reads back: nothing re-checked
