"""What a search writes and prints, and its exit codes (execute_search on the fakes)."""

import io
import json
import sys

import pytest
from search_fakes import FakeProblem, FakeSession, make_space

from kmr_dsl.outcome import Outcome
from kmr_dsl.search.backends import LocalBackend
from kmr_dsl.search.budgeted import Budgeted
from kmr_dsl.search.driver import Limits
from kmr_dsl.search.execute import SearchInfo, execute_search
from kmr_dsl.search.plot import pareto_front
from kmr_dsl.search.report import format_value, progress_line, setting_text
from kmr_dsl.search.trial import Trial

SHOWN = ["size", "accuracy(test)"]
UNITS = {"size": "bytes", "accuracy(test)": "ratio"}


def _execute(tmp_path, session, *, verification="verified", steps=40, resume=False, witness=None):
    info = SearchInfo(pipeline="compress", file="fake.kmr", strategy="budgeted", options={"max_steps": steps},
                      seed=0, verification=verification, shown=SHOWN, units=UNITS)
    err = io.StringIO()
    saved = []

    def save_best(trial):
        model = backend.model_for(trial.setting)
        saved.append(model)
        return session.save(model, tmp_path / "out" / "best", trial.setting)

    backend = LocalBackend(session)
    code, result = execute_search(FakeProblem(make_space(), witness=witness), Budgeted(seed=0), backend,
                                  tmp_path / "out", info, Limits(steps), resume=resume, save_best=save_best,
                                  stderr=err)
    return code, result, err.getvalue(), saved


def test_a_found_setting_writes_every_output(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    code, result, err, saved = _execute(tmp_path, FakeSession())
    assert code == 0
    out = tmp_path / "out"
    report = json.loads((out / "search.json").read_text())
    assert report["found"] is True
    assert report["best"]["setting"] == result.best.setting
    assert report["best"]["meters"]["size"] <= 24_000
    assert report["counts"]["runs"] == result.runs
    assert report["counts"]["skipped_infeasible"] == result.skipped > 0
    assert report["strategy"] == "budgeted" and report["seed"] == 0
    assert len(report["trials"]) == len(result.trials)
    png = (out / "pareto.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    table = (out / "trials.md").read_text()
    assert table.count("\n| ") >= len(result.trials)
    assert f"**{result.best.index}**" in table
    # the best model is the one kept in memory from its own trial, not a rerun
    assert saved == [("model", json.dumps(result.best.setting, sort_keys=True))]
    assert json.loads((out / "best" / "model.json").read_text())["setting"] == result.best.setting
    assert "| # | setting |" in capsys.readouterr().out
    assert err.count("\n") >= result.runs       # one progress line per trial
    first = result.trials[0] if result.trials[0].ran else result.trials[1]
    assert progress_line(first, 1, 40, SHOWN, UNITS) in err


def test_no_feasible_setting_exits_1_with_the_closest(tmp_path):
    code, result, err, saved = _execute(tmp_path, FakeSession(floor=0.99))
    assert code == 1 and not saved
    assert "error[KMR406]: no setting that meets every budget line was found" in err
    assert f"closest setting: #{result.closest.index} " + setting_text(result.closest.setting) in err
    assert "it misses: accuracy(test) >= 99%" in err
    report = json.loads((tmp_path / "out" / "search.json").read_text())
    assert report["found"] is False and report["closest"]["missed"] == ["accuracy(test) >= 99%"]


def test_unknown_verification_and_nothing_found_exits_3(tmp_path):
    code, *_ = _execute(tmp_path, FakeSession(floor=0.99), verification="unknown")
    assert code == 3


def test_ctrl_c_exits_130_with_a_partial_summary(tmp_path, capsys):
    code, result, err, saved = _execute(tmp_path, FakeSession(interrupt_after=3))
    assert code == 130 and not saved
    assert result.runs == 3
    assert "error[KMR409]: search interrupted" in err and "--resume" in err
    assert "stopped: interrupted; 3 runs" in capsys.readouterr().out
    code, resumed, _, _ = _execute(tmp_path, FakeSession(), resume=True)
    assert code == 0 and resumed.replayed == 3


def test_missing_matplotlib_skips_the_plot_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, _, err, _ = _execute(tmp_path, FakeSession())
    assert code == 0
    assert "warning[KMR506]: matplotlib is missing: no pareto.png" in err
    assert not (tmp_path / "out" / "pareto.png").exists()
    assert (tmp_path / "out" / "search.json").exists()


def test_progress_line_and_formats():
    setting = {"sparsity": 0.5, "bits": 8}
    trial = Trial(3, setting, "ok", Outcome(setting, {"size": 12_100.0, "accuracy(test)": 0.953}, {}, (), None))
    assert progress_line(trial, 3, 20, SHOWN, UNITS) == "[3/20] sparsity=0.5 bits=8  size=12.1 KB  accuracy(test)=0.953  ok"
    assert format_value(0.0021, "time") == "2.1 ms"
    assert format_value(512, "bytes") == "512 B"
    families = {"s": ("s[a]", "s[b]")}
    assert setting_text({"s[a]": 0.5, "s[b]": 0.5, "bits": 8}, families) == "s[*]=0.5 bits=8"
    assert setting_text({"s[a]": 0.3, "s[b]": 0.7}, families) == "s[a]=0.3 s[b]=0.7"
    many = {"s": tuple(f"s[{i}]" for i in range(6))}
    assert setting_text({f"s[{i}]": i / 10 for i in range(6)}, many) == "s[6]=0..0.5"


def test_pareto_front():
    pts = [(10, 0.9, 1), (12, 0.95, 2), (11, 0.8, 3), (20, 0.95, 4), (5, 0.5, 5)]
    assert [p[2] for p in pareto_front(pts, "maximize")] == [5, 1, 2]
    assert [p[2] for p in pareto_front([(1, 3.0, 1), (2, 2.0, 2), (3, 4.0, 3)], "minimize")] == [1, 2]


def test_importing_search_pulls_in_no_heavy_module():
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    code = ("import sys, kmr_dsl.search.command, kmr_dsl.search.budgeted, kmr_dsl.search.sampling, "
            "kmr_dsl.search.plot; print(sorted(m for m in ('torch', 'sympy', 'z3', 'optuna', 'ray', "
            "'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
    assert out.stdout.strip() == "[]"
