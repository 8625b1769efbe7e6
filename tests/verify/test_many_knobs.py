"""25 scalar knobs acting on the same layers: one component no table or affine form covers.

Before: the knapsack could not take it (11^25 points, products of the knobs), so Z3 got
nonlinear arithmetic over every layer and did not finish, and the vacuity warning asked
Z3 again. Now a witness comes from the descent search (re-checked exactly), a line
the bounds refute alone is refuted without a solver, and lines infeasible only together
are refuted by a certificate over the layers' shared counts (verify/joint.py) that an
independent exact check accepts, and rejects once perturbed.
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import pytest
import sympy as sp

from kmr_dsl.check import check_source
from kmr_dsl.diagnostics import render_all
from kmr_dsl.verify import Verdict, verify
from kmr_dsl.verify.budget import budget_lines, holds
from kmr_dsl.facts import ModelFacts
from kmr_dsl.verify import joint
from kmr_dsl.verify.algebra import frac
from kmr_dsl.verify.atoms import NotAtomic, analyse, ival
from kmr_dsl.verify.numeric import evaluate
from kmr_dsl.verify.obligations import pipeline_model

from tests.check.fakes import chain as shapes_chain
from tests.check.fakes import shared_knobs_program
from tests.verify.test_knapsack import chain

KNOBS = 25


def source(lines: list[str], count: int = KNOBS) -> str:
    return shared_knobs_program(lines, count)


def run(lines: list[str], n: int = 6):
    facts = chain(n)
    prog, diags = check_source(source(lines), "k.kmr", facts_provider=lambda spec, trust, span: facts)
    assert prog is not None, render_all(diags)
    report = verify(prog)
    return prog, report, next(r for r in report.results if r.kind == "feasibility")


def test_a_witness_is_found_and_holds_exactly():
    prog, report, res = run(["size <= 30% * baseline.size", "nonzero >= 10% * baseline.nonzero"])
    assert res.verdict is Verdict.PROVED and res.method == "descent", res
    model = pipeline_model(prog, "compress")
    lines, _ = budget_lines(model)
    env = model.knobs.env(model.knobs.complete(res.witness))
    assert all(holds(ln.op, evaluate(ln.expr, env)) for ln in lines)
    # the defaults (no compression) violate the size line: the search had work to do
    assert any(d.code == "KMR312" for d in report.diagnostics)
    assert not any(d.code == "KMR310" for d in report.diagnostics)


def test_a_line_out_of_reach_is_refuted_without_a_solver():
    _, _, res = run(["size <= 1% * baseline.size", "nonzero >= 10% * baseline.nonzero"])
    assert res.verdict is Verdict.REFUTED and res.method == "bounds", res
    assert any(m.kind == "line" and m.text.startswith("size <= 1%") for m in res.core)


# ---------------------------------------------------------------- lines infeasible only together

JOINT = ["size <= 14% * baseline.size", "nonzero >= 90% * baseline.nonzero"]


def widths_chain(n: int) -> ModelFacts:
    """Linear layers of several shapes: one count (atom) per shape, so the lines couple
    several counts and the proof is the Lagrangian one."""
    return shapes_chain(n, (64, 96, 128, 80))


def model_lines(lines: list[str], facts, knobs: int = KNOBS):
    prog, diags = check_source(source(lines, knobs), "k.kmr", facts_provider=lambda spec, trust, span: facts)
    assert prog is not None, render_all(diags)
    model = pipeline_model(prog, "compress")
    return prog, model, budget_lines(model)[0]


def test_each_line_alone_is_met_but_not_both():
    for one in JOINT:
        _, _, res = run([one])
        assert res.verdict is Verdict.PROVED, (one, res)
    _, report, res = run(JOINT)
    assert res.verdict is Verdict.REFUTED and res.method == "decoupled", res
    assert [m.text for m in res.core] == JOINT and res.core_minimal
    assert res.certificate["kind"] == "decoupled" and res.certificate["checked"]
    text = render_all(report.diagnostics)
    assert "KMR302" in text and "checked in exact arithmetic" in text and "25 knobs" in text


def test_several_layer_shapes_are_refuted_by_a_lagrangian_certificate():
    _, model, lines = model_lines(JOINT, widths_chain(8))
    cert = joint.refute(lines, model.knobs)
    assert cert is not None and cert.atoms == 4
    assert any(kind == "lagrangian" for kind, _ in cert.proofs)
    assert all(y > 0 for y in cert.multipliers) and cert.bound > 0
    assert joint.check(lines, model.knobs, cert)


def test_a_perturbed_certificate_is_rejected():
    _, model, lines = model_lines(JOINT, widths_chain(8))
    cert = joint.refute(lines, model.knobs)
    k = next(k for k, (kind, _) in enumerate(cert.proofs) if kind == "lagrangian")
    y = cert.multipliers
    for bad_y in ([y[0], Fraction(0)], [Fraction(0), y[1]], [y[0], -y[1]], [y[0], y[1] * 1000]):
        assert not joint.check(lines, model.knobs, replace(cert, multipliers=bad_y)), bad_y
    assert not joint.check(lines, model.knobs, replace(cert, bound=cert.bound * 2))
    kind, boxes = cert.proofs[k]
    j = next(iter(boxes))
    for bad in (boxes[j][1:], boxes[j][:-1], [(lo + 1, hi) for lo, hi in boxes[j]]):
        proofs = list(cert.proofs)
        proofs[k] = (kind, {**boxes, j: bad})
        assert not joint.check(lines, model.knobs, replace(cert, proofs=proofs))


def test_a_perturbed_split_proof_is_rejected():
    _, model, lines = model_lines(JOINT, chain(6))
    cert = joint.refute(lines, model.knobs)
    assert cert is not None and all(kind == "split" for kind, _ in cert.proofs)
    assert joint.check(lines, model.knobs, cert)
    for k, (kind, pieces) in enumerate(cert.proofs):
        for bad in (pieces[1:], [(lo, hi, 1 - i) for lo, hi, i in pieces]):
            proofs = list(cert.proofs)
            proofs[k] = (kind, bad)
            assert not joint.check(lines, model.knobs, replace(cert, proofs=proofs))
    # the same certificate does not prove a looser budget
    _, model2, looser = model_lines(["size <= 30% * baseline.size", JOINT[1]], chain(6))
    assert not joint.check(looser, model2.knobs, cert)


def test_a_feasible_pair_gets_a_witness_not_a_refutation():
    prog, _, res = run(["size <= 20% * baseline.size", "nonzero >= 90% * baseline.nonzero"])
    assert res.verdict is Verdict.PROVED, res
    model = pipeline_model(prog, "compress")
    lines, _ = budget_lines(model)
    assert joint.refute(lines, model.knobs) is None
    env = model.knobs.env(model.knobs.complete(res.witness))
    assert all(holds(ln.op, evaluate(ln.expr, env)) for ln in lines)


def test_forty_knobs_are_never_enumerated():
    # 11^40 x 4 settings: any enumeration of the knobs would never end; the proof's size is
    # (case settings) x (counts) x (pieces), here 4 x 4 x a few dozen
    _, model, lines = model_lines(JOINT, widths_chain(12), knobs=40)
    cert = joint.refute(lines, model.knobs)
    assert cert is not None and cert.free == 40 and cert.atoms == 4 and len(cert.proofs) == 4
    pieces = sum(len(w) if kind == "split" else sum(len(b) for b in w.values()) for kind, w in cert.proofs)
    assert pieces <= 4 * 4 * joint.MAX_BOXES
    assert joint.check(lines, model.knobs, cert)


def test_a_count_not_monotone_in_its_knob_is_no_atom():
    k = sp.Symbol("k")
    box = {k: (Fraction(0), Fraction(1, 2))}
    assert analyse(sp.floor(100 * (1 - k) + sp.Rational(1, 2)), box, {})[2] == {k: -1}
    with pytest.raises(NotAtomic):
        analyse(k * (1 - k), box, {})


def test_exact_interval_evaluation_encloses_every_point():
    a = sp.Symbol("a")
    e = sp.Piecewise((a / 2 + 670, a / 2 + 514 <= 2048), (2122, True)) - sp.Rational(3, 10) * a
    for lo, hi in ((Fraction(0), Fraction(4096)), (Fraction(3000), Fraction(3100)), (Fraction(7), Fraction(7))):
        elo, ehi = ival(e, {a: (lo, hi)})
        for x in range(int(lo), int(hi) + 1, 13):
            v = frac(evaluate(e, {a: Fraction(x)}))
            assert elo <= v <= ehi
