"""An unused knob family whose selector matches no layer is a KMR214 warning (it used
to pass silently: a typo in a selector nobody reads yet); a used one is checked by its
`for` loop, and an unused one that matches something says nothing."""

from __future__ import annotations

from kmr_dsl.check import check_source
from kmr_dsl.diagnostics import Severity, has_errors

from check.fakes import provider

PROGRAM = '''import "std"
model m = factory("fake:mlp")
knob s : float in [0.0, 0.9] step 0.1 = 0.5
{family}
pipeline p(m) {{
    prune(amount = s) on layers(Linear)
    budget {{ size <= 1 MB }}
}}
'''


def _check(family: str):
    return check_source(PROGRAM.format(family=family), "fam.kmr", provider)


def test_unused_family_matching_nothing_is_a_kmr214_warning():
    program, diags = _check('knob f[l in layers(Conv2d)] : float in [0.0, 0.9] step 0.1 = 0.5')
    found = [d for d in diags if d.code == "KMR214"]
    assert program is not None and not has_errors(diags)
    assert len(found) == 1 and found[0].severity is Severity.WARNING
    assert found[0].span.line == 4 and "`f`" in found[0].message and found[0].hint


def test_unused_family_with_a_name_glob_matching_nothing():
    _, diags = _check('knob g[l in layers(Linear, name = "nothing*")] : int in {4, 8} = 8')
    assert [d.code for d in diags if d.code == "KMR214"] == ["KMR214"]


def test_unused_family_that_matches_says_nothing():
    _, diags = _check('knob f[l in layers(Linear)] : float in [0.0, 0.9] step 0.1 = 0.5')
    assert "KMR214" not in {d.code for d in diags}
