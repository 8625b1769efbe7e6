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
