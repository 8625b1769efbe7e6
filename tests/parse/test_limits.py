"""Inputs at the edges of the front end: nesting depth (KMR109, and every stage at the
limit), non-ASCII digits, a byte order mark, `--set` numerals, and steps far larger
than their range. Each case here was an internal error or a silent misreading before."""

from __future__ import annotations

import contextlib
import io
import pytest

from kmr_dsl.check import check_source
from kmr_dsl.diagnostics import KmrError, Span, has_errors
from kmr_dsl.fmt import format_source
from kmr_dsl.parse import MAX_NESTING, parse

N = MAX_NESTING

# Budget lines nested exactly N levels deep (the comparison is one level), and ways to
# go one level deeper. `s` is a float knob.
AT_LIMIT = {
    "sum": " + ".join(["size"] * N) + " <= 1 MB",                       # N - 1 `+`, one `<=`
    "if": "(" + "if s > 0.1 then " * (N - 2) + "size" + " else size" * (N - 2) + ") <= 1 MB",
    "not": "(if " + "not " * (N - 3) + "(s > 0.1) then size else 2 * size) <= 1 MB",
    "neg": "0 B <= " + "-" * (N - 2) + "size + 1 MB",
    "call": "max(size, " * (N - 1) + "size" + ")" * (N - 1) + " <= 1 MB",
}
DEEPER = {
    "sum": " + ".join(["size"] * (N + 1)) + " <= 1 MB",
    "if": "(" + "if s > 0.1 then " * (N - 1) + "size" + " else size" * (N - 1) + ") <= 1 MB",
    "not": "(if " + "not " * 10_000 + "(s > 0.1) then size else 2 * size) <= 1 MB",
    "neg": "0 B <= " + "-" * 10_000 + "size + 1 MB",
    "call": "max(size, " * N + "size" + ")" * N + " <= 1 MB",
}


def program(line: str, model: str = 'factory("fake:mlp")') -> str:
    return (f'import "std"\nmodel m = {model}\nknob s : float in [0.0, 0.9] step 0.1 = 0.5\n'
            f"pipeline p(m) {{\n    prune(amount = s) on layers(Linear)\n    budget {{\n        {line}\n    }}\n}}\n")


@pytest.mark.parametrize("kind", sorted(DEEPER))
def test_too_deep_is_kmr109_located_with_a_hint(kind):
    _, diags = parse(program(DEEPER[kind]), "deep.kmr")
    assert [d.code for d in diags] == ["KMR109"], diags
    d = diags[0]
    assert d.span.line == 7 and d.span.col >= 9 and d.hint and str(N) in d.message


def test_ten_thousand_parentheses_add_no_level():
    _, diags = parse(program("(" * 10_000 + "size" + ")" * 10_000 + " <= 1 MB"))
    assert diags == []


@pytest.mark.parametrize("kind", sorted(AT_LIMIT))
def test_at_the_limit_every_front_end_stage_works(kind):
    text = program(AT_LIMIT[kind])
    prog, diags = parse(text, "deep.kmr")
    assert diags == [], diags
    out, fdiags = format_source(text, "deep.kmr")
    assert out is not None and not has_errors(fdiags), fdiags
    assert format_source(out, "deep.kmr") == (out, [])


def _cli(argv) -> tuple[int, str]:
    from kmr_dsl.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        rc = main(argv)
    return rc, buf.getvalue()


MODEL = '''import torch


def make():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
'''


def test_check_verify_and_run_at_the_limit(tmp_path, monkeypatch):
    """Every budget line at the nesting limit, through check (with the verifier) and
    run: no internal error anywhere, the run meets the budget it proved."""
    monkeypatch.setenv("KMR_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "tiny.py").write_text(MODEL)
    lines = "\n        ".join(AT_LIMIT[k].replace("1 MB", f"{N} MB") for k in sorted(AT_LIMIT))
    path = tmp_path / "deep.kmr"
    path.write_text(program(lines, 'factory("tiny:make")'))
    rc, out = _cli(["check", str(path)])
    assert rc == 0 and "KMR500" not in out and "internal" not in out, out
    rc, out = _cli(["run", str(path), "--out", str(tmp_path / "out")])
    assert rc == 0 and "KMR500" not in out and "internal" not in out, out
    assert (tmp_path / "out" / "report.json").is_file()


def test_too_deep_through_the_cli_is_exit_2_not_internal(tmp_path):
    path = tmp_path / "deep.kmr"
    for kind in sorted(DEEPER):
        path.write_text(program(DEEPER[kind]))
        for argv in (["check", str(path)], ["fmt", str(path)]):
            rc, out = _cli(argv)
            assert rc == 2 and "KMR109" in out and "KMR500" not in out, (kind, argv, out)


# ---------------------------------------------------------------- digits, BOM

@pytest.mark.parametrize("digits", ["٣٠", "０", "３", "৩", "𝟑"])
def test_non_ascii_digits_are_not_numbers(digits):
    _, diags = parse(f'import "std"\nknob x : int in [0, {digits}] = 0\n', "d.kmr")
    assert [d.code for d in diags] == ["KMR106"], diags
    d = diags[0]
    assert "non-ASCII digit" in d.message and d.hint and (d.span.line, d.span.col) == (2, 21)


def test_non_ascii_digit_in_a_quantity():
    _, diags = parse('pipeline p(m) {\n  budget {\n    size <= ٣٠ KB\n  }\n}\n')
    assert [(d.code, d.span.line, d.span.col) for d in diags] == [("KMR106", 3, 13)]


def test_a_byte_order_mark_is_accepted():
    text = '\ufeffimport "std"\nknob x : int in [0, 4] = 2\n'
    prog, diags = parse(text)
    assert diags == [] and len(prog.decls) == 2
    _, cdiags = check_source(text, "bom.kmr")
    assert not has_errors(cdiags), cdiags
    out, fdiags = format_source(text, "bom.kmr")
    assert fdiags == [] and out == "\ufeff" + format_source(text[1:], "bom.kmr")[0]   # the mark is kept


# ---------------------------------------------------------------- --set numerals

def _knob(kind: str, lo, hi):
    prog, diags = check_source(f'import "std"\nknob k : {kind} in [{lo}, {hi}] = {lo}\n', "k.kmr")
    assert not has_errors(diags), diags
    return prog.knobs["k"]


@pytest.mark.parametrize("text", ["８", "٣", "nan", "NaN", "inf", "-inf", "1e999", "1_0", "0x8", "", "+"])
def test_set_rejects_non_ascii_and_non_finite_numbers(text):
    from kmr_dsl.settings import parse_value

    for knob in (_knob("int", 0, 32), _knob("float", 0.0, 100.0)):
        with pytest.raises(KmrError) as e:
            parse_value(knob, text, Span.unknown("kmr run"))
        assert e.value.diagnostic.code == "KMR503"


def test_set_accepts_plain_numerals():
    from kmr_dsl.settings import parse_value

    span = Span.unknown("kmr run")
    assert parse_value(_knob("int", 0, 32), " 8 ", span) == 8
    assert parse_value(_knob("float", 0.0, 1.0), "0.5", span) == 0.5
    assert parse_value(_knob("float", 0.0, 1.0), ".5e0", span) == 0.5
    with pytest.raises(KmrError):
        parse_value(_knob("int", 0, 32), "8.0", span)


# ---------------------------------------------------------------- steps

@pytest.mark.parametrize("step", ["1e300", "1.5", "2"])
def test_a_step_larger_than_the_range_is_kmr207(step):
    _, diags = check_source(f'import "std"\nknob a : float in [0.0, 1.0] step {step} = 0.0\n', "s.kmr")
    assert "KMR207" in {d.code for d in diags}, diags


def test_a_step_on_a_one_point_range_is_fine():
    _, diags = check_source('import "std"\nknob a : float in [0.5, 0.5] step 0.1 = 0.5\n', "s.kmr")
    assert not has_errors(diags), diags


def test_derived_meters_that_expand_too_deep_are_kmr109():
    """Each meter is shallow, but they expand in place: m11 stands for a tree over a
    thousand levels deep (the verifier used to fail with a RecursionError)."""
    meters = "meter m0 = size\n" + "".join(
        f"meter m{i} = " + " + ".join([f"m{i - 1}"] * 2 + ["size"] * 100) + "\n" for i in range(1, 12))
    text = program("m11 <= 1 GB").replace("knob s", meters + "knob s")
    _, diags = check_source(text, "meters.kmr")
    deep = [d for d in diags if d.code == "KMR109"]
    assert deep and deep[0].span.line > 1 and deep[0].hint, diags
    assert "KMR500" not in {d.code for d in diags}


@pytest.mark.parametrize("argv", [["test", "x.kmr", "--examples", "８"], ["search", "x.kmr", "--time-limit", "nan"],
                                  ["run", "x.kmr", "--threads", "٣"], ["check", "x.kmr", "--timeout", "inf"]])
def test_numeric_options_take_ascii_finite_numbers(argv):
    rc, out = _cli(argv)
    assert rc == 2 and "KMR502" in out and "Traceback" not in out, out
