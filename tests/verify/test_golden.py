"""Golden verification cases, built by hand (no parser, checker or torch).

The same programs exist as .kmr files under tests/data/verify/{ok,err}/ with their
expected codes inline; test_kmr_goldens.py runs those through the checker.
"""

from __future__ import annotations

from kmr_dsl.diagnostics import Severity, render_all
from kmr_dsl.verify import Verdict, verify
from kmr_dsl.verify.obligations import pipeline_model
from tests.verify.build import (FILE, c, knob, kref, line, linears, meter, mlp_facts, op, program, span, step)

FACTS = mlp_facts([32, 64, 64, 10])
L = linears(FACTS)


def codes(report, severity=None):
    return [d.code for d in report.diagnostics if severity is None or d.severity is severity]


def result(report, kind, rule=None):
    out = [r for r in report.results if r.kind == kind and (rule is None or f"`{rule}`" in r.summary)]
    assert out, report.to_json()
    return out[0]


def test_prune_after_int8_is_refuted_at_every_setting():
    prog = program([], [step("quantize", L, bits=8), step("prune", L, line=11, amount=0.5)], [], FACTS)
    report = verify(prog)
    assert report.exit_code == 1
    assert codes(report) == ["KMR301"]
    res = result(report, "composability", "prune")
    assert res.verdict is Verdict.REFUTED and res.counterexample == {}
    diag = report.diagnostics[0]
    assert diag.span == span(11, 5, 40)
    assert "`layer.bits >= 16`" in diag.message and "`prune`" in diag.message
    assert any("every setting" in n for n in diag.notes)
    assert any("layer.bits = 8" in n and "quantize" in n for n in diag.notes)


def test_quantize_to_knob_then_prune_names_bits_8():
    ks = [knob("b", "int", values=(8, 16, 32), default=16), knob("s", "float", lo=0.0, hi=0.9, step=0.05, default=0.5)]
    prog = program(ks, [step("quantize", L, bits=kref("b")), step("prune", L, line=11, amount=kref("s"))],
                   [line(meter("size"), "<=", c(16000, "bytes"))], FACTS)
    report = verify(prog)
    assert report.exit_code == 1
    res = result(report, "composability", "prune")
    assert res.verdict is Verdict.REFUTED
    assert res.counterexample == {"b": 8}
    assert "counterexample: b = 8" in report.diagnostics[0].notes


def test_quantize_to_float_widths_then_prune_is_proved():
    ks = [knob("b", "int", values=(16, 32), default=16), knob("s", "float", lo=0.0, hi=0.9, step=0.05, default=0.5)]
    prog = program(ks, [step("quantize", L, bits=kref("b")), step("prune", L, line=11, amount=kref("s"))],
                   [line(meter("size"), "<=", c(16000, "bytes"))], FACTS)
    report = verify(prog)
    assert report.exit_code == 0, render_all(report.diagnostics)
    assert all(r.verdict is Verdict.PROVED for r in report.results)
    assert not codes(report)


def test_finetune_after_int8_is_refuted():
    prog = program([], [step("quantize", L, bits=8), step("finetune", line=11, epochs=2)], [], FACTS)
    report = verify(prog)
    assert report.exit_code == 1
    res = result(report, "composability", "finetune")
    assert res.verdict is Verdict.REFUTED
    assert any("model.trainable = false" in n for n in report.diagnostics[0].notes)


def test_infeasible_size_budget_reports_a_minimal_core():
    ks = [knob("s", "float", lo=0.0, hi=0.9, step=0.05, default=0.5, line=7),
          knob("b", "int", values=(4, 8, 16, 32), default=8, line=8)]
    budget = [line(meter("size"), "<=", c(1000, "bytes"), at=14),
              line(meter("params"), "<=", meter("params", baseline=True), at=15)]
    prog = program(ks, [step("prune", L, amount=kref("s")), step("quantize", L, line=11, bits=kref("b"))],
                   budget, FACTS)
    report = verify(prog)
    assert report.exit_code == 1
    res = result(report, "feasibility")
    assert res.verdict is Verdict.REFUTED and res.core_minimal
    assert [(m.kind, m.text) for m in res.core] == [("line", "size <= 1 KB"), ("bound", "s <= 0.9")]
    assert [m.span.line for m in res.core] == [14, 7]
    assert codes(report) == ["KMR302", "KMR310"]      # the params line holds everywhere: not in the core


def test_infeasible_without_bounds_gives_the_same_core():
    ks = [knob("s", "float", lo=0.0, hi=0.9, step=0.05, default=0.5), knob("b", "int", values=(4, 8), default=8)]
    budget = [line(meter("size"), "<=", c(1000, "bytes"))]
    prog = program(ks, [step("prune", L, amount=kref("s")), step("quantize", L, line=11, bits=kref("b"))],
                   budget, FACTS)
    a, b = verify(prog), verify(prog, use_bounds=False)
    ra, rb = result(a, "feasibility"), result(b, "feasibility")
    assert ra.method == "bounds" and rb.method == "z3"
    assert [m.text for m in ra.core] == [m.text for m in rb.core] == ["size <= 1 KB", "s <= 0.9"]


def test_conflicting_lines_are_the_core():
    """Two lines each satisfiable alone, contradictory together: the core is both, no bounds."""
    ks = [knob("s", "float", lo=0.0, hi=0.9, step=0.05, default=0.5)]
    budget = [line(meter("nonzero"), "<=", op("*", c(0.5), meter("nonzero", baseline=True)), at=20),
              line(meter("nonzero"), ">=", op("*", c(0.7), meter("nonzero", baseline=True)), at=21),
              line(meter("params"), "<=", meter("params", baseline=True), at=22)]
    prog = program(ks, [step("prune", L, amount=kref("s"))], budget, FACTS)
    res = result(verify(prog), "feasibility")
    assert res.verdict is Verdict.REFUTED
    assert [m.span.line for m in res.core] == [20, 21]


def test_vacuous_budget_line_warns():
    ks = [knob("s", "float", lo=0.0, hi=0.9, step=0.05, default=0.5)]
    budget = [line(meter("nonzero"), "<=", op("*", c(0.6), meter("nonzero", baseline=True)), at=11),
              line(meter("size"), "<=", op("*", c(2), meter("size", baseline=True)), at=12)]
    report = verify(program(ks, [step("prune", L, amount=kref("s"))], budget, FACTS))
    assert report.exit_code == 0
    assert [(d.code, d.span.line) for d in report.diagnostics] == [("KMR310", 12)]


def test_per_layer_families_are_proved_with_a_real_witness():
    ks = [knob("s", "float", lo=0.0, hi=0.9, step=0.05, default=0.5, layers=L),
          knob("b", "int", values=(4, 8, 16, 32), default=8, layers=L)]
    steps = []
    for name in L:
        steps += [step("prune", (name,), amount=kref("s", name)), step("quantize", (name,), bits=kref("b", name))]
    budget = [line(meter("size"), "<=", op("*", c(0.25), meter("size", baseline=True))),
              line(meter("nonzero"), "<=", op("*", c(0.6), meter("nonzero", baseline=True)), at=31)]
    prog = program(ks, steps, budget, FACTS)
    report = verify(prog)
    assert report.exit_code == 0, render_all(report.diagnostics)
    res = result(report, "feasibility")
    assert res.verdict is Verdict.PROVED
    assert set(res.witness) == {f"s[{n}]" for n in L} | {f"b[{n}]" for n in L}
    from kmr_dsl.verify import is_feasible
    assert is_feasible(prog, "compress", res.witness)


def test_tiny_rlimit_gives_unknown_never_proved():
    # a real (continuous) knob: the precondition cannot be enumerated, so Z3 must decide it
    needs = _needs_density_rule()
    ks = [knob("a", "float", lo=0.0, hi=0.9, default=0.1)]
    prog = program(ks, [step("prune", L, amount=kref("a")), step(needs, L, line=12)],
                   [line(meter("nonzero"), "<=", meter("nonzero", baseline=True))], FACTS,
                   rules={"needs_dense": needs})
    report = verify(prog, rlimit=1)
    assert report.exit_code == 3
    res = result(report, "composability", "needs_dense")
    assert res.verdict is Verdict.UNKNOWN and res.reason
    assert "KMR303" in codes(report)
    # with a normal limit the same obligation is refuted (a = 0.9 leaves density 0.1)
    full = verify(prog)
    assert result(full, "composability", "needs_dense").verdict is Verdict.REFUTED


def test_tiny_rlimit_on_feasibility_is_unknown():
    ks = [knob("a", "float", lo=0.0, hi=0.9, default=0.1), knob("b", "int", values=(4, 8, 16), default=16)]
    prog = program(ks, [step("prune", L, amount=kref("a")), step("quantize", L, bits=kref("b"))],
                   [line(meter("size"), "<=", op("*", c(0.3), meter("size", baseline=True))),
                    line(meter("nonzero"), ">=", op("*", c(0.5), meter("nonzero", baseline=True)))], FACTS)
    report = verify(prog, rlimit=1, use_bounds=False)
    res = result(report, "feasibility")
    assert res.verdict is Verdict.UNKNOWN and report.exit_code == 3
    assert "resource" in res.reason or "canceled" in res.reason or res.reason


def test_notes_and_warnings():
    ks = [knob("s", "float", lo=0.0, hi=0.9, step=0.05, default=0.0, line=7),
          knob("ep", "int", lo=1, hi=10, default=1, line=8)]
    budget = [line(meter("nonzero"), "<=", op("*", c(0.5), meter("nonzero", baseline=True)), at=20),
              line(meter("accuracy", analytic=False), ">=", c(0.9), at=21)]
    prog = program(ks, [step("prune", L, amount=kref("s")), step("finetune", epochs=kref("ep"))], budget, FACTS)
    report = verify(prog)
    assert report.exit_code == 0
    got = sorted((d.code, d.span.line, d.severity) for d in report.diagnostics)
    assert got == [("KMR312", 20, Severity.WARNING), ("KMR313", 21, Severity.NOTE)]


def test_unused_knob_warns():
    ks = [knob("s", "float", lo=0.0, hi=0.9, step=0.05, default=0.5),
          knob("x", "int", lo=1, hi=4, default=2, line=5)]
    prog = program(ks, [step("prune", L, amount=0.5)], [line(meter("size"), "<=", c(10 ** 6, "bytes"))], FACTS)
    report = verify(prog)
    warned = sorted((d.code, d.message) for d in report.diagnostics if d.code == "KMR311")
    assert [m for _, m in warned] == ["knob `s` affects no analytic meter or precondition",
                                      "knob `x` affects no analytic meter or precondition"]


def test_knob_ignored_by_its_step_warns():
    """amount is read by prune's contract only for magnitude pruning: with nm it does nothing."""
    ks = [knob("s", "float", lo=0.0, hi=0.9, step=0.05, default=0.5)]
    prog = program(ks, [step("prune", L, amount=kref("s"), method="nm")], [], FACTS)
    assert "KMR311" in codes(verify(prog))


def test_channel_pruning_shrinks_consumers():
    ks = [knob("c", "float", lo=0.0, hi=0.75, step=0.25, default=0.25)]
    prog = program(ks, [step("prune", ("fc0",), amount=kref("c"), method="channel")], [], FACTS)
    model = pipeline_model(prog, "compress")
    fc0, fc1 = model.final.layers["fc0"], model.final.layers["fc1"]
    assert str(fc0["out_features"]) == str(fc1["in_features"])
    assert model.final.layers["fc2"]["in_features"] == 64
    from kmr_dsl.verify import predict
    half = predict(prog, "compress", {"c": 0.5})
    assert half["macs"] == 32 * 32 + 32 * 64 + 64 * 10
    assert half["params"] == (32 * 32 + 32) + (32 * 64 + 64) + (64 * 10 + 10)


def test_determinism():
    ks = [knob("s", "float", lo=0.0, hi=0.9, default=0.5), knob("b", "int", values=(4, 8, 16), default=8)]
    budget = [line(meter("size"), "<=", op("*", c(0.25), meter("size", baseline=True))),
              line(meter("nonzero"), ">=", op("*", c(0.3), meter("nonzero", baseline=True)), at=31)]
    prog = program(ks, [step("prune", L, amount=kref("s")), step("quantize", L, bits=kref("b"))], budget, FACTS)
    runs = [verify(prog, use_bounds=ub).dumps() for ub in (True, True, False, False)]
    assert runs[0] == runs[1] and runs[2] == runs[3]


def test_report_json_and_file():
    prog = program([], [step("quantize", L, bits=8), step("prune", L, amount=0.5)], [], FACTS)
    data = verify(prog).to_json()
    assert data["exit_code"] == 1 and data["verdict"] == "refuted"
    assert {r["verdict"] for r in data["results"]} <= {"proved", "refuted", "unknown"}
    assert data["diagnostics"][0]["file"] == FILE


def _needs_density_rule():
    from kmr_dsl.core.program import Rule
    from tests.verify.build import layer
    return Rule("needs_dense", (), ("Linear",), (op(">=", layer("density"), c(0.3)),), (), "m:f", span(50))


def test_determinism_across_processes():
    """Different hash seeds (set and dict orders) give byte-identical reports, Z3 paths included."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "from tests.verify.test_golden import _cross_process_program as make\n"
        "from kmr_dsl.verify import verify\n"
        "p = make()\n"
        "print(verify(p).dumps()); print(verify(p, use_bounds=False).dumps())\n")
    root = Path(__file__).resolve().parents[2]
    outs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True,
                             check=True)
        outs.append(run.stdout)
    assert outs[0] == outs[1]


def _cross_process_program():
    ks = [knob("s", "float", lo=0.0, hi=0.9, step=0.05, default=0.5, layers=L),
          knob("b", "int", values=(4, 8, 16), default=8), knob("r", "float", lo=0.0, hi=0.5, default=0.1)]
    steps = [step("prune", (n,), amount=kref("s", n)) for n in L] + [step("quantize", L, bits=kref("b"))]
    budget = [line(meter("size"), "<=", op("*", c(0.05), meter("size", baseline=True))),
              line(meter("nonzero"), ">=", op("*", c(0.3), meter("nonzero", baseline=True)), at=31),
              line(meter("params"), "<=", meter("params", baseline=True), at=32)]
    return program(ks, steps, budget, FACTS)
