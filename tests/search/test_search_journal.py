"""The journal: durable per trial, --resume after a kill, damaged lines tolerated."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from search_fakes import FakeProblem, FakeSession, make_space, run

from kmr_dsl.diagnostics import KmrError
from kmr_dsl.search.budgeted import Budgeted
from kmr_dsl.search.journal import Journal, read_trials
from kmr_dsl.search.sampling import RandomSearch

HERE = Path(__file__).resolve().parent
EXTREME = {"sparsity": 0.95, "bits": 2, "ratio": 0.1}


def _strategy(name, seed=0):
    if name == "budgeted":
        return Budgeted(seed=seed)
    if name == "random":
        return RandomSearch(n=30, seed=seed)
    pytest.importorskip("optuna")
    from kmr_dsl.search.sampling import TPESearch

    return TPESearch(n=30, seed=seed)


def _best(result):
    return result.best.setting if result.best else None


def _sequence(result):
    return [(t.setting, t.status, t.objective) for t in result.trials]


@pytest.mark.parametrize("name", ["budgeted", "random", "tpe"])
def test_resume_after_ctrl_c_ends_like_an_uninterrupted_search(tmp_path, name):
    full = run(_strategy(name), FakeProblem(make_space(), witness=EXTREME), FakeSession(),
               tmp_path / "full.jsonl", steps=30)
    path = tmp_path / "cut.jsonl"
    first = FakeSession(interrupt_after=7)
    cut = run(_strategy(name), FakeProblem(make_space(), witness=EXTREME), first, path, steps=30)
    assert cut.interrupted and cut.runs == 7
    assert len([t for t in read_trials(path) if t.ran]) == 7      # every finished trial is on disk

    second = FakeSession()
    resumed = run(_strategy(name), FakeProblem(make_space(), witness=EXTREME), second, path, steps=30, resume=True)
    assert resumed.replayed == 7
    assert len(second.evaluated) == full.runs - 7                 # nothing run twice
    assert not any(s in first.evaluated for s in second.evaluated)
    assert _sequence(resumed) == _sequence(full)
    assert _best(resumed) == _best(full)
    assert resumed.stop_reason == full.stop_reason
    # the journal now holds the whole search, once
    assert [t.setting for t in read_trials(path) if t.ran] == [t.setting for t in full.trials if t.ran]


def test_resume_after_the_process_is_killed(tmp_path):
    out = tmp_path / "killed"
    script = HERE / "search_kill_child.py"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parents[1]), str(HERE)])}
    child = subprocess.Popen([sys.executable, str(script), str(out / "journal.jsonl")], env=env)
    journal = out / "journal.jsonl"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if journal.exists() and len([t for t in read_trials(journal) if t.ran]) >= 5:
                break
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)    # no chance to clean up: like a crash or kill -9
    finally:
        child.wait(timeout=30)
    done = [t for t in read_trials(journal) if t.ran]
    assert 5 <= len(done) < 23, "the child should have been killed mid-search"

    full = run(Budgeted(seed=0), FakeProblem(make_space(), witness=EXTREME), FakeSession(), tmp_path / "f.jsonl")
    session = FakeSession()
    resumed = run(Budgeted(seed=0), FakeProblem(make_space(), witness=EXTREME), session, journal, resume=True)
    assert resumed.best.setting == full.best.setting
    assert _sequence(resumed) == _sequence(full)
    assert len(session.evaluated) == full.runs - resumed.replayed


def test_a_torn_last_line_is_ignored_with_a_warning(tmp_path):
    path = tmp_path / "j.jsonl"
    full = run(Budgeted(seed=0), FakeProblem(make_space()), FakeSession(), tmp_path / "full.jsonl")
    run(Budgeted(seed=0), FakeProblem(make_space()), FakeSession(interrupt_after=4), path)
    whole = path.read_bytes()
    path.write_bytes(whole[:-25])            # killed in the middle of writing the last line
    intact = [json.loads(line) for line in whole.splitlines()[:-1]]
    ran_before = sum(1 for r in intact if r.get("kind") == "trial" and r["status"] != "skipped (analytically infeasible)")
    header = {"pipeline": "fake", "strategy": "budgeted", "seed": 0, "space": make_space().signature()}
    journal = Journal.open(path, header, resume=True)
    journal.close()
    assert [w.code for w in journal.warnings] == ["KMR508"]
    assert journal.warnings[0].span.line == len(whole.splitlines())
    assert len(journal.replay) == ran_before
    assert path.read_bytes().endswith(b"\n")   # the torn tail is gone before anything is appended

    session = FakeSession()
    resumed = run(Budgeted(seed=0), FakeProblem(make_space()), session, path, resume=True)
    assert resumed.best.setting == full.best.setting
    assert resumed.replayed == ran_before
    for line in path.read_text().splitlines():
        json.loads(line)                     # every line parses again


def test_resuming_a_different_search_is_refused(tmp_path):
    path = tmp_path / "j.jsonl"
    run(Budgeted(seed=0), FakeProblem(make_space()), FakeSession(), path, steps=3)
    with pytest.raises(KmrError) as e:
        run(Budgeted(seed=1), FakeProblem(make_space()), FakeSession(), path, steps=3, resume=True)
    assert e.value.diagnostic.code == "KMR502"
    assert any("seed" in n for n in e.value.diagnostic.notes)


def test_a_new_search_keeps_the_old_journal_aside(tmp_path):
    path = tmp_path / "j.jsonl"
    run(Budgeted(seed=0), FakeProblem(make_space()), FakeSession(), path, steps=3)
    old = path.read_text()
    header = {"pipeline": "fake"}
    journal = Journal.open(path, header)
    journal.close()
    assert (tmp_path / "j.jsonl.bak").read_text() == old
    assert [w.code for w in journal.warnings] == ["KMR508"]


def test_resume_without_a_journal_starts_fresh(tmp_path):
    journal = Journal.open(tmp_path / "none.jsonl", {"pipeline": "fake"}, resume=True)
    journal.close()
    assert [w.code for w in journal.warnings] == ["KMR508"]
    assert json.loads((tmp_path / "none.jsonl").read_text())["kind"] == "header"


def test_every_trial_line_is_written_when_the_trial_ends(tmp_path):
    path = tmp_path / "j.jsonl"
    seen = []

    class Watching(FakeSession):
        def evaluate(self, setting):
            seen.append(len([t for t in read_trials(path) if t.ran]))
            return super().evaluate(setting)

    run(RandomSearch(n=6, seed=0), FakeProblem(make_space()), Watching(), path, steps=6)
    assert seen == list(range(6))


def test_a_journal_written_before_the_typed_outcome_still_resumes(tmp_path):
    """data/journal-format1.jsonl was written by the search when trials kept their budget
    lines as dicts: its trials come back typed, with the verdicts and violation they
    were written with, and are written back in the same shape."""
    source = HERE / "data" / "journal-format1.jsonl"
    records = [json.loads(line) for line in source.read_text().splitlines()]
    path = tmp_path / "journal.jsonl"
    path.write_text(source.read_text())
    header = {k: v for k, v in records[0].items() if k not in ("kind", "version")}
    journal = Journal.open(path, header, resume=True)
    journal.close()
    assert not journal.warnings
    ok, fails, skipped, error = journal.old
    assert (ok.status, ok.feasible, ok.violation, ok.outcome.lines[0].holds) == ("ok", True, 0.0, True)
    assert ok.outcome.lines[1].text == "accuracy(test) >= 94%" and ok.objective == records[1]["objective"]
    assert not fails.feasible and fails.missed() == ["accuracy(test) >= 94%"]
    assert fails.violation == pytest.approx(records[2]["violation"], rel=1e-12)
    assert skipped.outcome is None and skipped.violation == 0.0 and not skipped.ran
    assert error.violation == float("inf") and error.message.startswith("KMR405") and error.seconds == 0.5
    assert len(journal.replay) == 3   # ok, fails and error are served again; the skipped one is not
    assert len(journal.skipped) == 1
    for trial, record in zip(journal.old, records[1:]):
        again = trial.to_json()
        for line in again["lines"]:   # format 1 lines of the fakes had no operator or source line
            line.pop("op"), line.pop("line")
        assert again == record


@pytest.mark.parametrize("bad", [
    {"kind": "trial"},                                                  # no fields at all
    {"kind": "trial", "index": 2, "status": "ok"},                      # no setting
    {"kind": "trial", "index": 2, "setting": ["bits", 8], "status": "ok"},
    {"kind": "trial", "index": "2", "setting": {"bits": 8}, "status": "ok"},
    {"kind": "trial", "index": 2, "setting": {"bits": 8}, "status": "maybe"},
    {"kind": "trial", "index": 2, "setting": {"bits": 8}, "status": "ok", "meters": [1, 2]},
    {"kind": "trial", "index": 2, "setting": {"bits": 8}, "status": "ok", "lines": [3]},
    {"kind": "trial", "index": 2, "setting": {"bits": 8}, "status": "ok", "objective": "high"},
])
def test_a_valid_json_line_without_a_trial_is_skipped_with_a_located_warning(tmp_path, bad):
    path = tmp_path / "j.jsonl"
    full = run(Budgeted(seed=0), FakeProblem(make_space()), FakeSession(), tmp_path / "full.jsonl")
    run(Budgeted(seed=0), FakeProblem(make_space()), FakeSession(interrupt_after=4), path)
    lines = path.read_text().splitlines()
    lines.insert(2, json.dumps(bad))                     # hand-edited, or written by another tool
    path.write_text("\n".join(lines) + "\n")
    header = {"pipeline": "fake", "strategy": "budgeted", "seed": 0, "space": make_space().signature()}
    journal = Journal.open(path, header, resume=True)
    journal.close()
    assert [(w.code, w.span.line) for w in journal.warnings] == [("KMR508", 3)]
    assert "trial" in journal.warnings[0].message
    assert all(t.setting != ["bits", 8] for t in read_trials(path))    # reports skip it too
    resumed = run(Budgeted(seed=0), FakeProblem(make_space()), FakeSession(), path, resume=True)
    assert resumed.best.setting == full.best.setting
