"""User properties: true ones pass, false ones fail at the minimal setting, reproducibly."""

import json

import pytest

from kmr_dsl.cli import main
from kmr_dsl.proptest.properties import Sessions, run_property

from .helpers import load


def run(program, name, examples=20, seed=0):
    return run_property(program, program.properties[name], Sessions(program, seed=seed), examples=examples, seed=seed)


@pytest.fixture
def laws(programs):
    return load(programs / "laws.kmr")


def test_a_true_property_passes(laws):
    result = run(laws, "smaller")
    assert result.status == "passed", result.summary()
    assert result.examples >= 10          # 5 sparsities x 3 widths x 2 methods: many distinct draws
    assert result.diagnostics() == []


def test_a_false_property_shrinks_to_the_first_values_of_the_domains(laws):
    result = run(laws, "tiny")
    assert result.status == "failed"
    assert result.setting == {"sparsity": 0.0, "bits": 8}
    assert result.summary().startswith(
        "property tiny failed at sparsity = 0.0, bits = 8: size <= 10% * baseline.size  [")
    (line,) = result.failures
    assert line.left > line.right and line.readings["baseline.size"] > line.readings["size"]
    diag = result.diagnostics()[0]
    assert diag.code == "KMR507" and diag.span.line == laws.properties["tiny"].span.line
    assert "shrunk setting: sparsity = 0.0, bits = 8" in diag.notes


def test_shrinking_finds_the_only_failing_setting(laws):
    # `size < baseline.size` fails only where nothing is compressed: bits = 32, sparsity = 0
    result = run(laws, "strictly")
    assert result.status == "failed"
    assert result.setting == {"bits": 32, "sparsity": 0.0}


def test_a_knob_family_draws_every_instance(programs):
    program = load(programs / "family.kmr")
    assert run(program, "sparser").status == "passed"
    result = run(program, "always_pruned")
    assert result.setting == {"s[0]": 0.0, "s[2]": 0.0}
    assert "at s[0] = 0.0, s[2] = 0.0: nonzero < baseline.nonzero" in result.summary()


def test_a_pipeline_error_fails_the_property_at_the_setting(tmp_path, programs):
    text = (programs / "laws.kmr").read_text().replace(
        "prune(amount = sparsity, method = method) on layers(Linear)",
        "prune(amount = sparsity, method = channel) on layers(Linear)")
    path = programs / "channel.kmr"
    path.write_text(text)
    result = run(load(path), "smaller")
    # channel pruning refuses the output layer, which has no consumer: the simplest
    # setting that prunes anything (sparsity 0.2) fails with the rule's own error
    assert result.status == "failed" and result.error.code == "KMR405"
    assert result.setting["sparsity"] == 0.2
    assert [d.code for d in result.diagnostics()] == ["KMR507", "KMR405"]


def cli(*argv, capsys):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_kmr_test_exit_codes_and_output(programs, capsys):
    code, out, err = cli("test", str(programs / "laws.kmr"), "--no-contracts", "--examples", "6", capsys=capsys)
    assert code == 1
    assert "property smaller passed" in out
    assert "property tiny failed at sparsity = 0.0, bits = 8" in out
    assert "error[KMR507]: property `tiny` failed" in err
    assert out.rstrip().endswith("=> 1 passed, 2 failed (exit 1)")
    assert "Traceback" not in out + err


def test_same_seed_same_output(programs, capsys):
    argv = ("test", str(programs / "laws.kmr"), "--no-contracts", "--format", "json", "--examples", "5", "--seed", "7")
    first = cli(*argv, capsys=capsys)
    second = cli(*argv, capsys=capsys)
    assert first == second
    payload = json.loads(first[1])
    assert payload["exit_code"] == 1 and payload["seed"] == 7
    assert {p["property"]: p["status"] for p in payload["properties"]} == \
        {"smaller": "passed", "tiny": "failed", "strictly": "failed"}
    assert [d["code"] for d in payload["diagnostics"]] == ["KMR507", "KMR507"]


def test_malformed_program_and_misuse_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.kmr"
    bad.write_text('import "std"\nproperty p(nowhere) {\n    forall nothing\n    check size <= 1 KB\n}\n')
    code, _, err = cli("test", str(bad), capsys=capsys)
    assert code == 2 and "KMR201" in err
    code, _, err = cli("test", str(bad), "--examples", "0", capsys=capsys)
    assert code == 2 and "KMR502" in err
