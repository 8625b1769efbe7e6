"""Bad input from the scale issue: division by an interval holding 0, NaN/inf in a cost
expression, an empty family, huge integer ranges. Each is a located KMR2xx/3xx
diagnostic or a verdict, never an internal error (`method == "internal"`) nor a traceback.
(The integer-knob divisor, floats past float64 and a 10^9-value range are in
test_knapsack.py; these are the cases it does not reach.)"""

from __future__ import annotations

import pytest

from kmr_dsl.check import check_source
from kmr_dsl.verify import Verdict, verify

from tests.verify.test_knapsack import chain

HEAD = '''import "std"
model deep = factory("bench:mlp")
'''

CASES = {
    # a real knob: no lattice to search for the zero, the interval [-1, 1] holds it
    "real_divisor_through_zero": ('''knob r : float in [-1.0, 1.0] = 0.5
pipeline compress(deep) {
    budget { size / r <= 1 KB }
}''', "KMR305", 5),
    # a literal beyond float64 is refused where it is written
    "infinite_literal": ('''knob k : float in [0.0, 1.0] = 0.5
pipeline compress(deep) {
    budget { size * k <= 1e999 B }
}''', "KMR219", 5),
    # a family over no layer, stepped over by a loop over no layer
    "empty_family": ('''knob s[l in layers(Conv2d)] : float in [0.0, 0.9] step 0.05 = 0.5
pipeline compress(deep) {
    for l in layers(Conv2d) { prune(amount = s[l]) }
    budget {
        size <= 20% * baseline.size
        nonzero >= 40% * baseline.nonzero
    }
}''', "KMR214", 5),
    # 0 in a huge integer range as a divisor: found without listing 10^9 values
    "huge_range_divisor": ('''knob mem : int in [0 B, 1 GB] = 1 B
pipeline compress(deep) {
    budget { size / mem <= 2 }
}''', "KMR305", 5),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_a_located_diagnostic(name):
    body, code, line = CASES[name]
    facts = chain(3)
    prog, diags = check_source(HEAD + body, "k.kmr", facts_provider=lambda spec, trust, span: facts)
    if prog is not None:
        report = verify(prog)
        assert not any(r.method == "internal" for r in report.results), report.dumps()
        diags = report.diagnostics
        assert report.exit_code == 1
    found = [d for d in diags if d.code == code]
    assert found and found[0].span.line == line and found[0].span.file == "k.kmr", [(d.code, d.span) for d in diags]


def test_inf_minus_inf_in_the_float_bounds_is_no_internal_error():
    # 1e600 * size overflows float64 on both sides of the subtraction (inf - inf = NaN in the
    # float enclosures); the verdict must come from exact arithmetic, and be right: at k = 1
    # the left side is 0
    body = '''knob k : float in [0.0, 1.0] = 0.5
pipeline compress(deep) {
    budget { size * 1e300 * 1e300 - size * k * 1e300 * 1e300 <= 1 KB }
}'''
    facts = chain(3)
    prog, diags = check_source(HEAD + body, "k.kmr", facts_provider=lambda spec, trust, span: facts)
    assert prog is not None
    report = verify(prog)
    res = next(r for r in report.results if r.kind == "feasibility")
    assert res.method != "internal" and res.verdict is Verdict.PROVED, res
    assert res.witness["k"] == 1


def test_a_range_of_a_million_gigabytes_is_decided_symbolically():
    body = '''knob mem : int in [1 B, 1000000 GB] = 1 B
knob s[l in layers(Linear)] : float in [0.0, 0.9] step 0.05 = 0.5
pipeline compress(deep) {
    for l in layers(Linear) { prune(amount = s[l]) }
    budget {
        size <= mem
        mem <= 2 KB
        nonzero >= 90% * baseline.nonzero
    }
}'''
    facts = chain(3)
    prog, diags = check_source(HEAD + body, "k.kmr", facts_provider=lambda spec, trust, span: facts)
    assert prog is not None, [(d.code, d.message) for d in diags]
    report = verify(prog)
    res = next(r for r in report.results if r.kind == "feasibility")
    assert res.method != "internal" and res.verdict is Verdict.REFUTED, res
    assert res.certificate and res.certificate["checked"]
