"""The canonical style, case by case: parentheses, numbers, strings, layout, comments,
refusals, and the CLI's `kmr fmt` when it is there."""

from __future__ import annotations

import importlib.util
import math

import pytest

from kmr_dsl import ast
from kmr_dsl.fmt import format_program, format_source, printer
from kmr_dsl.parse import parse, parse_expr


def fmt_expr(text: str) -> str:
    e, diags = parse_expr(text)
    assert diags == [], diags
    out = printer.expr(e)
    again, diags = parse_expr(out)
    assert diags == [] and again == e, f"{text!r} printed as {out!r} means something else"
    return out


@pytest.mark.parametrize("source, canonical", [
    ("(a + b) * c", "(a + b) * c"),
    ("a + (b * c)", "a + b * c"),
    ("(a - b) - c", "a - b - c"),
    ("a - (b - c)", "a - (b - c)"),
    ("a / (b * c)", "a / (b * c)"),
    ("(a or b) and c", "(a or b) and c"),
    ("a or (b and c)", "a or b and c"),
    ("(not a) and b", "not a and b"),
    ("not (a and b)", "not (a and b)"),
    ("not (a < b)", "not a < b"),
    ("(not a) < b", "(not a) < b"),
    ("(a < b) == c", "(a < b) == c"),
    ("-(a.b)", "-a.b"),
    ("(-a).b", "(-a).b"),
    ("-(-x)", "--x"),
    ("-(a * b)", "-(a * b)"),
    ("(-a) * b", "-a * b"),
    ("(3).x", "(3).x"),
    ("(16 KB).x", "(16 KB).x"),
    ("(f)(x)[(i)]", "f(x)[i]"),
    ("(if a then b else c) + 1", "(if a then b else c) + 1"),
    ("if a then b else (c or d)", "if a then b else c or d"),
    ("if (if a then b else c) then d else e", "if if a then b else c then d else e"),
    ("f(x = (a), (b))", "f(x = a, b)"),
    ("baseline.accuracy(test) - 2%", "baseline.accuracy(test) - 2%"),
    ("model.trainable and layer.bits >= 16", "model.trainable and layer.bits >= 16"),
])
def test_minimal_parentheses(source, canonical):
    assert fmt_expr(source) == canonical


@pytest.mark.parametrize("source, canonical", [
    ("12", "12"), ("0.50", "0.5"), ("1e-3", "0.001"), ("3.", "3.0"), (".5", "0.5"),
    ("1e16", "1e+16"), ("1e999", "1e999"), ("007", "7"),
    ("16KB", "16 KB"), ("25 %", "25%"), ("1.5 M", "1.5 M"), ("2ms", "2 ms"), ("2.5e3 MiB", "2500.0 MiB"),
    ('"a\\"b\\\\c"', '"a\\"b\\c"'), ('"a\\\\"', '"a\\\\"'), ('"\\q"', '"\\q"'), ('"re:.*mlp\\.gate$"', '"re:.*mlp\\.gate$"'), ('"a\\\\.b"', '"a\\.b"'), ('"é # not a comment"', '"é # not a comment"'),
])
def test_literals(source, canonical):
    assert fmt_expr(source) == canonical


def test_numbers_keep_their_type_and_value():
    for value in (0, 7, 10**30, 0.1, 1e-300, 5e-324, 1.7976931348623157e308, math.inf, 2.0):
        e, _ = parse_expr(printer.number(value))
        assert isinstance(e, ast.Number) and e.value == value and type(e.value) is type(value)


def test_signed_literals_in_domains_and_defaults():
    src = "knob k : float in (-1.5, 2] step 0.25 = -0.5\nknob q : int in {-3, 0, 3} = -3\n"
    out, diags = format_source(src, "k.kmr")
    assert diags == [] and out == src


def test_layout_groups_and_separates_declarations():
    src = ('knob a : bool\nimport "std"\nimport "x.kmr"\nknob b : {p, q} = p\nknob c : int in [0, 3]\n'
           'meter r = size / 2\nmeter t : count analytic impl "m:f"\nrule z()\nrule y()\n')
    out, _ = format_source(src, "g.kmr")
    assert out == ('knob a : bool\n\nimport "std"\nimport "x.kmr"\n\nknob b : {p, q} = p\n'
                   'knob c : int in [0, 3]\n\nmeter r = size / 2\nmeter t : count analytic impl "m:f"\n\n'
                   'rule z()\n\nrule y()\n')


def test_blocks_always_span_lines():
    out, _ = format_source("pipeline p(m) { budget { } for l in layers() { } }", "b.kmr")
    assert out == "pipeline p(m) {\n    budget {\n    }\n    for l in layers() {\n    }\n}\n"


def test_long_if_chains_break_before_else():
    src = ("meter m = if alpha_long_name > 1 then alpha_long_name * 2 else if beta_long_name > 1 "
           "then beta_long_name else gamma")
    out, _ = format_source(src, "m.kmr")
    assert out == ("meter m = if alpha_long_name > 1 then alpha_long_name * 2\n"
                   "          else if beta_long_name > 1 then beta_long_name\n"
                   "          else gamma\n")


def test_selectors_steps_and_properties():
    src = ('pipeline p(m){prune(amount=0.5)on layers(name="enc.*",Linear)\nquantize(bits=8) on all\n'
           'search grid()}\nproperty q(p){forall a,b check a<=b check true}')
    out, _ = format_source(src, "s.kmr")
    assert out == ('pipeline p(m) {\n    prune(amount = 0.5) on layers(Linear, name = "enc.*")\n'
                   '    quantize(bits = 8) on all\n    search grid()\n}\n\n'
                   'property q(p) {\n    forall a, b\n    check a <= b\n    check true\n}\n')


def test_format_program_has_no_comments_and_empty_program_is_empty():
    assert format_program(parse("# only a comment\n", "e.kmr")[0]) == ""
    assert format_source("", "e.kmr") == ("", [])
    assert format_source("\n# only a comment\n\n", "e.kmr") == ("# only a comment\n", [])


def test_crlf_and_tabs_are_normalised():
    out, diags = format_source('import "std"\r\n\tknob a : bool  # c\r\n', "w.kmr")
    assert diags == [] and out == 'import "std"\n\nknob a : bool  # c\n'


# ---------------------------------------------------------------- failures

def test_unparsable_text_gives_none_and_the_parse_diagnostics():
    text = "pipeline p(m) {\n    prune(amount = 0.5\n"
    out, diags = format_source(text, "bad.kmr")
    assert out is None
    assert diags == parse(text, "bad.kmr")[1] and diags
    assert all(d.code.startswith("KMR1") for d in diags)


def test_refuses_rather_than_lose_a_comment(monkeypatch):
    from kmr_dsl.fmt import comments
    monkeypatch.setattr(comments, "merge", lambda lines, found: printer.render(lines))
    out, diags = format_source("# keep me\nknob a : bool\n", "c.kmr")
    assert out is None and [d.code for d in diags] == ["KMR504"]
    assert "comment" in diags[0].message


def test_refuses_rather_than_change_the_program(monkeypatch):
    real = printer.expr
    monkeypatch.setattr(printer, "expr", lambda e, need=0: real(e))   # never parenthesise
    out, diags = format_source("meter m = (a + b) * c\n", "c.kmr")
    assert out is None and [d.code for d in diags] == ["KMR504"]


def test_a_printer_crash_becomes_a_diagnostic(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")
    monkeypatch.setattr("kmr_dsl.fmt.layout", broken)
    out, diags = format_source("knob a : bool\n", "c.kmr")
    assert out is None and diags[0].code == "KMR504" and "boom" in diags[0].message


# ---------------------------------------------------------------- the CLI

CLI_PRESENT = importlib.util.find_spec("kmr_dsl.cli") is not None


@pytest.mark.skipif(not CLI_PRESENT, reason="kmr_dsl/cli.py has not landed yet")
def test_cli_fmt_check_and_rewrite(tmp_path, capsys):
    from kmr_dsl.cli import main
    messy = tmp_path / "messy.kmr"
    messy.write_text("knob  a:bool # why\n", encoding="utf-8")
    assert main(["fmt", str(messy), "--check"]) != 0
    assert messy.read_text(encoding="utf-8") == "knob  a:bool # why\n"     # --check never writes
    assert main(["fmt", str(messy)]) == 0
    assert messy.read_text(encoding="utf-8") == "knob a : bool  # why\n"
    assert main(["fmt", str(messy), "--check"]) == 0
    broken = tmp_path / "broken.kmr"
    broken.write_text("knob a : \n", encoding="utf-8")
    assert main(["fmt", str(broken)]) == 2
    assert broken.read_text(encoding="utf-8") == "knob a : \n"
    assert "Traceback" not in capsys.readouterr().err
