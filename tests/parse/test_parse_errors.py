"""The parse-error table: each malformed input gets its own code, position and message
(labelled examples plus bracket and unit heuristics in kmr_dsl.parse.errors)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmr_dsl.parse import parse

CASES = [
    # (name, source, code, line, col, words in the message)
    ("missing brace", "pipeline p(m) {\n  prune(amount = 0.5)\n", "KMR102", 1, 15, "missing `}` closing the pipeline `p`"),
    ("missing budget brace", "pipeline p(m) {\n  budget {\n    size <= 1 KB\n}\n", "KMR102", 2, 10,
     "missing `}` closing the budget block"),
    ("missing paren", "pipeline p(m) {\n  prune(amount = 0.5\n}\n", "KMR102", 2, 8, "missing `)`"),
    ("missing paren at end", 'model m = factory("a:b"', "KMR102", 1, 18, "missing `)`"),
    ("unterminated string", 'model m = factory("a:b)\n', "KMR103", 1, 19, "unterminated string"),
    ("stray paren", "knob x : int in [0, 4] = 2 )\n", "KMR104", 1, 28, "unbalanced"),
    ("stray brace", "pipeline p(m) { }\n}\n", "KMR104", 2, 1, "unbalanced"),
    ("missing comma", "pipeline p(m) { prune(amount = 0.5 method = nm) }", "KMR104", 1, 36, "separated by `,`"),
    ("knob without type", "knob x = 3", "KMR104", 1, 8, "a knob needs a type"),
    ("knob without domain", "knob x : int = 3", "KMR104", 1, 14, "needs a domain"),
    ("bad domain", "knob x : int in [0 4]", "KMR104", 1, 20, "a domain is"),
    ("step without parens", "pipeline p(m) { prune }", "KMR104", 1, 23, "argument list"),
    ("selector", "pipeline p(m) { prune(amount = 0.5) on Linear }", "KMR104", 1, 40, "a selector is"),
    ("objective", "pipeline p(m) { objective accuracy }", "KMR104", 1, 27, "objective"),
    ("pipeline model", "pipeline p { }", "KMR104", 1, 12, "names its model"),
    ("rule clause", "rule r() foo layer.bits", "KMR104", 1, 10, "accepts, requires, effect or impl"),
    ("effect target", "rule r() effect bits = 3", "KMR104", 1, 17, "effect assigns a state field"),
    ("loader", 'model m = "x"', "KMR104", 1, 11, "LOADER"),
    ("import", "import std", "KMR104", 1, 8, "quoted path"),
    ("leading minus", "pipeline p(m) { budget {\n size <= 3\n -size <= 3 } }", "KMR104", 3, 8, "cannot start with `-`"),
    ("missing operand", "pipeline p(m) { budget { size <= } }", "KMR105", 1, 34, "missing operand"),
    ("operand at end", "meter r = size *   # trailing comment", "KMR105", 1, 17, "ends too early"),
    ("invalid character", "knob x : int in [0, 4] = 2 @", "KMR106", 1, 28, "invalid character '@'"),
    ("invalid in name", "knob x$ : int in [0, 4]", "KMR106", 1, 7, "invalid character '$'"),
    ("unknown unit", "knob x : float in [0, 1] = 16 kb", "KMR107", 1, 31, "unknown unit `kb`"),
    ("no keyword", "foo bar", "KMR108", 1, 1, "expected a declaration"),
    ("no keyword after a declaration", "knob k : int in [0, 4] = 2\nprune(amount = 1)", "KMR108", 2, 1,
     "expected a declaration"),
    ("selector option", 'pipeline p(m) { prune() on layers(Linear, nme = "x") }', "KMR104", 1, 43,
     "unknown selector option `nme`"),
]


@pytest.mark.parametrize("name, src, code, line, col, words", CASES, ids=[c[0] for c in CASES])
def test_parse_error_table(name, src, code, line, col, words):
    _, diags = parse(src, "t.kmr")
    assert len(diags) == 1, diags
    d = diags[0]
    assert (d.code, d.span.line, d.span.col) == (code, line, col), d
    assert words in d.message, d.message
    assert d.hint


def test_each_declaration_reports_its_own_error():
    src = "knob a : int in [0 4]\nknob ok : bool = true\nmeter m = size +\nmodel x = factory(\"a:b\"\n"
    program, diags = parse(src, "t.kmr")
    assert [(d.code, d.span.line) for d in diags] == [("KMR104", 1), ("KMR105", 3), ("KMR102", 4)]
    assert [d.name for d in program.decls] == ["ok"]


def test_line_start_paren_is_a_new_budget_line():
    program, diags = parse("pipeline p(m) { budget {\n  latency <= 2 ms\n  (size + 1 KB) / 2 <= 1 MB\n} }", "t")
    assert diags == []
    assert len(program.decls[0].items[0].constraints) == 2


def test_name_is_an_ordinary_argument_name():
    program, diags = parse('data d = sklearn(name = "iris")\nrule r(name : int) impl "a:b"', "t")
    assert diags == [] and program.decls[0].loader.args[0].name == "name"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('knobmeterpipline(){}[]"#=:,.<>-+*/ \n0123456789KBms%@$')), max_size=120))
def test_parse_never_raises(text):
    _, diags = parse(text, "fuzz.kmr")
    for d in diags:
        assert d.code.startswith("KMR1") and d.span.line >= 1
