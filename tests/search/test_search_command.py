"""`kmr search` end to end on a hand-built checked program, with a fake verifier and
session standing in for kmr_dsl.verify and kmr_dsl.runtime.session (no torch, no z3),
passed in through `search.command.Toolchain`."""

import json
import re
import sys
from types import SimpleNamespace

import pytest
from search_fakes import FakeSession, size_of

from kmr_dsl.cli import build_parser
from kmr_dsl.core.program import (
    CheckedProgram, Const, Constraint, DataRef, Domain, Knob, Meter, MeterRef, ModelDecl, Objective, Op,
    Pipeline, Search,
)
from kmr_dsl.diagnostics import KmrError, Span
from kmr_dsl.facts import LoaderSpec
from kmr_dsl.search.command import Toolchain, configure, search_command, shown_and_units
from kmr_dsl.search.problem import ProgramProblem, budget_pressure_terms, meter_label
from kmr_dsl.search.space import space_for

SP = Span("digits.kmr", 20, 5, 20, 30)
SIZE = MeterRef("size", (), False, True, SP)
BASE_SIZE = MeterRef("size", (), True, True, SP)
ACC = MeterRef("accuracy", (("data", DataRef("test", SP)),), False, False, SP)


def program(search=Search("budgeted", (("max_steps", 30),), SP), limit=24_000.0, extra_lines=()):
    knobs = {
        "sparsity": Knob("sparsity", "float", Domain(lo=0.0, hi=0.95, step=0.05), default=0.5, span=SP),
        "bits": Knob("bits", "int", Domain(values=(2, 4, 8, 16, 32)), default=8, span=SP),
        "ratio": Knob("ratio", "float", Domain(lo=0.1, hi=1.0), default=1.0, span=SP),
    }
    budget = (Constraint("<=", SIZE, Const(limit, "bytes", SP), True, SP),
              Constraint(">=", ACC, Const(0.94, "number", SP), False, SP), *extra_lines)
    model = ModelDecl("student", LoaderSpec("factory", ("m:f",)), None, SP)
    pipe = Pipeline("compress", model, (), budget, Objective("maximize", ACC, SP), search,
                    ("sparsity", "bits", "ratio"), SP)
    meters = {"size": Meter("size", (), "bytes", True, "x:size", SP),
              "accuracy": Meter("accuracy", (), "ratio", False, "x:acc", SP)}
    return CheckedProgram("digits.kmr", knobs, {}, meters, {"student": model}, {}, {"compress": pipe}, {})


def fake_verifier(exit_code=0, witness=None, limit=24_000.0):
    mod = SimpleNamespace()

    def verify(prog, name, **opts):
        result = SimpleNamespace(kind="feasibility", verdict="PROVED" if exit_code == 0 else "REFUTED",
                                 witness=witness, summary="")
        diags = []
        if exit_code == 1:
            from kmr_dsl.diagnostics import error
            diags = [error("KMR302", SP, "budget infeasible", "core: size <= 24 KB")]
        return SimpleNamespace(exit_code=exit_code, results=[result], diagnostics=diags)

    mod.verify = verify
    mod.is_feasible = lambda prog, name, setting: size_of(setting) <= limit
    mod.predict = lambda prog, name, setting: {"size": size_of(setting)}
    return mod


def search(tools: Toolchain, *argv: str) -> int:
    """`kmr search ARGV` with the given stand-ins (KmrError propagates: cli.main renders it)."""
    return search_command(build_parser().parse_args(["search", *argv]), tools)


@pytest.fixture
def fakes():
    """install(prog, verifier) -> (the sessions the search built, the Toolchain to pass)."""
    sessions = []

    class PipelineSession(FakeSession):
        def __init__(self, prog, pipeline, *, trust=False, seed=0, progress=None, threads=None):
            super().__init__()
            self.threads = threads
            sessions.append(self)

    def install(prog=None, verifier=None):
        tools = Toolchain(load=lambda path, trust=False: (prog or program(), [], {}),
                          verifier=verifier or fake_verifier(), session=PipelineSession)
        return sessions, tools

    return install


def test_kmr_search_finds_and_saves_the_best(tmp_path, fakes, capsys):
    sessions, tools = fakes(verifier=fake_verifier(witness={"sparsity": 0.95, "bits": 2, "ratio": 0.1}))
    code = search(tools, "digits.kmr", "--out", str(tmp_path / "o"))
    assert code == 0
    report = json.loads((tmp_path / "o" / "search.json").read_text())
    assert report["found"] and report["pipeline"] == "compress"
    assert report["options"]["max_steps"] == 30
    # the first run starts from the witness and spends the slack it leaves (no runs)
    first = report["trials"][0]["setting"]
    assert size_of({"sparsity": 0.95, "bits": 2, "ratio": 0.1}) < size_of(first) <= 24_000
    assert all(size_of(s) <= 24_000 for s in sessions[0].evaluated)
    assert (tmp_path / "o" / "best" / "model.json").exists()
    err = capsys.readouterr().err
    assert re.search(r"^\[1/30\] sparsity=\S+ bits=\d+ ratio=\S+  size=[\d.]+ KB  accuracy\(test\)=[\d.]+  (ok|fails)",
                     err, re.M), err


def test_refuted_program_is_not_searched(tmp_path, fakes, capsys):
    sessions, tools = fakes(verifier=fake_verifier(exit_code=1))
    assert search(tools, "digits.kmr", "--out", str(tmp_path / "o")) == 1
    assert not sessions and not (tmp_path / "o").exists()
    err = capsys.readouterr().err
    assert "error[KMR302]" in err and "not searching" in err


def test_unknown_verification_warns_and_searches(tmp_path, fakes, capsys):
    _, tools = fakes(verifier=fake_verifier(exit_code=3))
    assert search(tools, "digits.kmr", "--out", str(tmp_path / "o"), "--max-steps", "25") == 0
    assert "warning[KMR303]: verification is UNKNOWN; searching anyway" in capsys.readouterr().err
    assert json.loads((tmp_path / "o" / "search.json").read_text())["verification"] == "unknown"


def test_cli_overrides_and_resume(tmp_path, fakes):
    pytest.importorskip("optuna")
    _, tools = fakes()
    args = ["digits.kmr", "--out", str(tmp_path / "o"), "--strategy", "tpe", "--seed", "5",
            "--max-steps", "12", "--format", "json"]
    assert search(tools, *args) in (0, 1)
    first = json.loads((tmp_path / "o" / "search.json").read_text())
    assert first["strategy"] == "tpe" and first["seed"] == 5 and first["counts"]["runs"] == 12
    assert search(tools, *args, "--resume") in (0, 1)
    again = json.loads((tmp_path / "o" / "search.json").read_text())
    assert again["counts"]["replayed"] == 12
    assert [t["setting"] for t in again["trials"]] == [t["setting"] for t in first["trials"]]


def test_bad_search_options_are_kmr223():
    args = SimpleNamespace(strategy=None, max_steps=None, seed=None)
    for options in ((("max_step", 3),), (("max_steps", "x"),), (("n", 3), ("max_steps", 4)), (("batch", 0),)):
        with pytest.raises(KmrError) as e:
            configure(Search("budgeted", options, SP), args, SP)
        assert e.value.diagnostic.code == "KMR223" and e.value.diagnostic.span == SP
    strategy, options = configure(Search("random", (("n", 7), ("seed", 2)), SP), args, SP)
    assert (strategy, options) == ("random", {"max_steps": 7, "seed": 2})
    override = SimpleNamespace(strategy="random", max_steps=None, seed=None)
    assert configure(Search("budgeted", (("refine", False),), SP), override, SP) == (
        "random", {"max_steps": 20, "seed": 0})
    assert configure(None, args, SP) == ("budgeted", {"max_steps": 20, "seed": 0})


def test_missing_optional_dependencies_are_kmr506(tmp_path, fakes, monkeypatch):
    _, tools = fakes()
    monkeypatch.setitem(sys.modules, "optuna", None)
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(KmrError) as e:
        search(tools, "digits.kmr", "--out", str(tmp_path / "o"), "--strategy", "tpe")
    assert e.value.diagnostic.code == "KMR506" and "pip install optuna" in e.value.diagnostic.hint
    with pytest.raises(KmrError) as e:
        search(tools, "digits.kmr", "--out", str(tmp_path / "o"), "--backend", "ray")
    assert e.value.diagnostic.code == "KMR506" and "pip install ray" in e.value.diagnostic.hint


def test_space_ladders_from_the_program():
    prog = program()
    space = space_for(prog, prog.pipelines["compress"], extra={"ratio": 0.3333})
    assert space.axes["bits"].ladder == (2, 4, 8, 16, 32)
    assert len(space.axes["sparsity"].ladder) == 20 and space.axes["sparsity"].ladder[-1] == 0.95
    ratio = space.axes["ratio"].ladder
    assert len(ratio) == 12 and 0.3333 in ratio and ratio[0] == 0.1 and ratio[-1] == 1.0   # 11 points + witness
    enum = Knob("m", "enum", None, members=("a", "b", "c"), default="b", span=SP)
    from kmr_dsl.search.space import ladder_for
    assert ladder_for(enum) == (("a", "b", "c"), False)
    wide = Knob("r", "int", Domain(lo=1, hi=256), default=8, span=SP)
    ladder, _ = ladder_for(wide)
    assert ladder[0] == 1 and ladder[-1] == 256 and 8 in ladder and len(ladder) == 12
    assert ladder_for(Knob("k", "int", Domain(lo=1, hi=16, lo_closed=False), span=SP))[0] == tuple(range(2, 17))


def test_pressure_follows_the_side_of_each_line():
    ratio_line = Constraint(">=", Op("/", (BASE_SIZE, SIZE), SP), Const(4, "number", SP), True, SP)
    prog = program(extra_lines=(ratio_line,))
    assert budget_pressure_terms(prog.pipelines["compress"]) == {"size": 1}
    problem = ProgramProblem(prog, "compress", verifier=fake_verifier())
    small, large = {"sparsity": 0.9, "bits": 4, "ratio": 1.0}, {"sparsity": 0.1, "bits": 4, "ratio": 1.0}
    assert problem.pressure(small) < problem.pressure(large)
    assert problem.cost_label == "size" and problem.quality_label == "accuracy(test)"
    assert meter_label(MeterRef("latency", (("batch", 8),), False, False, SP)) == "latency(batch=8)"
    assert shown_and_units(prog, prog.pipelines["compress"]) == (
        ["size", "accuracy(test)"], {"size": "bytes", "accuracy(test)": "ratio"})


def test_no_weight_profiles_means_no_prior():
    verifier = fake_verifier()
    verifier.predict_layers = lambda *args, **kwargs: {"fc1": {"density": 1.0, "bits": 32.0}}
    setting = {"sparsity": 0.5, "bits": 8, "ratio": 1.0}
    # a session with no float matrix layer (or a stand-in without profiles) gives none
    assert ProgramProblem(program(), "compress", verifier=verifier, profiles=dict).distortion(setting) is None
    assert ProgramProblem(program(), "compress", verifier=verifier).distortion(setting) is None
