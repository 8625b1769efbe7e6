"""Work shared between layers of one shape gives exactly what per-layer work gives.

The feasibility path reuses per-layer work: a negated term's info derived from the term's
(decomposition.scaled_info), groups keyed by symbol and shape identities (decompose, separate),
domains found once per declaration tuple (bounds._evaluate), a point's enclosure classed
by value identities, a setting's range cache keyed by identities and exact values
(line_checks.line_range), a class's members counted by value identities
(knapsack.exact_line_values), a part's exact values kept per point of the knobs it reads,
and certificate minima in whole numbers, remembered per multiplier vector. Each is
compared here with the plain computation it replaces.
"""

from __future__ import annotations

import random
from dataclasses import replace
from fractions import Fraction

import pytest

from kmr_dsl.check import check_source
from kmr_dsl.diagnostics import render_all
from kmr_dsl.verify import certificate
from kmr_dsl.verify.bounds import bound_line, point_range, relax_line
from kmr_dsl.verify.decomposition import decompose, scaled_info, term_info
from kmr_dsl.verify.budget import budget_lines
from kmr_dsl.verify.knapsack import exact_line_values
from kmr_dsl.verify.line_checks import decomposition, line_range, separable
from kmr_dsl.verify.numeric import evaluate
from kmr_dsl.verify.obligations import pipeline_model
from kmr_dsl.verify.separable import exact_values

from tests.check.fakes import chain, per_layer_program

PROGRAM = per_layer_program(["size <= 12% * baseline.size", "nonzero >= 88% * baseline.nonzero",
                             "nonzero <= 95% * baseline.nonzero"])


@pytest.fixture(scope="module")
def model_lines():
    facts = chain(23, (64, 96, 128, 80, 48))
    prog, diags = check_source(PROGRAM, "t.kmr", facts_provider=lambda spec, trust, span: facts)
    assert prog is not None, render_all(diags)
    model = pipeline_model(prog, "compress")
    lines, _ = budget_lines(model)
    return model, lines


def group_view(dec):
    return (dec.const, dec.symbols, dec.exact_compare,
            [(g.expr, g.symbols, g.key, g.consts, g.parts, g.decls) for g in dec.groups])


def test_a_negated_terms_info_is_the_walks(model_lines):
    model, lines = model_lines
    neg = next(ln for ln in lines if ln.text.startswith("nonzero >="))
    derived = 0
    for t in neg.expr.args:
        if t.is_Rational:
            continue
        info = scaled_info(t, model.decomposed_terms)
        walked = term_info(t, model.knobs, {})               # a fresh memo: shape_of walks the term
        assert info is not None and info[0] is t
        assert info[1] is walked[1] and info[2:] == walked[2:]
        derived += 1
    assert derived == 23                                     # one per layer


def test_decompose_with_shared_infos_is_the_plain_walk(model_lines):
    model, lines = model_lines
    for ln in lines:
        shared = decompose(ln.expr, model.knobs, model.decomposed_terms)
        assert group_view(shared) == group_view(decompose(ln.expr, model.knobs))
        # the symbols are the knobs' own objects: decompose and separate key them by id
        assert all(s is model.knobs.by_symbol[s].symbol for g in shared.groups for s in g.symbols)


def test_bounds_without_declarations_are_the_same(model_lines):
    """Groups that carry no declarations (decls None) take the per-symbol path."""
    model, lines = model_lines
    knobs = model.knobs
    for ln in lines:
        dec = decomposition(model, ln.expr)
        bare = replace(dec, groups=[replace(g, decls=None) for g in dec.groups])
        for widen in (False, True):
            a, b = bound_line(dec, knobs, widen=widen), bound_line(bare, knobs, widen=widen)
            assert (a.lb, a.ub, a.scale, a.argmin, a.argmax) == (b.lb, b.ub, b.scale, b.argmin, b.argmax)
        base, base_bare = bound_line(dec, knobs), bound_line(bare, knobs)
        for fam in ("s", "b"):
            for side in ("lo", "hi"):
                a = relax_line(dec, knobs, base, {}, fam, side)
                b = relax_line(bare, knobs, base_bare, {}, fam, side)
                assert (a.lb, a.ub, a.argmin, a.argmax) == (b.lb, b.ub, b.argmin, b.argmax)
                assert [(r.lb, r.ub, r.best, r.argmin) for r in a.groups] == \
                    [(r.lb, r.ub, r.best, r.argmin) for r in b.groups]


def copies(env: dict) -> dict:
    """The same setting with every value a distinct (equal) object."""
    return {s: Fraction(v.numerator, v.denominator) if type(v) is Fraction else v for s, v in env.items()}


def random_settings(knobs, n: int, seed: int = 3):
    rng = random.Random(seed)
    # a few values drawn per family, so a setting repeats value objects as a solver's does
    return [{v.name: rng.choice(list(v.values)[:3]) for v in knobs.vars} for _ in range(n)]


def test_point_enclosures_do_not_depend_on_value_identities(model_lines):
    model, lines = model_lines
    for setting in random_settings(model.knobs, 4):
        env = model.knobs.env(setting)
        for ln in lines:
            dec = decomposition(model, ln.expr)
            assert point_range(dec, model.knobs, env) == point_range(dec, model.knobs, copies(env))


def test_a_settings_range_is_remembered_by_its_exact_values(model_lines):
    model, lines = model_lines
    dec = decomposition(model, lines[0].expr)
    env = model.knobs.env(model.knobs.defaults())
    first = line_range(model, dec, env)
    hits = model.line_ranges.hits
    assert line_range(model, dec, copies(env)) == first            # equal values: a hit
    assert model.line_ranges.hits == hits + 1
    other = dict(env)
    s = next(iter(dec.symbols))
    other[s] = model.knobs.by_symbol[s].values[1]
    assert line_range(model, dec, other) == point_range(dec, model.knobs, other)
    assert model.line_ranges.hits == hits + 1                       # another value: a miss


def reference_line_values(sep, env):
    n = len(sep.lines)
    out = [Fraction(c) for c in sep.consts]
    for cls in sep.classes:
        for comp in cls.members:                # each layer's own parts, at its own knobs
            for i, part in comp.parts.items():
                out[i] += sum((evaluate(e, env) for e in part.exprs), Fraction(0))
    assert len(out) == n
    return out


def test_exact_line_values_are_the_per_layer_sums(model_lines):
    model, lines = model_lines
    sep = separable(model, lines)
    assert sep is not None and any(len(c.members) > 1 for c in sep.classes)
    for setting in random_settings(model.knobs, 5):
        env = model.knobs.env(setting)
        want = reference_line_values(sep, env)
        assert exact_line_values(sep, env) == want
        assert exact_line_values(sep, copies(env)) == want
        assert exact_line_values(sep, setting, model.knobs) == want        # by knob name


def test_part_values_per_point_of_the_knobs_read(model_lines):
    model, lines = model_lines
    sep = separable(model, lines)
    n = len(lines)
    for cls in sep.classes:
        env_of = lambda p: dict(zip(cls.rep.symbols, cls.point(p)))      # noqa: E731
        for p in range(cls.points):
            row = exact_values(cls, n, p)
            for i, part in cls.rep.parts.items():
                assert row[i] == sum((evaluate(e, env_of(p)) for e in part.exprs), Fraction(0))


def reference_minimum(sep, y):
    n = len(sep.lines)
    total = sum((yi * Fraction(c) for yi, c in zip(y, sep.consts)), Fraction(0))
    found = []
    for cls in sep.classes:
        best = min(sum((yi * v for yi, v in zip(y, exact_values(cls, n, p))), Fraction(0))
                   for p in range(cls.points))
        total += best * len(cls.members)
        found += [(best, comp.symbols) for comp in cls.members]
    return total, found


@pytest.mark.parametrize("y", [[Fraction(1), Fraction(0), Fraction(0)],
                               [Fraction(1, 3), Fraction(1), Fraction(0)],
                               [Fraction(7, 13), Fraction(1), Fraction(2, 9)],
                               [Fraction(1, 10**6), Fraction(999999, 10**6), Fraction(1)]])
def test_certificate_minima_and_conflict_are_the_rational_sums(model_lines, y):
    model, lines = model_lines
    sep = separable(model, lines)
    total, found = reference_minimum(sep, y)
    assert certificate.minimum(sep, y) == total
    assert tuple(y) in sep.minima                                   # remembered for `conflict`
    found.sort(key=lambda t: (-t[0], model.knobs.sort_key(t[1][0])))
    for top in (0, 1, 5, len(found) + 3):
        got = certificate.conflict(sep, y, model.knobs, top)
        assert got["components"] == len(found)
        assert [(Fraction(c["at_best"]), c["knobs"]) for c in got["top"]] == \
            [(best, [model.knobs.by_symbol[s].name for s in syms]) for best, syms in found[:top]]


def test_knapsack_builds_each_subset_once(model_lines):
    from kmr_dsl.verify.knapsack import Knapsack
    model, lines = model_lines
    sep = separable(model, lines)
    ks = Knapsack(sep)
    answers = [ks.solve(rows) for rows in ([0, 1, 2], [0, 1], [1, 2], [0, 2])]
    built = dict(ks._built)
    assert len(built) == 4 and len(ks._kept) == 3           # the full set keeps `keep` itself
    again = [ks.solve(rows) for rows in ([0, 1, 2], [0, 1], [1, 2], [0, 2])]
    assert all(ks._built[k] is built[k] for k in built)     # hits, not rebuilt
    fresh = Knapsack(sep)
    assert again == answers == [fresh.solve(rows) for rows in ([0, 1, 2], [0, 1], [1, 2], [0, 2])]
