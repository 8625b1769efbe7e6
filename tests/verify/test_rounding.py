"""verify/rounding.py: a count rounded over a continuous knob is the runtime's whole
count at every value of the knob, with no floor left for the solver."""

from __future__ import annotations

import math
from fractions import Fraction
from types import SimpleNamespace

import pytest
import sympy as sp
from hypothesis import given, settings, strategies as st

from kmr_dsl.verify import algebra as A
from kmr_dsl.verify.knobs import KnobVar
from kmr_dsl.verify.numeric import evaluate
from kmr_dsl.verify.rounding import MAX_PIECES, step_ops

R = sp.Symbol("r")
S = sp.Symbol("s")


def _knobs(lo=Fraction(1, 20), hi=Fraction(1), lo_closed=True):
    var = KnobVar("r", None, "real", R, lo=lo, hi=hi, lo_closed=lo_closed)
    step = KnobVar("s", None, "set", S, values=(Fraction(1), Fraction(2)))
    return SimpleNamespace(by_symbol={R: var, S: step})


fractions = st.fractions(min_value=-40, max_value=40, max_denominator=12)


@settings(max_examples=200, deadline=None)
@given(c=fractions.filter(lambda c: c != 0), d=fractions, t=st.fractions(min_value=0, max_value=1, max_denominator=97),
       down=st.booleans(), k=st.integers(-80, 80))
def test_the_pieces_are_floor_and_ceil_at_every_value(c, d, t, down, k):
    lo, hi = Fraction(1, 20), Fraction(1)
    ops = step_ops(_knobs(lo, hi))
    x = A.add(A.mul(A.num(c), R), A.num(d))
    rounded = ops.floor(x) if down else ops.ceil(x)
    edge = (k - d) / c                               # where c * r + d is the whole number k
    for r in (lo + t * (hi - lo), lo, hi) + ((edge,) if lo <= edge <= hi else ()):
        want = (math.floor if down else math.ceil)(c * r + d)
        assert evaluate(rounded, {R: r}) == want, r
    assert A.knob_symbols(rounded) <= {R}          # no integer floor left for Z3


def test_lowrank_rank_over_a_continuous_ratio_is_a_whole_rank():
    """rank = max(1, ceil(7 * r)) for r in [0.05, 1], as lowrank keeps it."""
    from kmr_dsl.core.step import settle
    rank = settle("rank", A.mul(A.num(7), R), None, step_ops(_knobs()))
    for r, want in ((Fraction(1, 20), 1), (Fraction(1, 7), 1), (Fraction(15, 100), 2), (Fraction(1, 2), 4),
                    (Fraction(6, 7), 6), (Fraction(87, 100), 7), (Fraction(1), 7)):
        assert evaluate(rank, {R: r}) == want, r


def test_finite_knobs_keep_the_solvers_floor_and_other_shapes_are_refused():
    ops = step_ops(_knobs())
    assert ops.floor(A.num(Fraction(7, 2))) == 3
    assert isinstance(ops.floor(A.mul(A.num(Fraction(1, 2)), S)), sp.floor)     # a finite knob: split by Z3
    with pytest.raises(A.NotModelled):
        ops.floor(A.mul(R, S))                                                   # two knobs
    with pytest.raises(A.NotModelled):
        ops.floor(A.mul(R, R))                                                   # not affine
    with pytest.raises(A.NotModelled):
        ops.floor(A.mul(A.num(2 * MAX_PIECES), R))                               # too many values


def test_a_count_that_is_a_choice_is_rounded_in_each_branch():
    """A pruned factorized layer keeps round_half_up(0.7 * numel) weights, where numel is
    its factors' count (rank * 24, the rank a choice over `r`) or the dense 128."""
    from kmr_dsl.core.step import round_half_up, settle
    ops = step_ops(_knobs())
    rank = settle("rank", A.mul(A.num(8), R), None, ops)                   # ceil(8 r), 1..8
    numel = A.ite(A.compare("<", A.mul(rank, 24), 128), A.mul(rank, 24), A.num(128))
    kept = round_half_up(A.mul(A.num(Fraction(7, 10)), numel), ops)
    assert not any(isinstance(n, sp.floor) for n in sp.preorder_traversal(kept))
    for r in (Fraction(1, 20), Fraction(1, 8), Fraction(1, 4), Fraction(5, 8), Fraction(1)):
        k = math.ceil(8 * r)
        n = k * 24 if k * 24 < 128 else 128
        assert evaluate(kept, {R: r}) == math.floor(Fraction(7, 10) * n + Fraction(1, 2)), r
