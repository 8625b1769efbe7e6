"""Budgeted-KMR, random and TPE on the synthetic problem: safety, optimality, seeds."""

import statistics

import pytest
from search_fakes import (
    ACCURACY_FLOOR, SIZE_LIMIT, FakeProblem, FakeSession, PriorProblem, brute_force, distortion_of, least_distorted,
    make_space, run, size_of,
)

from kmr_dsl.search.budgeted import Budgeted
from kmr_dsl.search.sampling import RandomSearch
from kmr_dsl.search.space import key
from kmr_dsl.search.trial import SKIPPED

EXTREME = {"sparsity": 0.95, "bits": 2, "ratio": 0.1}


def _strategies(seed, n=40):
    out = [Budgeted(seed=seed), RandomSearch(n=n, seed=seed)]
    try:
        import optuna  # noqa: F401
    except ImportError:
        return out
    from kmr_dsl.search.sampling import TPESearch

    return out + [TPESearch(n=n, seed=seed)]


@pytest.mark.parametrize("witness", [None, EXTREME])
@pytest.mark.parametrize("make", [lambda: Budgeted(seed=0), lambda: RandomSearch(n=30, seed=0)])
def test_never_runs_an_analytically_infeasible_setting(tmp_path, witness, make):
    problem = FakeProblem(make_space(), witness=witness)
    session = FakeSession()
    result = run(make(), problem, session, tmp_path / "j.jsonl")
    assert session.evaluated, "the search ran nothing"
    assert all(size_of(s) <= SIZE_LIMIT for s in session.evaluated)
    skipped = [t for t in result.trials if t.status == SKIPPED]
    assert skipped and all(size_of(t.setting) > SIZE_LIMIT for t in skipped)
    assert result.skipped == len(skipped)
    # every setting that ran was asked about first
    assert all(key(s) in problem.asked for s in session.evaluated)


@pytest.mark.parametrize("spend", [True, False])
@pytest.mark.parametrize("witness", [None, EXTREME])
def test_budgeted_finds_the_known_optimum(tmp_path, witness, spend):
    space = make_space()
    optimum, _ = brute_force(space)
    result = run(Budgeted(seed=0, spend=spend), FakeProblem(space, witness=witness), FakeSession(),
                 tmp_path / "j.jsonl")
    assert result.best is not None
    assert result.best.objective == pytest.approx(optimum, abs=1e-12)
    assert result.stop_reason.startswith("converged")
    assert result.runs < 40     # it stopped on its own, well inside the step limit
    if witness is EXTREME and not spend:
        # started in the corner: the first run fails and the repair jump is what fixes it
        assert not result.trials[0].feasible and result.first_feasible_run <= 10


def test_budgeted_refines_a_family_per_instance(tmp_path):
    space = make_space(knobs=("sparsity", "bits"), family=True)
    optimum, _ = brute_force(space)
    tied = run(Budgeted(seed=0, refine=False), FakeProblem(space), FakeSession(), tmp_path / "a.jsonl", steps=80)
    refined = run(Budgeted(seed=0), FakeProblem(space), FakeSession(), tmp_path / "b.jsonl", steps=80)
    assert refined.best.objective == pytest.approx(optimum, abs=1e-12)
    assert refined.best.objective > tied.best.objective       # per-layer amounts pay off here
    values = [refined.best.setting[f"s[{layer}]"] for layer in ("fc1", "fc2", "fc3")]
    assert len(set(values)) > 1


def test_budgeted_bisects_to_the_edge_for_a_cost_objective(tmp_path):
    space = make_space(knobs=("sparsity", "bits"))
    problem = FakeProblem(space, direction="minimize", limit=40_000)
    session = FakeSession(direction="minimize", limit=40_000, floor=0.95)
    result = run(Budgeted(seed=0), problem, session, tmp_path / "j.jsonl")
    best, _ = brute_force(space, 40_000, 0.95, "minimize")
    assert result.best.objective == pytest.approx(-best)
    # 20 sparsity rungs: finding the accuracy cliff takes a handful of runs, not 20
    assert result.runs <= 14


def test_budgeted_handles_enum_knobs(tmp_path):
    space = make_space(knobs=("sparsity", "bits", "scheme"))
    optimum, _ = brute_force(space)
    result = run(Budgeted(seed=0), FakeProblem(space), FakeSession(), tmp_path / "j.jsonl")
    assert result.best.objective == pytest.approx(optimum, abs=1e-12)
    assert result.best.setting["scheme"] == "weight_only"


def test_without_objective_the_first_feasible_setting_ends_the_search(tmp_path):
    problem = FakeProblem(make_space(), direction=None, witness=EXTREME)
    result = run(Budgeted(seed=0), problem, FakeSession(direction=None), tmp_path / "j.jsonl")
    assert result.best is not None and result.best.feasible
    assert result.stop_reason.startswith("budget met")
    # it stops after the batch that met the budget
    assert result.first_feasible_run <= result.runs < result.first_feasible_run + 2 * 4


@pytest.mark.parametrize("index", [0, 1, 2])
def test_a_seed_makes_every_strategy_reproducible(tmp_path, index):
    runs = []
    for attempt in range(2):
        strategies = _strategies(seed=3, n=25)
        if index >= len(strategies):
            pytest.skip("optuna is not installed")
        result = run(strategies[index], FakeProblem(make_space()), FakeSession(), tmp_path / f"{attempt}.jsonl",
                     steps=25)
        runs.append([(t.setting, t.status) for t in result.trials])
    assert runs[0] == runs[1]


def test_sampling_seeds_differ(tmp_path):
    a = run(RandomSearch(n=10, seed=1), FakeProblem(make_space()), FakeSession(), tmp_path / "a.jsonl", steps=10)
    b = run(RandomSearch(n=10, seed=2), FakeProblem(make_space()), FakeSession(), tmp_path / "b.jsonl", steps=10)
    assert [t.setting for t in a.trials] != [t.setting for t in b.trials]


def test_budgeted_needs_at_most_half_the_runs_of_random_to_meet_the_budget(tmp_path):
    budgeted, random_ = [], []
    for seed in range(5):
        for strategy, sink in ((Budgeted(seed=seed), budgeted), (RandomSearch(n=60, seed=seed), random_)):
            result = run(strategy, FakeProblem(make_space(), witness=EXTREME), FakeSession(),
                         tmp_path / f"{strategy.name}{seed}.jsonl", steps=60)
            # a search that never met the budget counts as the whole budget, plus one
            sink.append(result.first_feasible_run or 61)
    assert statistics.mean(budgeted) * 2 <= statistics.mean(random_)


@pytest.mark.parametrize("family", [False, True])
@pytest.mark.parametrize("witness", [None, EXTREME])
def test_with_a_prior_the_first_run_is_the_least_distorted_admissible_setting(tmp_path, witness, family):
    space = make_space(knobs=("sparsity", "bits") if family else ("sparsity", "bits", "ratio"), family=family)
    if family:
        witness = witness and {"s[fc1]": 0.95, "s[fc2]": 0.95, "s[fc3]": 0.95, "bits": 2}
    problem = PriorProblem(space, witness=witness)
    result = run(Budgeted(seed=0), problem, FakeSession(), tmp_path / "j.jsonl", steps=80)
    first = next(t for t in result.trials if t.ran)
    assert size_of(first.setting) <= SIZE_LIMIT
    # the free Lagrangian sweep finds the brute-force least-distorted admissible setting
    least, _ = least_distorted(space)
    assert distortion_of(first.setting) == pytest.approx(least, abs=1e-9)
    # here that first guess already meets the (measured) accuracy floor
    assert first.feasible and result.first_feasible_run == 1
    # and the climb from it still ends at the true optimum
    optimum, _ = brute_force(space)
    assert result.best.objective == pytest.approx(optimum, abs=1e-12)
    assert all(size_of(s) <= SIZE_LIMIT for s in (t.setting for t in result.trials if t.ran))


def test_a_prior_shares_a_family_out_per_instance(tmp_path):
    # fc3 is small: its sparsity saves little size for the same prior damage, so the
    # first run prunes it least, not by the family's common amount
    space = make_space(knobs=("sparsity", "bits"), family=True)
    result = run(Budgeted(seed=0), PriorProblem(space), FakeSession(), tmp_path / "j.jsonl", steps=3)
    first = next(t for t in result.trials if t.ran).setting
    assert first["s[fc3]"] < first["s[fc1]"] <= first["s[fc2]"]


def test_the_prior_search_is_capped_on_a_family_of_hundreds_of_layers(tmp_path):
    from kmr_dsl.search import budgeted
    from kmr_dsl.search.problem import Problem
    from kmr_dsl.search.space import Axis, Space

    names = tuple(f"s[l{i}]" for i in range(300))
    ladder = tuple(round(0.05 * i, 2) for i in range(20))
    space = Space({n: Axis(n, "s", ladder, True, 0.0) for n in names}, {"s": names})

    class Wide(Problem):
        direction, calls = "maximize", 0

        def __init__(self):
            self.space = space

        def admissible(self, setting):
            return sum(setting.values()) >= 0.5 * len(names)       # at least half pruned overall

        def pressure(self, setting):
            return -sum(setting.values())

        def distortion(self, setting):
            Wide.calls += 1
            return sum(v * v * (1 + i % 3) for i, v in enumerate(setting.values()))

    strategy = Budgeted(seed=0)
    strategy.space, strategy.problem = space, Wide()
    strategy.search = type("S", (), {"admissible": staticmethod(strategy.problem.admissible)})()
    first = strategy._least_distortion({n: 0.95 for n in names})
    assert Wide.calls <= budgeted.PRIOR_EVALS + 2 * 300 * 20       # the cap, plus one last pass
    assert strategy.problem.admissible(first)
    assert strategy.problem.distortion(first) < strategy.problem.distortion({n: 0.95 for n in names})


def test_a_cost_flat_stretch_does_not_hide_the_direction_that_saves(tmp_path):
    # dense storage below 30 % sparsity: the predicted size is flat there, as KMR's size
    # model is at low sparsity, and only further rungs save
    class Flat(FakeProblem):
        def pressure(self, setting):
            s = dict(setting, sparsity=max(setting["sparsity"], 0.3))
            return size_of(s) / self.limit

    space = make_space(knobs=("sparsity", "bits"))
    strategy = Budgeted(seed=0)
    strategy.space, strategy.problem = space, Flat(space)
    x = {"sparsity": 0.1, "bits": 8}
    group = space.groups()[0]
    assert strategy._save_direction(x, group) == +1
    assert strategy._spend_direction(x, group) is None
    assert not strategy._flat(x, group)


def test_step_limit_cuts_a_batch_and_stops(tmp_path):
    result = run(Budgeted(seed=0), FakeProblem(make_space(), witness=EXTREME), FakeSession(),
                 tmp_path / "j.jsonl", steps=3)
    assert result.runs == 3
    assert result.stop_reason == "step limit reached"


def test_time_limit_stops_between_trials(tmp_path):
    session = FakeSession(delay=0.05)
    result = run(RandomSearch(n=200, seed=0), FakeProblem(make_space()), session, tmp_path / "j.jsonl",
                 steps=200, time_limit=0.2)
    assert result.stop_reason == "time limit reached"
    assert 1 <= result.runs < 20


def test_no_feasible_setting_reports_the_closest(tmp_path):
    session = FakeSession(floor=0.99)     # nothing reaches 99 %
    result = run(Budgeted(seed=0), FakeProblem(make_space()), session, tmp_path / "j.jsonl")
    assert result.best is None
    closest = result.closest
    ran = [t for t in result.trials if t.ran]
    assert closest.violation == min(t.violation for t in ran)
    assert closest.missed() == [f"accuracy(test) >= {0.99 * 100:g}%"]
    assert ACCURACY_FLOOR < 0.99


def test_between_equal_objectives_the_cheaper_setting_wins(tmp_path):
    # 16 and 32 bits lose nothing in the synthetic model: the 16-bit one is smaller
    space = make_space(knobs=("bits",))
    problem = FakeProblem(space, limit=1e9)
    result = run(Budgeted(seed=0), problem, FakeSession(limit=1e9), tmp_path / "j.jsonl")
    assert result.best.setting == {"bits": 16}


def test_tpe_with_a_journal_storage_proposes_what_the_memory_one_does(tmp_path):
    pytest.importorskip("optuna")
    from kmr_dsl.search.sampling import TPESearch

    runs = []
    for storage in ("memory", "journal"):
        strategy = TPESearch(n=12, seed=7, storage=storage, journal_dir=tmp_path)
        result = run(strategy, FakeProblem(make_space()), FakeSession(), tmp_path / f"{storage}.jsonl", steps=12)
        runs.append([t.setting for t in result.trials])
    assert runs[0] == runs[1]
    assert (tmp_path / "optuna-journal.log").stat().st_size > 0
