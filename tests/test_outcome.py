"""The one run result (kmr_dsl.outcome): derived verdicts and its JSON round trip."""

import json
import math

import pytest

from kmr_dsl.outcome import LineVerdict, Outcome

SIZE = LineVerdict("size <= 16 KB", True, 12_000.0, 16_000.0, 4_000.0, True, "<=", 7)
ACC = LineVerdict("accuracy(test) >= 95%", False, 0.90, 0.95, -0.05, False, ">=", 8)


def test_feasible_missed_and_violation_come_from_the_lines():
    ok = Outcome({"s": 0.5}, {"size": 12_000.0}, {"size": 60_000.0}, (SIZE,), 0.97)
    assert ok.feasible and ok.missed() == [] and ok.violation() == 0.0
    bad = Outcome({"s": 0.5}, {"size": 12_000.0}, {}, (SIZE, ACC), 0.90)
    assert not bad.feasible and bad.missed() == ["accuracy(test) >= 95%"]
    assert bad.violation() == pytest.approx(0.05 / 0.95)          # 5 points off a 95 % bound
    unread = LineVerdict("latency <= 2 ms", False, None, 0.002, None)
    assert Outcome({}, {}, {}, (unread,), None).violation() == 1.0  # unreadable: fails by "100 %"
    equal = LineVerdict("params == 10", False, 10.0, 10.0, 0.0, op="==")
    assert Outcome({}, {}, {}, (equal,), None).violation(1e-12) == 1e-12


def test_json_round_trip_is_strict_json_and_exact():
    inf_line = LineVerdict("size <= 16 KB", False, math.inf, 16_000.0, -math.inf, True, "<=", 3)
    outcome = Outcome({"bits": 8}, {"size": 12_000.0, "loss(test)": 0.25}, {"size": 60_000.0},
                      (SIZE, ACC, inf_line), 0.9, 1.23456, {"size": 11_900.0})
    text = json.dumps(outcome.to_json(), allow_nan=False)   # no NaN/Infinity literals
    data = json.loads(text)
    assert data["feasible"] is False and data["seconds"] == 1.235 and data["budget"][2]["left"] == "inf"
    back = Outcome.from_json(data)
    assert back.lines == outcome.lines and back.meters == outcome.meters and back.predicted == outcome.predicted
    assert (back.setting, back.baseline, back.objective) == (outcome.setting, outcome.baseline, outcome.objective)


def test_reading_is_tolerant_of_older_and_partial_records():
    old = {"setting": {"bits": 4}, "meters": {"size": 9000, "accuracy(test)": "nan"}, "objective": "inf",
           "lines": [{"text": "size <= 16 KB", "holds": True, "margin": 7000, "left": 9000, "right": 16000},
                     "not a line"]}
    back = Outcome.from_json(old)
    assert back.meters == {"size": 9000.0}            # a reading that is not a finite number is no reading
    assert back.objective is None and back.seconds == 0.0
    assert back.lines == (LineVerdict("size <= 16 KB", True, 9000.0, 16000.0, 7000.0),)
