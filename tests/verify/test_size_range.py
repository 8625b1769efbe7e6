"""`size` as a range: each budget line reads the end worst for it, only the best end refutes."""

from __future__ import annotations

from fractions import Fraction

from kmr_dsl import artifact_recipe
from kmr_dsl.verify import Verdict, verify
from kmr_dsl.verify.budget import budget_lines
from kmr_dsl.verify.cost import SIZE_LOW, meter_expr
from kmr_dsl.verify.numeric import evaluate
from kmr_dsl.verify.obligations import pipeline_model
from kmr_dsl.verify.predict import is_feasible, lines_met, size_range
from tests.verify.build import c, knob, kref, line, linears, meter, mlp_facts, op, program, step

FACTS = mlp_facts([8, 16, 4])


def _prog(*budget, knobs=(), steps=None):
    steps = [step("prune", linears(FACTS), amount=kref("s"))] if steps is None else steps
    ks = list(knobs) or [knob("s", "float", lo=0.0, hi=0.9, step=0.1, default=0.5)]
    return program(ks, steps, list(budget), FACTS)


def _range(prog, baseline=False):
    model = pipeline_model(prog, "compress")
    state = model.initial if baseline else model.final
    env = model.knobs.env(model.knobs.complete({"s": 0.5}))
    return evaluate(meter_expr(model, SIZE_LOW, state), env), evaluate(meter_expr(model, "size", state), env)


def test_the_low_end_is_below_the_high_end_and_counts_the_recipe_exactly():
    prog = _prog()
    low, high = _range(prog)
    assert 0 < low < high
    assert size_range(prog, "compress", {"s": 0.5}) == (float(low), float(high))
    # the loader call and the info are in both ends exactly: a longer folder adds its length to each
    pipe = prog.pipelines["compress"]
    fixed = artifact_recipe.recipe_fixed_chars(pipe.model.loader, {"pipeline": "compress"})
    assert fixed == len(artifact_recipe.recipe_json(pipe.model.loader, {}, {"pipeline": "compress"}).replace('"', '\\"'))


def test_each_line_reads_its_worst_end():
    prog = _prog(line(meter("size"), "<=", c(10 ** 6, "bytes")),
                 line(meter("size"), ">=", c(1, "bytes")),
                 line(meter("size"), "<=", op("*", c(0.9), meter("size", baseline=True))))
    model = pipeline_model(prog, "compress")
    lines, _ = budget_lines(model)
    env = model.knobs.env(model.knobs.complete({"s": 0.5}))
    low, high = _range(prog)
    base_low, base_high = _range(prog, baseline=True)
    le, ge, rel = (evaluate(ln.expr, env) for ln in lines)
    assert le == high - 10 ** 6                       # `size <= X`: the high end
    assert ge == 1 - low                              # `size >= X`: the low end (as X - size <= 0)
    assert rel == high - Fraction(9, 10) * base_low               # result high against baseline low
    best = [evaluate(ln.optimistic.expr, env) for ln in lines]
    assert best == [low - 10 ** 6, 1 - high, low - Fraction(9, 10) * base_high]


def test_a_line_between_the_ends_is_unknown_not_refuted():
    prog = _prog()
    low, high = (float(v) for v in _range(prog))
    mid = (low + high) / 2
    # met only if the file is at the small end: neither proved nor refuted
    between = _prog(line(meter("size"), "<=", c(mid, "bytes")), knobs=[knob("s", "float", values=(0.5,), default=0.5)])
    report = verify(between, "compress")
    feas = next(r for r in report.results if r.kind == "feasibility")
    assert feas.verdict is Verdict.UNKNOWN and "small end" in feas.reason
    assert any(d.code == "KMR303" for d in report.diagnostics)
    assert lines_met(between, "compress", {"s": 0.5}) == {0: False}
    assert is_feasible(between, "compress", {"s": 0.5})              # search errs towards met
    # the same for a lower bound line
    above = _prog(line(meter("size"), ">=", c(mid, "bytes")), knobs=[knob("s", "float", values=(0.5,), default=0.5)])
    assert next(r for r in verify(above, "compress").results if r.kind == "feasibility").verdict is Verdict.UNKNOWN
    # beyond either end: decided
    below_all = _prog(line(meter("size"), "<=", c(low - 1, "bytes")), knobs=[knob("s", "float", values=(0.5,),
                                                                                 default=0.5)])
    assert next(r for r in verify(below_all, "compress").results if r.kind == "feasibility").verdict is Verdict.REFUTED
    above_all = _prog(line(meter("size"), "<=", c(high, "bytes")), knobs=[knob("s", "float", values=(0.5,),
                                                                                default=0.5)])
    assert next(r for r in verify(above_all, "compress").results if r.kind == "feasibility").verdict is Verdict.PROVED


def test_a_size_equality_cannot_be_read_at_either_end():
    prog = _prog(line(meter("size"), "==", c(1000, "bytes")))
    lines, _ = budget_lines(pipeline_model(prog, "compress"))
    assert lines[0].problem and "range" in lines[0].problem


def test_a_factor_of_unknown_sign_reads_both_ends():
    ks = [knob("s", "float", lo=0.0, hi=0.9, step=0.1, default=0.5), knob("k", "int", values=(-1, 2), default=2)]
    prog = _prog(line(op("*", kref("k"), meter("size")), "<=", c(10 ** 6, "bytes")), knobs=ks)
    model = pipeline_model(prog, "compress")
    ln = budget_lines(model)[0][0]
    assert ln.problem is None
    for k in (-1, 2):
        env = model.knobs.env(model.knobs.complete({"s": 0.5, "k": k}))
        low, high = _range(prog)
        assert evaluate(ln.expr, env) == max(k * low, k * high) - 10 ** 6
        assert evaluate(ln.optimistic.expr, env) == min(k * low, k * high) - 10 ** 6


def test_a_condition_on_size_is_not_read_at_either_end():
    from kmr_dsl.core.program import If
    jump = If(op(">", meter("size"), c(1000, "bytes")), op("-", meter("size"), c(10 ** 6, "bytes")), c(0, "bytes"))
    prog = _prog(line(jump, "<=", c(0, "bytes")))
    lines, _ = budget_lines(pipeline_model(prog, "compress"))
    assert lines[0].problem and "condition" in lines[0].problem
