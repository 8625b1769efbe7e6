"""The Ray backend reaches the same best as the local one (skipped without ray)."""

import os
from pathlib import Path

import pytest
from search_fakes import FakeProblem, FakeSession, make_space, run

from kmr_dsl.search.backends import RayBackend, TaskSpec
from kmr_dsl.search.budgeted import Budgeted
from kmr_dsl.search.driver import Limits, run_search
from kmr_dsl.search.journal import Journal
from kmr_dsl.search.sampling import RandomSearch

ray = pytest.importorskip("ray")
HERE = Path(__file__).resolve().parent
EXTREME = {"sparsity": 0.95, "bits": 2, "ratio": 0.1}


@pytest.fixture(scope="module")
def cluster():
    # workers import the fakes by module path, so they need the checkout and this folder
    path = os.pathsep.join([str(HERE.parents[1]), str(HERE)])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("make", [lambda: Budgeted(seed=0), lambda: RandomSearch(n=24, seed=1)],
                         ids=["budgeted", "random"])
def test_ray_and_local_backends_agree(tmp_path, cluster, make):
    local = run(make(), FakeProblem(make_space(), witness=EXTREME), FakeSession(), tmp_path / "l.jsonl", steps=30)
    backend = RayBackend(TaskSpec("search_fakes:make_fake_session", ()))
    journal = Journal.open(tmp_path / "r.jsonl", {"pipeline": "fake"})
    try:
        remote = run_search(FakeProblem(make_space(), witness=EXTREME), make(), backend, journal, Limits(30))
    finally:
        journal.close()
        backend.close()
    assert local.best is not None or local.closest is not None
    assert (remote.best or remote.closest).setting == (local.best or local.closest).setting
    assert sorted(map(str, (t.setting for t in remote.trials))) == sorted(map(str, (t.setting for t in local.trials)))
    assert remote.runs == local.runs and remote.stop_reason == local.stop_reason
