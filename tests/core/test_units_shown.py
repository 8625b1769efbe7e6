"""Values shown to people carry their unit: a budget line's sides in the run report and
in KMR312's note (`size / baseline.size` is a number, not bytes), a knob's witness value
with the unit it was declared in (`mem = 1 GB`, which can be pasted back)."""

from __future__ import annotations

from types import SimpleNamespace

from kmr_dsl.core.evaluate import expr_dim
from kmr_dsl.outcome import LineVerdict
from kmr_dsl.runtime.report import _line_dim
from kmr_dsl.units import fmt_value
from kmr_dsl.verify import verify

from tests.verify.test_knapsack import program

SRC = """import "std"
model deep = factory("bench:mlp")
knob mem : int in [1 B, 1 GB] = 1 B
knob t : float in [0.001 s, 1 s] = 0.5 s
pipeline compress(deep) {
    prune(amount = 0.5) on layers(Linear)
    budget {
        size <= mem
        size / baseline.size <= 60%
        latency(batch = 1) <= t
        size / latency(batch = 1) <= 1 GB / 1 s
        params - 10 <= 100 K
    }
}
"""


def test_the_dimension_of_each_side_follows_its_operations():
    prog = program(SRC, 3)
    dims = [(expr_dim(c.left, prog), expr_dim(c.right, prog)) for c in prog.pipelines["compress"].budget]
    assert dims == [("bytes", "bytes"), ("number", "number"), ("time", "time"), ("number", "number"),
                    ("number", "number")]


def test_the_run_report_shows_a_ratio_line_as_a_number():
    prog = program(SRC, 3)
    pipe = prog.pipelines["compress"]
    session = SimpleNamespace(pipeline=pipe, program=prog)
    ratio = pipe.budget[1]
    text = prog.sources[ratio.span.file].splitlines()[ratio.span.line - 1].strip()
    line = LineVerdict(text=text, holds=True, left=0.52, right=0.6, margin=0.08, op="<=", line=ratio.span.line)
    dim = _line_dim(session, line)
    # before, any line naming `size` was shown in bytes: "1 B <= 1 B"
    assert (fmt_value(line.left, dim), fmt_value(line.right, dim)) == ("0.52", "0.6")
    first = pipe.budget[0]
    size_line = LineVerdict(text="size <= mem", holds=True, left=2500.0, right=1e9, margin=1.0, op="<=",
                            line=first.span.line)
    assert fmt_value(size_line.left, _line_dim(session, size_line)) == "2.50 KB"


def test_a_witness_shows_a_byte_knob_in_its_unit_and_kmr312_in_bytes():
    prog = program('''import "std"
model deep = factory("bench:mlp")
knob mem : int in [1 B, 1 GB] = 1 B
pipeline compress(deep) {
    budget { size <= mem }
}
''', 3)
    report = verify(prog)
    (feasible,) = [r for r in report.results if r.kind == "feasibility"]
    assert feasible.summary.endswith("mem = 1 GB"), feasible.summary
    (warned,) = [d for d in report.diagnostics if d.code == "KMR312"]
    assert warned.notes[0].startswith("at the defaults (mem = 1 B): ") and warned.notes[0].endswith("KB against 1 B")


def test_bytes_are_shown_whole_in_the_largest_unit_that_keeps_them_exact():
    from kmr_dsl.verify.knobs import _bytes

    assert [_bytes(v) for v in (0, 999, 1000, 1500, 2_000_000, 10 ** 9, 1.5)] == \
        ["0 B", "999 B", "1 KB", "1500 B", "2 MB", "1 GB", "1.5 B"]
