"""Separable budgets infeasible only through integrality: the branch-and-bound tree certificate.

Each budget here is a window on `nonzero` that no whole choice of per-layer sparsities
hits, over layers of several shapes, while a fractional mix of choices would: the LP
relaxation is feasible, so no multiplier certificate exists (checked below), and before
the tree the refutation rested on HiGHS's unlogged branch and bound. The tree is
re-checked from the JSON alone with rationals, and every perturbation of it is rejected.
"""

from __future__ import annotations

import copy
import itertools
from fractions import Fraction

import pytest

from kmr_dsl.check import check_source
from kmr_dsl.diagnostics import render_all
from kmr_dsl.verify import Verdict, verify
from kmr_dsl.verify import bbtree
from kmr_dsl.verify.budget import budget_lines, holds
from kmr_dsl.verify.line_checks import separable
from kmr_dsl.verify.knapsack import Knapsack, exact_line_values
from kmr_dsl.verify.numeric import evaluate
from kmr_dsl.verify.obligations import pipeline_model

from tests.verify.test_many_knobs import widths_chain

SRC = """import "std"
model deep = factory("bench:mlp")
knob s[l in layers(Linear)] : float in {{0.0, 0.9}} = 0.0
knob b[l in layers(Linear)] : int in {{8, 32}} = 32
pipeline compress(deep) {{
    for l in layers(Linear) {{
        prune(amount = s[l])
        quantize(bits = b[l])
    }}
    budget {{
{lines}
    }}
}}
"""

# just below the unpruned model: every pruned layer removes thousands of weights
WINDOW = ["nonzero >= baseline.nonzero - 100", "nonzero <= baseline.nonzero - 1"]
SIZE = "size <= 95% * baseline.size"


def program(lines: list[str], n: int):
    facts = widths_chain(n)
    prog, diags = check_source(SRC.format(lines="\n".join(f"        {ln}" for ln in lines)), "k.kmr",
                               facts_provider=lambda spec, trust, span: facts)
    assert prog is not None, render_all(diags)
    return prog


def feasibility(report):
    return next(r for r in report.results if r.kind == "feasibility")


def sep_of(prog):
    model = pipeline_model(prog, "compress")
    lines, _ = budget_lines(model)
    # a refutation reads `size` at the small end of its range (verify/budget.py)
    return separable(model, [ln.optimistic or ln for ln in lines])


def test_each_line_alone_is_met_and_the_relaxation_has_a_gap():
    for one in WINDOW + [SIZE]:
        assert feasibility(verify(program([one], 8))).verdict is Verdict.PROVED, one
    sep = sep_of(program(WINDOW + [SIZE], 8))
    ks = Knapsack(sep)
    assert ks.solve([0, 1])[0] == "infeasible"
    assert ks.multipliers([0, 1]) is None          # the LP relaxation is feasible: no y exists


@pytest.mark.parametrize("n", [8, 400])
def test_window_over_several_shapes_is_refuted_with_a_checked_tree(n):
    prog = program(WINDOW + [SIZE], n)
    report = verify(prog)
    res = feasibility(report)
    assert res.verdict is Verdict.REFUTED and res.method == "milp", res
    assert [m.text for m in res.core] == WINDOW and res.core_minimal
    cert = res.certificate
    assert cert["kind"] == "branch-and-bound-tree" and cert["checked"] and cert["core"] == WINDOW
    # the tree's size follows the layer shapes and the lines, not the number of layers
    assert cert["nodes"] <= bbtree.MAX_NODES and cert["nodes"] == bbtree.size(cert["tree"])[0]
    assert bbtree.check(sep_of(prog), cert["tree"])
    text = render_all(report.diagnostics)
    assert "KMR302" in text and "branch-and-bound tree" in text and "checked in exact arithmetic" in text


def _leaves(node, out=None):
    out = [] if out is None else out
    if "split" in node:
        _leaves(node["le"], out)
        _leaves(node["ge"], out)
    else:
        out.append(node)
    return out


def _splits(node, out=None):
    out = [] if out is None else out
    if "split" in node:
        out.append(node)
        _splits(node["le"], out)
        _splits(node["ge"], out)
    return out


def test_a_perturbed_tree_is_rejected():
    prog = program(WINDOW + [SIZE], 8)
    sep = sep_of(prog)
    tree = feasibility(verify(prog)).certificate["tree"]
    assert bbtree.check(sep, tree)
    bad = []
    # a leaf's weights zeroed, one made negative, one list cut short
    for mutate in (lambda lf: lf.update(y=["0"] * len(lf["y"]), mu=["0"] * len(lf["mu"])),
                   lambda lf: lf.update(mu=[f"-{v}" if v != "0" else v for v in lf["mu"]],
                                        y=[f"-{v}" if v != "0" else v for v in lf["y"]]),
                   lambda lf: lf.update(mu=lf["mu"][:-1])):
        t = copy.deepcopy(tree)
        mutate(_leaves(t)[-1])
        bad.append(t)
    # a split moved far (the side that grows is no longer closed by its leaves), or with a
    # fractional coefficient
    for shift in (10 ** 9, -10 ** 9):
        t = copy.deepcopy(tree)
        _splits(t)[0]["split"]["at"] += shift
        bad.append(t)
    t = copy.deepcopy(tree)
    name = next(iter(_splits(t)[-1]["split"]["pi"]))
    _splits(t)[-1]["split"]["pi"][name] = 0.5
    bad.append(t)
    # a subtree dropped: a leaf of one side put in place of a whole branch
    t = copy.deepcopy(tree)
    inner = _splits(t)[1]
    inner["ge"] = copy.deepcopy(_leaves(inner["le"])[0])
    bad.append(t)
    # a variable that does not exist
    t = copy.deepcopy(tree)
    _splits(t)[0]["split"]["pi"] = {"t99.0": 1}
    bad.append(t)
    for k, t in enumerate(bad):
        assert not bbtree.check(sep, t), k
    # the same tree does not prove a window that a whole setting reaches
    looser = sep_of(program(["nonzero >= baseline.nonzero - 100", "nonzero <= baseline.nonzero"], 8))
    assert not bbtree.check(looser, tree)


def test_a_split_on_a_continuous_variable_is_rejected():
    # a real knob is no whole variable: pi.x need not be whole, so a split on it covers nothing
    src = SRC.replace("knob b[l in layers(Linear)] : int in {{8, 32}} = 32",
                      "knob b[l in layers(Linear)] : int in {{8, 32}} = 32\nknob r : float in [0.0, 2.0] = 1.0")
    facts = widths_chain(4)
    lines = WINDOW + ["size <= r * 1 MB"]
    prog, diags = check_source(src.format(lines="\n".join(f"        {ln}" for ln in lines)), "k.kmr",
                               facts_provider=lambda spec, trust, span: facts)
    assert prog is not None, render_all(diags)
    sep = sep_of(prog)
    rel = bbtree.Relaxation(sep)
    real = next(name for v, name in enumerate(rel.names) if not rel.integer[v])
    got = bbtree.prove(sep, [0, 1])
    assert got is not None and got[0] == "tree"
    tree = {"split": {"pi": {real: 1}, "at": 0}, "le": got[1], "ge": got[1]}
    assert not bbtree.check(sep, tree)


def test_trees_agree_with_enumeration_on_small_models():
    # every window over 3 layers of 3 shapes (4^3 settings, enumerated exactly): a tree
    # exists only where no setting meets the lines, and a whole LP point is a real witness
    prog = program(["nonzero <= baseline.nonzero"], 3)
    model = pipeline_model(prog, "compress")
    knobs = model.knobs
    reach = set()
    base = sep_of(prog)
    syms = [s for cls in base.classes for comp in cls.members for s in comp.symbols]
    for values in itertools.product(*[knobs.by_symbol[s].values for s in syms]):
        reach.add(exact_line_values(base, dict(zip(syms, values)))[0])
    full = max(reach)
    windows = [(full - 100, full - 1), (full - 3000, full - 1), (full - 12000, full - 6000), (full - 4000, full)]
    for lo, hi in windows:
        prog = program([f"nonzero >= baseline.nonzero - {full - lo}", f"nonzero <= baseline.nonzero - {full - hi}"], 3)
        sep = sep_of(prog)
        met = any(lo - full <= g <= hi - full for g in (r - full for r in reach))
        got = bbtree.prove(sep, [0, 1])
        if got is not None and got[0] == "tree":
            assert not met and bbtree.check(sep, got[1]), (lo, hi)
        elif got is not None:
            vals = exact_line_values(sep, got[1])
            assert all(holds(ln.op, v) for ln, v in zip(sep.lines, vals)) == met
        res = feasibility(verify(prog))
        assert res.verdict is (Verdict.PROVED if met else Verdict.REFUTED), (lo, hi, res)
        if res.verdict is Verdict.PROVED:
            env = knobs.env(knobs.complete(res.witness))
            assert all(holds(ln.op, evaluate(ln.expr, env)) for ln in budget_lines(pipeline_model(prog, "compress"))[0])
