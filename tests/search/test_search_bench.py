"""The search benchmarks' own arithmetic: plain random search derived from a journal,
and the synthetic benchmark end to end (a few seconds, no torch)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from kmr_dsl.outcome import LineVerdict, Outcome
from kmr_dsl.search.trial import SKIPPED, Trial

ROOT = Path(__file__).resolve().parents[2]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trial(i, status, feasible=False, objective=None):
    if status == SKIPPED:
        return Trial(index=i, setting={"x": i}, status=status)
    lines = () if feasible else (LineVerdict("size <= 1 KB", False, 2000.0, 1000.0, -1000.0, True, "<="),)
    return Trial(index=i, setting={"x": i}, status=status, outcome=Outcome({"x": i}, {}, {}, lines, objective))


def test_unfiltered_random_spends_a_run_on_every_draw(monkeypatch):
    monkeypatch.setattr(sys, "path", [str(ROOT / "examples" / "digits"), *sys.path])
    bench = load("bench_search")
    trials = [trial(1, SKIPPED), trial(2, "fails budget", objective=0.9), trial(3, SKIPPED),
              trial(4, "ok", feasible=True, objective=0.95), trial(5, "ok", feasible=True, objective=0.97)]
    assert bench.unfiltered(trials, 20, "maximize") == {"first_feasible_run": 4, "best_objective": 0.97}
    # with a budget of 4 runs, the plain search saw only the first four draws
    assert bench.unfiltered(trials, 4, "maximize") == {"first_feasible_run": 4, "best_objective": 0.95}
    assert bench.unfiltered(trials, 3, "maximize") == {"first_feasible_run": None, "best_objective": None}


def test_synthetic_benchmark_prints_every_strategy(capsys):
    bench = load("bench_search_synthetic")
    assert bench.main(["--runs", "20", "--seeds", "0"]) == 0
    out = capsys.readouterr().out
    assert "optimum (brute force): 0.9572" in out
    budgeted = next(line for line in out.splitlines() if line.startswith("| budgeted |"))
    assert budgeted.startswith("| budgeted | 1.0; 1 | 0.9572 to 0.9572 |")
    assert "| random |" in out


def _row(strategy, seed, trace, clock, best, first=1):
    return {"pipeline": "p", "strategy": strategy, "seed": seed, "trace": trace, "clock": clock,
            "best_objective": best, "first_feasible_run": first, "reported": {"accuracy(test)": 0.9},
            "runs": len(trace), "skipped": 0, "ran_inadmissible": 0}


def test_summary_is_per_seed_counts_a_deterministic_strategy_once_and_compares_at_equal_time(monkeypatch):
    monkeypatch.setattr(sys, "path", [str(ROOT / "examples" / "digits"), *sys.path])
    bench = load("bench_search")
    fast = [{"t": 1.0, "feasible": True, "objective": 0.95}, {"t": 2.0, "feasible": True, "objective": 0.97}]
    rows = [_row("budgeted", 0, ["a", "b"], fast, 0.97), _row("budgeted", 1, ["a", "b"], fast, 0.97),
            _row("random", 0, ["c", "d"], [{"t": 1.5, "feasible": True, "objective": 0.96},
                                            {"t": 9.0, "feasible": True, "objective": 0.99}], 0.99),
            _row("random", 1, ["e"], [{"t": 3.0, "feasible": True, "objective": 0.98}], 0.98)]
    assert bench.identical_for_every_seed(rows[:2]) and not bench.identical_for_every_seed(rows[2:])
    text = bench.summary(rows, 2)
    assert "budgeted: the same trials for every seed — one result, counted once." in text
    assert "| 1 | (same as seed 0) | 1 / 0.9800 / 0.9000 |" in text       # per seed, test of the chosen only
    # within budgeted's 2.0 s, random seed 0 had only its 0.96 and seed 1 nothing yet
    assert bench.best_within(rows[2], 2.0) == 0.96 and bench.best_within(rows[3], 2.0) is None
    assert "| 0 | 0.9700 | 0.9600 |" in text and "| 1 | (same as seed 0) | - |" in text
