"""Lower ends of the counts where an effect is only an upper end (verify/lowend.py):
`lowrank`'s fresh factors, its energy cut, N:M on a sparse layer."""

from __future__ import annotations

from dataclasses import replace

import sympy as sp

from kmr_dsl.verify import Verdict, verify
from kmr_dsl.verify import algebra as A
from kmr_dsl.verify.budget import budget_lines
from kmr_dsl.verify.cost import LOW_ENDS, meter_expr
from kmr_dsl.verify.lowend import density_low
from kmr_dsl.verify.numeric import evaluate
from kmr_dsl.verify.substitution import substitute
from kmr_dsl.verify.obligations import pipeline_model
from tests.verify.build import c, knob, kref, line, linears, meter, mlp_facts, program, step

FACTS = mlp_facts([8, 16, 4])           # fc0: 16x8 (+16 bias), fc1: 4x16 (+4 bias)
FC0 = (linears(FACTS)[0],)
FACTS_16 = mlp_facts([16, 16, 4], bias=False)    # fc0: 16x16, fc1: 4x16
FC0_16 = (linears(FACTS_16)[0],)


def _ends(steps, meter_name, facts=FACTS, knobs=(), setting=None):
    model = pipeline_model(program(list(knobs), steps, [], facts), "compress")
    env = model.knobs.env(model.knobs.complete(setting or {}))
    low = evaluate(meter_expr(model, LOW_ENDS[meter_name], model.final), env)
    return low, evaluate(meter_expr(model, meter_name, model.final), env)


def test_a_rule_without_a_range_has_one_value():
    for m in ("params", "nonzero", "macs", "trainable_params"):
        low, high = _ends([step("prune", linears(FACTS), amount=0.5)], m)
        assert low == high


def test_truncated_factors_may_be_all_zero():
    # prune then truncate fc0 to rank 4 (4 * 24 < 128: two factors): the contract says
    # dense (96 weights), the factors of a pruned matrix hold exact zeros
    low, high = _ends([step("prune", linears(FACTS), amount=0.5), step("lowrank", FC0, ratio=0.5)], "nonzero")
    assert high == 96 + 16 + 32 + 4                 # fc0's factors dense, fc1 half kept
    assert low == 16 + 32 + 4                       # fc0's factors all zero: only its bias
    # a ratio that cuts nothing keeps the layer (and its exact zeros): no range
    low, high = _ends([step("prune", linears(FACTS), amount=0.5), step("lowrank", FC0, ratio=1.0)], "nonzero")
    assert low == high


def test_energy_makes_the_rank_a_range_down_to_one():
    low, high = _ends([step("lowrank", FC0, ratio=1.0, energy=0.5)], "params")
    assert high == 212                              # rank 8: fc0 stays dense
    assert low == 1 * (8 + 16) + 16 + 64 + 4        # rank 1: two factors


def test_nm_on_a_sparse_layer_keeps_between_d_plus_n_over_m_minus_1_and_min():
    steps = [step("prune", FC0, amount=0.25), step("prune", FC0, amount=0.0, method="nm", n=1, m=2)]
    low, high = _ends(steps, "nonzero")
    assert high == 64 + 16 + 68                     # min(0.75, 1/2) of 128
    assert low == 32 + 16 + 68                      # max(0, 0.75 + 1/2 - 1) of 128
    # on a dense layer N:M is exact
    low, high = _ends([step("prune", FC0, amount=0.0, method="nm", n=1, m=2)], "nonzero")
    assert low == high


def test_a_global_pruning_rounds_the_lower_end_of_its_total_once():
    # three 16x16 layers of 255 non-zeros; 15:16 keeps 240 of each, at least 239 (a group
    # may hold the zero); global pruning keeps round_half_up(0.044 * total): between
    # round_half_up(0.044 * 717) = 32 and round_half_up(0.044 * 720) = 32. Each layer's
    # own rounding of its lower end, round_half_up(0.044 * 239) = 11, made the lower end
    # 33, above the upper end (`nonzero >= 33` was proved, the run kept 32)
    facts = mlp_facts([16, 16, 16, 16], bias=False, density=255 / 256)
    fcs = linears(facts)
    nm = step("prune", fcs, amount=0.0, method="nm", n=15, m=16)
    assert _ends([nm, step("prune", fcs, amount=0.956, method="global")], "nonzero", facts) == (32, 32)
    # with the method a knob: the total's rounding where it is global, each layer's where not
    mth = knob("mth", "enum", members=("magnitude", "global"), default="global")
    steps = [nm, step("prune", fcs, amount=0.956, method=kref("mth"))]
    assert _ends(steps, "nonzero", facts, [mth]) == (32, 32)
    assert _ends(steps, "nonzero", facts, [mth], {"mth": "magnitude"}) == (33, 33)


def test_a_global_pruning_lower_end_is_not_the_upper_ends_rounding():
    # fc0 dense (256 weights), fc1 127 of 128 then 15:16 (120, at least 119); global
    # pruning keeps round_half_up(0.107 * (256 + 119..120)): at least 40. The state gives
    # fc0 the upper total's rounding (+0.232) and fc1 its own lower end rounded (13):
    # 40.16, which a `nonzero >= 40.1` line read as proved
    facts = mlp_facts([16, 16, 8], bias=False)
    fc0, fc1 = linears(facts)
    facts = replace(facts, layers=(facts.layers[0], replace(facts.layers[1], density=127 / 128)))
    steps = [step("prune", (fc1,), amount=0.0, method="nm", n=15, m=16),
             step("prune", (fc0, fc1), amount=0.893, method="global")]
    low, high = _ends(steps, "nonzero", facts)
    assert low == 40 and high == 40


def test_a_knob_named_rho_is_not_the_old_density():
    # the lower ends read an effect over a stand-in for the old density: a knob of the
    # same name was that stand-in too (0.25 * (1 - 0.25) at every rho, 24 weights at
    # rho = 0.5 where the run keeps at least 16)
    facts = replace(FACTS, layers=(replace(FACTS.layers[0], density=0.75), FACTS.layers[1]))
    rho = knob("rho", lo=0.0, hi=0.5, default=0.5)
    steps = [step("prune", FC0, amount=0.0, method="nm", n=1, m=2), step("prune", FC0, amount=kref("rho"))]
    assert _ends(steps, "nonzero", facts, [rho]) == (16 + 16 + 68, 32 + 16 + 68)


def test_a_lower_bound_line_reads_the_low_end_and_is_unknown_between():
    steps = [step("prune", linears(FACTS), amount=0.5), step("lowrank", FC0, ratio=0.5)]
    prog = program([], steps, [line(meter("nonzero"), ">=", c(100))], FACTS)
    model = pipeline_model(prog, "compress")
    (ln,), _ = budget_lines(model)
    env = model.knobs.env(model.knobs.complete({}))
    assert evaluate(ln.expr, env) == 100 - 52 and evaluate(ln.optimistic.expr, env) == 100 - 148
    report = verify(prog, "compress")
    feas = [r for r in report.results if r.kind == "feasibility"]
    assert feas[0].verdict is Verdict.UNKNOWN and "SVD factors" in feas[0].reason
    # `nonzero == X` cannot be read at either end
    prog = program([], steps, [line(meter("nonzero"), "==", c(148))], FACTS)
    (ln,), _ = budget_lines(pipeline_model(prog, "compress"))
    assert ln.problem and "range" in ln.problem


def test_density_low_of_effects():
    rho, d = sp.Symbol("rho"), sp.Symbol("d")
    assert density_low(A.mul(rho, sp.Rational(1, 2)), rho, d) == d / 2           # reads it: as it is
    assert density_low(A.ONE, rho, d) == 0                                        # fresh: 0
    assert density_low(A.min_(rho, sp.Rational(1, 2)), rho, A.ONE) == sp.Rational(1, 2)   # dense: exact
    assert density_low(A.min_(rho, sp.Rational(1, 2)), rho, sp.Rational(3, 4)) == sp.Rational(1, 4)
    cond = sp.Symbol("e") < 1
    assert density_low(A.ite(cond, rho, A.ONE), rho, d) == A.ite(cond, d, A.ZERO)


def test_a_large_piecewise_density_gets_a_lower_end():
    # pruning by a continuous knob makes the density a choice among its ~230 whole counts
    # (verify/rounding.py); N:M by an enum knob then reads it in a piecewise effect.
    # Substituting it with sympy's evaluation distributed the conditions (a check that
    # did not end), so a large piecewise got the trivial lower end (fc1 alone: 64); the
    # substitution now rebuilds it as it is (verify/substitution.py)
    a = knob("a", lo=0.0, hi=0.9, default=0.3)
    mth = knob("mth", "enum", members=("magnitude", "nm"), default="nm")
    steps = [step("prune", FC0_16, amount=kref("a")),
             step("prune", FC0_16, amount=0.2, method=kref("mth"), n=3, m=4)]
    for at, low, high in ((0.0, 192 + 64, 192 + 64), (0.1, 166 + 64, 192 + 64), (0.3, 115 + 64, 179 + 64)):
        ends = _ends(steps, "nonzero", FACTS_16, [a, mth], {"a": at})
        assert ends == (low, high), at      # max(0, d + 3/4 - 1) of round_half_up(256 (1 - a)) kept
        ends = _ends(steps, "nonzero", FACTS_16, [a, mth], {"a": at, "mth": "magnitude"})
        assert ends[0] == ends[1]


def test_substitute_rebuilds_without_folding():
    x, r, m = sp.Symbol("x"), sp.Symbol("r"), A.EnumSymbol("m")
    inner = A.ite(A.compare("<", x, sp.Rational(1, 2)), sp.Rational(1, 4), A.ite(A.compare("<", x, 1), x, 1))
    value = A.ite(A.compare("==", m, 1), A.min_(r, sp.Rational(3, 4)), A.mul(r, sp.Rational(4, 5)))
    out = substitute(value, {r: inner})
    # the inner choice is kept once in each branch, not distributed over the outer one
    assert sum(1 for e in sp.preorder_traversal(out) if isinstance(e, sp.Piecewise)) == 3
    for xv in (0, sp.Rational(1, 2), sp.Rational(9, 10), 2):
        for mv in (0, 1):
            env = {x: xv, m: mv}
            assert out.xreplace(env) == value.xreplace({r: inner}).xreplace(env)
    # constants fold; a piece whose condition folds to false goes, one that folds to true ends it
    assert substitute(A.add(r, 1, A.mul(2, r)), {r: 3}) == 10
    assert substitute(value, {m: 1, r: 1}) == sp.Rational(3, 4)
    assert substitute(value, {m: 0, r: 1}) == sp.Rational(4, 5)
    assert substitute(A.ite(A.compare("<", x, 1), x, A.ite(A.compare("<", x, 2), 2 * x, 3)), {x: 1}) == 2
