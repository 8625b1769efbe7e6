"""Prune amounts shared by every layer, layers of several shapes, and a window on `nonzero`
that no setting of the amounts hits: the decoupled certificate (joint.py) has a gap
(each shape's count ranging on its own reaches the window), and before the box split Z3
was asked (a minute at 8 layers, at the solver limits beyond). Now the amounts' domain is
split into boxes, each with its own decoupled certificate; the tree is re-checked
exactly and rejected once perturbed.
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

from kmr_dsl.check import check_source
from kmr_dsl.diagnostics import render_all
from kmr_dsl.verify import Verdict, predict, verify
from kmr_dsl.verify import atom_groups, boxsplit, joint
from kmr_dsl.verify.budget import budget_lines
from kmr_dsl.verify.obligations import pipeline_model

from tests.verify.test_many_knobs import source, widths_chain

KNOBS, LAYERS = 3, 4


def build(lines: list[str]):
    facts = widths_chain(LAYERS)
    prog, diags = check_source(source(lines, KNOBS), "k.kmr", facts_provider=lambda spec, trust, span: facts)
    assert prog is not None, render_all(diags)
    return prog


def window() -> list[str]:
    """nonzero strictly between the unpruned model and the least pruning (one amount at 0.05):
    each amount only moves in steps of 0.05, so no setting lands there."""
    prog = build(["size <= baseline.size"])
    full = int(predict(prog, "compress", {})["nonzero"])
    least = int(predict(prog, "compress", {"k0": 0.05})["nonzero"])
    assert least < full - 2
    # `size` joins `b` to the amounts: one group of 11^3 x 4 points, past any table
    return [f"nonzero >= {least + 1}", f"nonzero <= {full - 1}", "size <= baseline.size"]


def lines_of(prog):
    model = pipeline_model(prog, "compress")
    lines, _ = budget_lines(model)
    return model, [ln.optimistic or ln for ln in lines]


def test_each_line_alone_is_met_and_the_decoupled_certificate_has_a_gap():
    lines = window()
    for one in lines:
        res = next(r for r in verify(build([one])).results if r.kind == "feasibility")
        assert res.verdict is Verdict.PROVED, (one, res)
    model, ls = lines_of(build(lines))
    assert joint.refute(ls, model.knobs) is None


def test_window_is_refuted_over_boxes_with_a_checked_certificate():
    lines = window()
    prog = build(lines)
    report = verify(prog)
    res = next(r for r in report.results if r.kind == "feasibility")
    assert res.verdict is Verdict.REFUTED and res.method == "box-split", res
    assert [m.text for m in res.core] == lines[:2] and res.core_minimal
    cert = res.certificate
    assert cert["kind"] == "box-split" and cert["checked"] and 1 < cert["leaves"] <= boxsplit.MAX_LEAVES
    text = render_all(report.diagnostics)
    assert "KMR302" in text and "box(es)" in text and "checked in exact arithmetic" in text


def test_a_perturbed_box_tree_is_rejected():
    lines = window()
    model, ls = lines_of(build(lines))
    tree = boxsplit.refute(ls, model.knobs)
    assert isinstance(tree, boxsplit.Branch) and boxsplit.check(ls, model.knobs, tree)
    inner = tree
    while isinstance(inner.le, boxsplit.Branch):
        inner = inner.le
    first = boxsplit.leaves(tree)[0]
    bad = [
        replace(tree, at=tree.at + Fraction(1, 100)),          # not a value of the knob: a gap
        replace(tree, at=Fraction(1, 2)),                      # the last value: `ge` would be empty
        replace(tree, ge=tree.le),                             # a subtree proved for another box
        replace(tree, symbol=next(s for s in model.knobs.by_symbol if model.knobs.by_symbol[s].name == "b")),
    ]
    # a leaf's multipliers or pieces no longer proving its box
    if first.multipliers is not None:
        bad.append(_swap_leaf(tree, first, replace(first, multipliers=[Fraction(0)] * len(first.multipliers))))
    bad.append(_swap_leaf(tree, first, replace(first, proofs=first.proofs[1:])))
    for k, t in enumerate(bad):
        assert not boxsplit.check(ls, model.knobs, t), k
    # the tree does not prove a window that a setting reaches
    _, reach = lines_of(build(["nonzero >= 0"] + lines[1:]))
    assert not boxsplit.check(reach, model.knobs, tree)


def _swap_leaf(tree, old, new):
    if tree is old:
        return new
    if isinstance(tree, boxsplit.Branch):
        return replace(tree, le=_swap_leaf(tree.le, old, new), ge=_swap_leaf(tree.ge, old, new))
    return tree


def test_a_point_box_that_meets_the_lines_is_a_witness_not_a_refutation():
    # only the unpruned model reaches `nonzero >= baseline`: the split narrows to that point
    # (no decoupled certificate exists there) and the setting is handed back for an exact check
    from kmr_dsl.verify.line_checks import meets_all

    prog = build(["nonzero >= baseline.nonzero", "size <= baseline.size"])
    model, ls = lines_of(prog)
    asked = []

    def meets(point):
        asked.append(point)
        return meets_all(ls, model, {**model.knobs.defaults(), **point})

    got = boxsplit.refute(ls, model.knobs, meets)
    assert isinstance(got, boxsplit.Witness), got
    assert all(got.setting[f"k{i}"] == 0 for i in range(KNOBS)) and asked
    assert meets_all(ls, model, {**model.knobs.defaults(), **got.setting})


def test_a_reachable_window_the_descent_search_misses_is_met_by_the_box_witness_search():
    # a window of 7 values of `nonzero` that a setting reaches; coordinate descent did not
    # find it, and before the witness search the split ran to its limits and Z3 was asked
    from kmr_dsl.verify.line_checks import meets_all

    target = {"k0": 0.45, "k1": 0.05, "k2": 0.3}
    got = predict(build(["size <= baseline.size"]), "compress", target)
    nz, size = int(got["nonzero"]), int(got["size"])
    lines = [f"nonzero >= {nz - 3}", f"nonzero <= {nz + 3}", f"size <= {size} B"]
    prog = build(lines)
    model, ls = lines_of(prog)
    asked = []

    def meets(point):
        asked.append(point)
        return meets_all(ls, model, {**model.knobs.defaults(), **point})

    found = boxsplit.refute(ls, model.knobs, meets)
    assert isinstance(found, boxsplit.Witness), found
    assert meets_all(ls, model, {**model.knobs.defaults(), **found.setting})
    assert len(asked) <= 8                 # found by the best-first search, not by trying the grid
    # lines nothing meets never yield a witness, only their checked tree
    wmodel, wls = lines_of(build(window()))
    tree = boxsplit.refute(wls, wmodel.knobs, lambda p: meets_all(wls, wmodel, {**wmodel.knobs.defaults(), **p}))
    assert isinstance(tree, boxsplit.Branch)
    res = next(r for r in verify(prog).results if r.kind == "feasibility")
    assert res.verdict is Verdict.PROVED and res.method in ("descent", "box-split"), res


def test_a_box_narrows_the_atoms_as_atomizing_over_it_does():
    # the per-box ranges come from the corners the declared domain's directions pick; they
    # must equal atomizing the lines over the box itself
    from kmr_dsl.verify.atoms import atomize

    model, ls = lines_of(build(window()))
    shape = atom_groups.prepare(ls, model.knobs)
    free = shape.at.free
    for box in ({free[0]: (Fraction(1, 10), Fraction(3, 10))},
                {free[1]: (Fraction(0), Fraction(0)), free[2]: (Fraction(1, 4), Fraction(1, 2))}):
        mine = atom_groups.atoms_over(shape, box)
        ref = atomize([ln.expr for ln in ls], model.knobs, box=box)
        assert [(a.lo, a.hi) for a in ref.atoms] == [(mine[a.symbol][1].lo, mine[a.symbol][1].hi) for a in ref.atoms]
    # a box outside the declared domain is no box
    assert atom_groups.atoms_over(shape, {free[0]: (Fraction(0), Fraction(1))}) is None
