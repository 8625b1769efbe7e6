"""The report does not grow with the number of layers unless asked (--verbose, JSON)."""

from __future__ import annotations

from kmr_dsl.diagnostics import Span
from kmr_dsl.verify import ObligationResult, Verdict, VerifyReport, verify
from tests.verify.test_knapsack import program

SRC = """import "std"
model deep = factory("bench:mlp")
knob b[l in layers(Linear)] : int in {{4, 8, 16, 32}} = 16
pipeline compress(deep) {{
    for l in layers(Linear) {{
        quantize(bits = b[l])
        prune(amount = 0.5)
    }}
    budget {{ size <= {budget} }}
}}
"""


def test_one_line_per_family_and_one_merged_precondition_error():
    for n in (10, 300):
        report = verify(program(SRC.format(budget="10 GB"), n))
        lines = report.render()
        families = {r.family for r in report.results if r.family}
        assert len(lines) == len(families) + 1, lines     # one per precondition family, the budget
        assert any(f"`prune` requires `layer.bits >= 16`: REFUTED for all {n:,} layers" in ln for ln in lines)
        assert any(f"`prune` requires `n <= m`: PROVED for all {n:,} layers" in ln for ln in lines)
        per_layer = len(report.results) - 1
        assert per_layer == len(families) * n
        assert len(report.render(verbose=True)) == per_layer + 1
        assert len(report.to_json()["results"]) == per_layer + 1      # JSON keeps every instance
        kmr301 = [d for d in report.diagnostics if d.code == "KMR301"]
        assert len(kmr301) == 1
        assert f"the same on {n - 1:,} more layers: fc1, fc2" in kmr301[0].notes[-1]


def test_mixed_verdicts_are_counted():
    span = Span("t.kmr", 3, 5, 3, 30)
    fam = "`prune` requires `layer.bits >= 16`"
    results = [ObligationResult("composability", v, span, f"{fam}: {v.value} on layer `fc{i}`", "p",
                                layers=(f"fc{i}",), family=fam)
               for i, v in enumerate([Verdict.PROVED] * 7 + [Verdict.REFUTED] * 2 + [Verdict.UNKNOWN])]
    lines = VerifyReport(results).render()
    assert lines == ["composability   REFUTED  `prune` requires `layer.bits >= 16`: REFUTED on 2, UNKNOWN on 1, "
                     "PROVED on 7 of 10 layers (first: `prune` requires `layer.bits >= 16`: refuted on layer `fc7`)"]
