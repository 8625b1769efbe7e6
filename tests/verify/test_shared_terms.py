"""A many-term group's bounds evaluate each distinct term once (intervals.ieval_sum).

The claim is strong: the same floats as walking the group's whole sum, every occurrence of
every term evaluated again. So the bounds (cells and points, precise and widened, relaxed
tails, one setting) are compared for equality with the walk's, on programs whose groups
mix repeated and distinct layer terms, and on random sums of terms over random boxes;
and the widened bounds must enclose the exact value at sampled settings.
"""

from __future__ import annotations

import random
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
import sympy as sp

from kmr_dsl.check import check_source
from kmr_dsl.diagnostics import render_all
from kmr_dsl.verify.bounds import MARGIN, bound_line, point_range, relax_line
from kmr_dsl.verify.decomposition import Decomposition, _intern, decompose
from kmr_dsl.verify.budget import budget_lines
from kmr_dsl.verify import intervals
from kmr_dsl.verify.intervals import ieval, ieval_sum, shape_of
from kmr_dsl.verify.numeric import evaluate
from kmr_dsl.verify.obligations import pipeline_model

from tests.check.fakes import chain, per_layer_program, shared_knobs_program

LINES = ["size <= 20% * baseline.size", "nonzero >= 40% * baseline.nonzero"]

PER_LAYER = per_layer_program(["size <= 20% * baseline.size", "nonzero >= 40% * baseline.nonzero"])

REAL = """import "std"
model deep = factory("bench:mlp")
knob a : float in [0.0, 0.6] = 0.0
knob c : float in [0.0, 0.5] step 0.1 = 0.0
knob b : int in {4, 8, 16} = 16
pipeline compress(deep) {
    for l in layers(Linear) {
        prune(amount = a)
        prune(amount = c)
        quantize(bits = b)
    }
    budget {
        size <= 20% * baseline.size
        nonzero >= 40% * baseline.nonzero
    }
}
"""

# 7 layers of 5 shapes: some layer terms repeat, some do not
PROGRAMS = {"shared": shared_knobs_program(LINES, 3), "per-layer": PER_LAYER, "real": REAL}


def model_of(src: str):
    facts = chain(7, (64, 96, 128, 80, 48))
    prog, diags = check_source(src, "t.kmr", facts_provider=lambda spec, trust, span: facts)
    assert prog is not None, render_all(diags)
    return pipeline_model(prog, "compress")


def walked(dec: Decomposition) -> Decomposition:
    """The same decomposition evaluated the old way: every group's sum walked as one tree."""
    return replace(dec, groups=[replace(g, parts=()) for g in dec.groups])


def same(a, b):
    assert (a.lb, a.ub, a.exact, a.argmin, a.argmax) == (b.lb, b.ub, b.exact, b.argmin, b.argmax)
    assert [(r.lb, r.ub, r.best) for r in a.groups] == [(r.lb, r.ub, r.best) for r in b.groups]


def settings(knobs, rng, n):
    out = []
    for _ in range(n):
        s = {}
        for v in knobs.vars:
            if v.finite:
                s[v.name] = rng.choice(list(v.values))
            else:
                s[v.name] = v.lo + (v.hi - v.lo) * Fraction(rng.randrange(0, 1001), 1000)
        out.append(s)
    return out


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_bounds_equal_the_tree_walk_and_enclose_exact_values(name):
    model = model_of(PROGRAMS[name])
    knobs = model.knobs
    lines, _ = budget_lines(model)
    rng = random.Random(7)
    families = sorted({v.knob.name for v in knobs.vars if v.numeric})
    shared = 0
    for ln in lines:
        dec = decompose(ln.expr, knobs)
        shared += sum(1 for g in dec.groups if g.parts)
        old = walked(dec)
        for widen in (False, True):
            same(bound_line(dec, knobs, widen=widen), bound_line(old, knobs, widen=widen))
        base, base_old = bound_line(dec, knobs), bound_line(old, knobs)
        for fam in families:
            for side in ("lo", "hi"):
                # the core minimisation's step (only the tail beyond the bound evaluated),
                # and the widened bound over the relaxed domain it concludes from
                same(relax_line(dec, knobs, base, {}, fam, side), relax_line(old, knobs, base_old, {}, fam, side))
                relax = {fam: {side}}
                same(bound_line(dec, knobs, relax, widen=True), bound_line(old, knobs, relax, widen=True))
        sound = bound_line(dec, knobs, widen=True)
        for s in settings(knobs, rng, 12):
            env = knobs.env(s)
            v = float(evaluate(ln.expr, env))
            lo, hi, scale = point_range(dec, knobs, env)
            assert (lo, hi, scale) == point_range(old, knobs, env)
            slack = MARGIN * max(scale, 1.0)
            assert lo - slack <= v <= hi + slack
            assert sound.lb - slack <= v <= sound.ub + slack
    assert shared                                         # the shared evaluation was exercised


X, Y = sp.Symbol("x"), sp.Symbol("y")
HALF = sp.Rational(1, 2)


def random_term(rng):
    c = sp.Integer(rng.choice([64 * 96, 96 * 128, 80 * 64, 3]))
    d = sp.Rational(rng.choice([1, 3, 7]), rng.choice([1, 2, 10]))
    pick = rng.randrange(6)
    if pick == 0:
        return sp.floor((1 - X) * sp.floor(c * (1 - Y) + HALF) + HALF)
    if pick == 1:
        return d * sp.Piecewise((c, X <= sp.Rational(1, 4)), (c * Y, True))
    if pick == 2:
        return sp.Min(c * Y, d * X + 3)
    if pick == 3:
        return (X * Y + d) ** 2
    if pick == 4:
        return d / (Y + 3)
    return c * X * Y


@pytest.mark.parametrize("chunk", [1 << 20, 64])
def test_a_random_sum_evaluates_to_the_tree_walks_floats(chunk, monkeypatch):
    monkeypatch.setattr(intervals, "CHUNK", chunk)        # 64: one distinct term per evaluation
    rng = random.Random(11)
    nrng = np.random.default_rng(11)
    for trial in range(40):
        terms = [random_term(rng) for _ in range(rng.randrange(2, 9))]
        terms += [rng.choice(terms) for _ in range(rng.randrange(0, 5))]     # repeats
        rng.shuffle(terms)
        assert not any(isinstance(t, sp.Add) for t in terms)
        symbols, parts, consts = [], [], []
        for t in terms:
            slots: dict = {}
            tc: list = []
            shape = _intern(shape_of(t, slots, tc))
            for s in slots:
                if s not in symbols:
                    symbols.append(s)
            parts.append((shape, tuple(symbols.index(s) for s in slots), len(tc)))
            consts += tc
        size = 64
        env = {}
        for s in symbols:
            lo = nrng.uniform(0.0, 0.5, size)
            hi = lo + nrng.uniform(0.0, 0.3, size) * (nrng.random(size) < 0.7)
            if trial % 4 == 3:
                hi[:4] = np.inf                                                # relaxed tails
            env[s] = (lo[None, :], hi[None, :])
        const_cols = np.array([consts], dtype=float).reshape(1, -1)
        whole = sp.Add._from_args(tuple(terms))
        for widen in (False, True):
            cols = iter([const_cols[:, [i]] for i in range(const_cols.shape[1])])
            want = ieval(whole, env, cols, widen)
            got = ieval_sum(whole.args, tuple(parts), env, const_cols, widen)
            for w, g in zip(want, got):
                w, g = np.broadcast_to(w, (1, size)), np.broadcast_to(g, (1, size))
                assert np.array_equal(w, g, equal_nan=True), (trial, terms)
        # and it encloses the exact value at points of the boxes
        lo, hi = ieval_sum(whole.args, tuple(parts), env, const_cols, True)
        for j in range(0, size, 9):
            if any(not np.isfinite(env[s][1][0, j]) for s in symbols):
                continue
            point = {s: Fraction(float(env[s][0][0, j])) for s in symbols}
            v = float(evaluate(whole, point))
            slack = 1e-9 * (1 + abs(v))
            assert np.broadcast_to(lo, (1, size))[0, j] - slack <= v <= np.broadcast_to(hi, (1, size))[0, j] + slack
