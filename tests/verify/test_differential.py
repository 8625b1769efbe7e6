"""Differential tests: the stages that compute the same thing agree (STYLE.md item 12).

On random small pipelines (tests/verify/random_programs.py) and random settings:
- the cost models evaluated three ways agree exactly: our numeric evaluator, sympy's
  own evaluation (xreplace) and Z3's evaluation of the lowered term;
- the cheap bounds enclose the true value of every budget line;
- a feasibility witness really meets every analytic line;
- a composability counterexample really violates its clause, and a proved clause
  holds at every setting of the (finite) knobs;
- an unsat core is unsat, and dropping any member makes it satisfiable.
"""

from __future__ import annotations

import itertools
import os
from fractions import Fraction

import sympy as sp
import z3
from hypothesis import HealthCheck, given, note, settings as hsettings, strategies as st

from kmr_dsl.verify import Verdict, verify
from kmr_dsl.verify.bounds import MARGIN, bound_line
from kmr_dsl.verify.decomposition import decompose
from kmr_dsl.verify.budget import budget_lines, holds
from kmr_dsl.core.state import ANALYTIC_METERS
from kmr_dsl.verify.cost import meter_expr
from kmr_dsl.verify.line_checks import meets_all
from kmr_dsl.verify.lower import Encoding, _fraction
from kmr_dsl.verify.numeric import evaluate
from kmr_dsl.verify.obligations import pipeline_model
from kmr_dsl.verify.report import Limits
from kmr_dsl.verify.unsat_cores import _bound_text, _Problem
from tests.verify.random_programs import describe, programs, settings

RLIMIT = 3_000_000        # keeps one example well under a second; UNKNOWN is skipped, never counted
FAST = hsettings(max_examples=int(os.environ.get("KMR_VERIFY_EXAMPLES", "40")), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.data_too_large])


def _sympy_value(expr, model, setting):
    subs = {}
    for name, v in setting.items():
        kv = model.knobs.by_name[name]
        subs[kv.symbol] = (sp.true if v else sp.false) if kv.kind == "bool" else sp.Rational(v)
    out = expr.xreplace(subs)
    assert isinstance(out, sp.Rational), out
    return Fraction(int(out.p), int(out.q))


def _z3_value(expr, model, setting):
    enc = Encoding(model.knobs)
    term = enc.lower(expr)
    s = z3.Solver()
    s.add(enc.structural())
    s.add(enc.pin(setting))
    assert s.check() == z3.sat
    return _fraction(s.model().eval(term, model_completion=True))


@FAST
@given(data=st.data())
def test_cost_models_agree_three_ways(data):
    prog = data.draw(programs())
    model = pipeline_model(prog, "compress")
    setting = data.draw(settings(model))
    env = model.knobs.env(setting)
    for meter in ANALYTIC_METERS:
        expr = meter_expr(model, meter, model.final)
        if not _modelled(expr):
            continue        # a value the state says it does not know: every evaluator refuses it
        ours = evaluate(expr, env)
        assert ours == _sympy_value(expr, model, setting), meter
        assert ours == _z3_value(expr, model, setting), meter


def _modelled(expr) -> bool:
    """Whether an expression holds no `Unmodelled` placeholder (verify/stepping.py: e.g. the
    density of a sparse layer after channel pruning), which no evaluator takes."""
    from kmr_dsl.verify.algebra import Unmodelled
    return not any(isinstance(s, Unmodelled) for s in getattr(expr, "free_symbols", ()))


@FAST
@given(data=st.data())
def test_bounds_enclose_every_setting(data):
    prog = data.draw(programs())
    model = pipeline_model(prog, "compress")
    lines, _ = budget_lines(model)
    setting = data.draw(settings(model))
    env = model.knobs.env(setting)
    for ln in lines:
        if ln.problem or not _modelled(ln.expr):
            continue
        b = bound_line(decompose(ln.expr, model.knobs), model.knobs)
        g = float(evaluate(ln.expr, env))
        slack = MARGIN * max(b.scale, 1.0)
        assert b.lb - slack <= g <= b.ub + slack


@FAST
@given(prog=programs())
def test_witnesses_counterexamples_and_cores_are_real(prog):
    note(describe(prog))
    report = verify(prog, rlimit=RLIMIT)
    assert not any((r.reason or "").startswith("internal error") for r in report.results), report.dumps()
    model = pipeline_model(prog, "compress")
    lines, _ = budget_lines(model)
    for res in report.results:
        if res.kind == "feasibility" and res.verdict is Verdict.PROVED:
            assert meets_all(lines, model, model.knobs.complete(res.witness))
            exact = model.knobs.env(model.knobs.complete(res.witness))
            assert all(holds(ln.op, evaluate(ln.expr, exact)) for ln in lines)
        if res.kind == "feasibility" and res.verdict is Verdict.REFUTED:
            _check_core(model, lines, res.core)
    _check_composability(model, report)


def _check_composability(model, report):
    """Refuted clauses fail at their counterexample; proved ones hold on the whole finite grid.

    Results come one per (step, clause), in step order: the same grouping as here.
    """
    groups: dict = {}
    for r in model.requirements:
        groups.setdefault((r.step_index, r.clause_index), []).append(r)
    results = [r for r in report.results if r.kind == "composability"]
    assert len(results) == len(groups)
    finite = all(kv.finite for kv in model.knobs)
    grid = list(itertools.islice(itertools.product(*(kv.values for kv in model.knobs)), 2000)) if finite else []
    for res, (_, reqs) in zip(results, sorted(groups.items())):
        if res.verdict is Verdict.REFUTED:
            env = model.knobs.env(model.knobs.complete(res.counterexample))
            assert any(not evaluate(r.condition, env) for r in reqs)
        elif res.verdict is Verdict.PROVED:
            for combo in grid:
                env = model.knobs.env({kv.name: v for kv, v in zip(model.knobs, combo)})
                assert all(evaluate(r.condition, env) for r in reqs)


def _check_core(model, lines, core):
    """The core is unsat under the Z3 encoding, and every strict subset is sat."""
    prob = _Problem(model, lines, Limits())
    texts = {}
    for i, (kind, what) in enumerate(prob.members):
        if kind == "line":
            texts[("line", lines[what].text)] = i
        else:
            texts[("bound", _bound_text(model, *what).text)] = i
    idx = [texts[(m.kind, m.text)] for m in core]
    assert prob.check(idx) == z3.unsat
    for drop in idx:
        assert prob.check([i for i in idx if i != drop]) == z3.sat, f"dropping {prob.members[drop]} stays unsat"


@FAST
@given(prog=programs())
def test_bounds_and_solver_agree_on_feasibility(prog):
    """The same program decided with the cheap bounds first, and by Z3 alone."""
    note(describe(prog))
    a = [r.verdict for r in verify(prog, rlimit=RLIMIT, use_bounds=True).results if r.kind == "feasibility"]
    b = [r.verdict for r in verify(prog, rlimit=RLIMIT, use_bounds=False).results if r.kind == "feasibility"]
    if Verdict.UNKNOWN not in a + b:      # a solver limit is not a disagreement
        assert a == b
