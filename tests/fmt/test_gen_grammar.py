"""grammar/kmr_gen.lark stays in step with grammar/kmr.lark, and what it generates parses."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings

from kmr_dsl.parse import parse

from fuzz.programs import GEN_GRAMMAR, GRAMMAR, programs

# Terminals kmr.lark needs that generation does not: comments are %ignore'd there and
# generation writes none (the fmt tests add comments themselves).
NOT_GENERATED = {"COMMENT"}


def grammar_names(text: str) -> set[str]:
    """Rule names, tree aliases (`-> name`) and defined terminals of a lark grammar."""
    text = re.sub(r"//[^\n]*", "", text)
    rules = re.findall(r"^[?!]*([a-z_][a-z0-9_]*)(?:\.\d+)?\s*:", text, re.M)
    aliases = re.findall(r"->\s*([a-z_][a-z0-9_]*)", text)
    terminals = re.findall(r"^([A-Z_][A-Z0-9_]*)(?:\.\d+)?\s*:", text, re.M)
    return set(rules) | set(aliases) | set(terminals)


def missing_from_gen(grammar: str, gen: str) -> set[str]:
    return grammar_names(grammar) - grammar_names(gen) - NOT_GENERATED


def test_generation_grammar_covers_every_rule_alias_and_terminal():
    missing = missing_from_gen(GRAMMAR.read_text(encoding="utf-8"), GEN_GRAMMAR.read_text(encoding="utf-8"))
    assert not missing, f"grammar/kmr_gen.lark lacks {sorted(missing)}: add them (with explicit spaces)"


def test_the_sync_check_notices_a_new_rule():
    grammar = GRAMMAR.read_text(encoding="utf-8")
    gen = GEN_GRAMMAR.read_text(encoding="utf-8")
    grew = grammar + '\nwhile_block: "while" expr "{" step* "}"  -> loop\nTOKEN_X: "x"\n'
    assert missing_from_gen(grew, gen) == {"while_block", "loop", "TOKEN_X"}


def test_names_are_read_the_way_lark_reads_them():
    names = grammar_names('?a: b | c -> d  // e: f\n!g.2: "x"\nH: "h"\n_i: j\n')
    assert names == {"a", "d", "g", "H", "_i"}


@settings(max_examples=50, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(programs())
def test_every_generated_program_parses(source):
    program, diags = parse(source, "gen.kmr")
    assert diags == [], f"{source}\n{diags}"
    # every declaration starts a line in column 1 (blocks close with `}` there)
    starts = [line for line in source.split("\n") if line and not line.startswith((" ", "}"))]
    assert len(program.decls) == len(starts)
