"""25 scalar knobs acting on the same layers: one component no table or affine form covers.

Before: the knapsack could not take it (11^25 points, products of the knobs), so Z3 got
nonlinear arithmetic over every layer and did not finish, and the vacuity warning asked
Z3 again. Now a witness comes from the descent search (re-checked exactly) and a line
the bounds refute alone is refuted without a solver.
"""

from __future__ import annotations

from kmr_dsl.check import check_source
from kmr_dsl.diagnostics import render_all
from kmr_dsl.verify import Verdict, verify
from kmr_dsl.verify.budget import budget_lines, holds
from kmr_dsl.verify.numeric import evaluate
from kmr_dsl.verify.obligations import pipeline_model

from tests.verify.test_knapsack import chain

KNOBS = 25


def source(lines: list[str]) -> str:
    knobs = "\n".join(f"knob k{i} : float in [0.0, 0.5] step 0.05 = 0.0" for i in range(KNOBS))
    steps = "\n".join(f"        prune(amount = k{i})" for i in range(KNOBS))
    budget = "\n".join(f"        {ln}" for ln in lines)
    return f"""import "std"
model deep = factory("bench:mlp")
{knobs}
knob b : int in {{4, 8, 16, 32}} = 32
pipeline compress(deep) {{
    for l in layers(Linear) {{
{steps}
        quantize(bits = b)
    }}
    budget {{
{budget}
    }}
}}
"""


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
