"""KMR 0.2 selectors on hand-built facts: `exclude`, `re:` patterns, pattern and kind
lists select what the contract says, and `kmr check --explain layers` lists it."""

from __future__ import annotations

from kmr_dsl.check import check_file
from kmr_dsl.check.selectors import explain_selection
from kmr_dsl.diagnostics import has_errors, render_all
from kmr_dsl.patterns import match_one, pattern_error, selected

from . import fakes

PROGRAM = '''
import "std"
model bert = factory("fake:bert")
knob s[l in layers(Linear, exclude = ["re:.*\\\\.(query|key|value)", "pooler.*"])] : float in [0.0, 0.5] = 0.1

pipeline p(bert) {
    quantize(bits = 8) on layers([Linear, Embedding], exclude = ["pooler.dense", "re:.*position_embeddings"])
    for l in layers(Linear, exclude = ["re:.*\\\\.(query|key|value)", "pooler.*"]) {
        prune(amount = s[l])
    }
    lowrank() on layers(name = "re:encoder\\\\.layer\\\\.1\\\\..*dense")
}
'''


def test_patterns():
    assert match_one("encoder.layer.0.attention.self.query", "encoder.*.query")      # `*` crosses dots
    assert match_one("model.layers.3.mlp.gate", "re:.*mlp\\.gate$")
    assert not match_one("model.layers.3.mlp.gate_proj", "re:.*mlp\\.gate")            # the whole name
    assert selected("lm_head", None, None) and not selected("lm_head", None, ("lm_head",))
    assert selected("a.b", ("x", "a.*"), ("re:z",))
    assert pattern_error("re:(") and pattern_error("re:") and pattern_error("glob[") is None


def test_exclude_regex_and_lists_select_the_contracted_layers(tmp_path):
    path = tmp_path / "p.kmr"
    path.write_text(PROGRAM)
    program, diags = check_file(str(path), facts_provider=fakes.provider)
    assert program is not None and not has_errors(diags), render_all(diags)
    steps = program.pipelines["p"].steps
    linears = [f"encoder.layer.{i}.{p}" for i in (0, 1) for p in (
        "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
        "intermediate.dense", "output.dense")]
    assert steps[0].layers == ("embeddings.word_embeddings", *linears)
    pruned = [n for n in linears if not n.endswith(("query", "key", "value"))]
    assert [s.layers[0] for s in steps[1:-1]] == pruned
    assert program.knobs["s"].layers == tuple(pruned)
    assert steps[-1].layers == ("encoder.layer.1.attention.output.dense", "encoder.layer.1.intermediate.dense",
                                "encoder.layer.1.output.dense")
    text = explain_selection(program, "p")
    assert "13 layer(s): embeddings.word_embeddings, encoder.layer.0.attention.self.query" in text
    assert "knob family `s`" in text and "6 instance(s)" in text
    assert text.count("prune(amount = s[l])") == 1       # a for block's expansion is one entry


def test_a_regex_backslash_survives_parsing():
    from kmr_dsl.parse import parse

    program, diags = parse('pipeline p(m) { prune() on layers(Linear, exclude = "re:.*mlp\\.gate$") }')
    assert not diags
    (pattern,) = program.decls[0].items[0].selector.exclude
    assert pattern.value == "re:.*mlp\\.gate$"
    assert match_one("model.layers.0.mlp.gate", pattern.value) and not match_one("model.layers.0.mlpxgate", pattern.value)
