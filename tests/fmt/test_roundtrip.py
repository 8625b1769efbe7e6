"""`kmr fmt` round-trips: parse(fmt(p)) == p and fmt(fmt(p)) == fmt(p), for programs
generated from the grammar and for every .kmr file in the checkout."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmr_dsl.fmt import comments, format_program, format_source
from kmr_dsl.parse import parse

from fuzz.programs import ROOT, kmr_files, programs

SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def assert_round_trip(program, text: str) -> None:
    again, diags = parse(text, program.file)
    assert diags == [], f"formatted text does not parse:\n{text}\n{diags}"
    assert again == program, f"formatted text means a different program:\n{text}"
    # AST equality says 1 == 1.0; the repr (spans excluded) also compares the types.
    assert repr(again) == repr(program)
    assert format_program(again) == text, "formatting is not idempotent"


@settings(max_examples=150, **SETTINGS)
@given(programs())
def test_generated_programs_round_trip(source):
    program, diags = parse(source, "gen.kmr")
    assert diags == [], f"kmr_gen.lark generated a program kmr.lark rejects:\n{source}"
    text = format_program(program)
    assert_round_trip(program, text)
    assert format_source(source, "gen.kmr") == (text, [])
    assert format_source(text, "gen.kmr") == (text, [])


@pytest.mark.parametrize("path", kmr_files(include_errors=True), ids=lambda p: str(p.relative_to(ROOT)))
def test_repository_files_round_trip(path):
    """Every file that parses, golden error files included (most of those are errors
    of the checker, not of syntax); `ok/` files must parse."""
    source = path.read_text(encoding="utf-8")
    program, diags = parse(source, str(path))
    if diags:
        assert "err" in path.relative_to(ROOT).parts, diags
        assert format_source(source, str(path)) == (None, diags)
        return
    assert_round_trip(program, format_program(program))
    out, diags = format_source(source, str(path))
    assert diags == [] and out is not None
    assert Counter(comments.texts(out)) == Counter(comments.texts(source))
    assert parse(out, str(path))[0] == program
    assert format_source(out, str(path)) == (out, [])


def test_the_repository_has_programs_to_check():
    names = {p.name for p in kmr_files()}
    assert {"std.kmr", "rules.kmr", "meters.kmr", "spec_example.kmr"} <= names


# ---------------------------------------------------------------- comments survive

def _with_comments(source: str, plan) -> str:
    """Insert comments into `source`: (line index, trailing?, text) triples."""
    lines = source.split("\n")
    for at, trailing, text in sorted(plan, key=lambda p: -p[0]):
        at %= len(lines)
        if trailing:
            lines[at] += f"  # {text}"
        else:
            lines.insert(at, f"# {text}")
    return "\n".join(lines)


_comment_texts = st.text(st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), max_size=12)
_plans = st.lists(st.tuples(st.integers(0, 10_000), st.booleans(), _comment_texts), min_size=1, max_size=8)


def assert_comments_kept(source: str) -> None:
    program, diags = parse(source, "c.kmr")
    assert diags == []
    out, diags = format_source(source, "c.kmr")
    assert diags == [] and out is not None, diags
    assert Counter(comments.texts(out)) == Counter(comments.texts(source))
    assert parse(out, "c.kmr")[0] == program
    assert format_source(out, "c.kmr") == (out, []), "comment placement is not idempotent"


@settings(max_examples=100, **SETTINGS)
@given(programs(), _plans)
def test_comments_in_generated_programs_survive(source, plan):
    assert_comments_kept(_with_comments(source, plan))


@settings(max_examples=80, **SETTINGS)
@given(st.sampled_from(kmr_files()), _plans)
def test_comments_in_repository_files_survive(path, plan):
    assert_comments_kept(_with_comments(path.read_text(encoding="utf-8"), plan))


# ---------------------------------------------------------------- golden output

GOLDEN = sorted(p for p in (ROOT / "tests" / "fmt" / "data").glob("*.kmr") if not p.name.endswith(".fmt.kmr"))


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_golden_output(path):
    expected = path.with_name(path.stem + ".fmt.kmr").read_text(encoding="utf-8")
    assert format_source(path.read_text(encoding="utf-8"), str(path)) == (expected, [])
    assert format_source(expected, str(path)) == (expected, [])
