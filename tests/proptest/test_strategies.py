"""Domains -> Hypothesis strategies: exactly the admitted values, simplest value first."""

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis.errors import NoSuchExample
from hypothesis import strategies as st

from kmr_dsl.core.program import Domain, Knob
from kmr_dsl.proptest.strategies import knob_strategy, show_setting, show_value, value_strategy

QUIET = settings(database=None, max_examples=200, suppress_health_check=list(HealthCheck))


def simplest(strategy):
    return find(strategy, lambda _: True, settings=QUIET)


@pytest.mark.parametrize("kind,domain,members,first", [
    ("int", Domain(values=(32, 8, 16)), (), 8),                       # a set shrinks to its smallest value
    ("float", Domain(lo=0.0, hi=0.9, step=0.05), (), 0.0),            # a stepped range to lo
    ("float", Domain(lo=0.0, hi=0.9, lo_closed=False, step=0.3), (), 0.3),   # an open end is excluded
    ("int", Domain(lo=3, hi=10), (), 3),
    ("int", Domain(lo=3, hi=10, lo_closed=False), (), 4),
    ("enum", None, ("magnitude", "channel"), "magnitude"),            # declaration order
    ("bool", None, (), False),
])
def test_simplest_value_is_the_first_of_the_domain(kind, domain, members, first):
    assert simplest(value_strategy(kind, domain, members)) == first


@settings(database=None, max_examples=100)
@given(st.data())
def test_draws_stay_inside_their_domains(data):
    cases = [
        ("float", Domain(lo=0.0, hi=1.0, hi_closed=False)),
        ("float", Domain(lo=0.0, hi=1.0, lo_closed=False)),
        ("int", Domain(lo=1, hi=4, hi_closed=False)),
        ("float", Domain(lo=0.0, hi=0.9, step=0.05)),
        ("int", Domain(values=(2, 4, 8))),
    ]
    for kind, domain in cases:
        value = data.draw(value_strategy(kind, domain))
        assert domain.contains(value), (domain, value)
        assert isinstance(value, int) if kind == "int" else isinstance(value, float)


def test_an_open_upper_end_is_never_drawn():
    dom = Domain(lo=0, hi=2, hi_closed=False)
    assert find(value_strategy("int", dom), lambda v: v >= 1, settings=QUIET) == 1
    with pytest.raises(NoSuchExample):      # no value reaches the excluded bound
        find(value_strategy("int", dom), lambda v: v >= 2, settings=QUIET)


def test_a_knob_draws_its_own_domain():
    knob = Knob("bits", "int", Domain(values=(4, 8, 16, 32)), default=8)
    assert simplest(knob_strategy(knob)) == 4
    assert find(knob_strategy(knob), lambda v: v > 8, settings=QUIET) == 16


def test_settings_read_as_kmr_source():
    assert show_setting({"sparsity": 0.0, "bits": 32, "method": "nm", "merge": True}) == \
        "sparsity = 0.0, bits = 32, method = nm, merge = true"
    assert show_value(0.25) == "0.25"
    assert show_setting({}) == "the defaults"
