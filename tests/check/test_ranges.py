"""Knob expressions passed to a parameter: relational range reasoning (check/ranges.py).

Interval arithmetic alone rejected `0.8 * s - s * s + 0.25` (it stays in [0.05, 0.41])
as able to reach -0.75; splitting the knob's range proves it in range, and an
expression that really leaves the range is reported at a concrete setting.
"""

from __future__ import annotations

import pytest

from kmr_dsl.check import check_source
from kmr_dsl.check.ranges import refine
from tests.check import fakes

SRC = """import "std"
model m = factory("fake:mlp")
knob s : float in [0.0, 1.0] = 0.5
knob t : float in [0.0, 0.9] step 0.1 = 0.5
knob n : int in [0, 1000] = 3
pipeline p(m) {{
    prune(amount = {arg}) on layers(Linear)
    budget {{ size <= 1 GB }}
}}
"""


def codes(arg):
    program, diags = check_source(SRC.format(arg=arg), "r.kmr", facts_provider=fakes.provider)
    return [(d.code, d.message) for d in diags if d.severity.value == "error"]


@pytest.mark.parametrize("arg", ["0.8 * s - s * s + 0.25", "1.3 * s - s * s + 0.45", "t + 0.05 * s - 0.05 * s",
                                 "s * s * 0.5 + 0.1", "t * (1 - t) + 0.1", "0.5 - 0.4 * t + 0.4 * t * t"])
def test_provably_in_range_is_accepted(arg):
    assert codes(arg) == []


@pytest.mark.parametrize("arg,shown", [("2 * s - s * s", "is 1.0 at s = 1.0"),
                                       ("t - s", "is -0.1 at t = 0.9, s = 1.0"),
                                       ("n / 1000 - 0.1 * s", "is -0.019 at n = 31, s = 0.5")])
def test_really_out_of_range_is_reported_at_a_setting(arg, shown):
    found = codes(arg)
    assert len(found) == 1 and found[0][0] == "KMR210" and shown in found[0][1], found


def test_a_touching_end_is_found_at_its_point():
    # 1 - (s - 0.5)^2 reaches 1 exactly at s = 0.5: outside [0, 1), inside [0, 1]
    from kmr_dsl.core import program as P
    s = P.KnobRef("s", "s")
    knobs = {"s": P.Knob("s", "float", P.Domain(lo=0.0, hi=1.0), default=0.5)}
    ir = P.Op("-", (P.Const(1.0, "number"), P.Op("*", (P.Op("-", (s, P.Const(0.5, "number"))),
                                                     P.Op("-", (s, P.Const(0.5, "number")))))))
    assert refine(knobs, ir, 0.0, 1.0, True, False).verdict == "outside"    # s = 0.5 gives exactly 1
    assert refine(knobs, ir, 0.0, 1.0, True, True).verdict == "inside"
