"""`kmr import`: real llm-compressor and SparseML recipes as KMR programs; every gap is a
located diagnostic; the imported program is checked by `kmr check` like any other."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from kmr_dsl.cli import main
from kmr_dsl.diagnostics import Severity, has_errors
from kmr_dsl.importer import emit, import_recipe
from kmr_dsl.parse import parse

CORPUS = Path(__file__).resolve().parents[1] / "data" / "recipes"
RECIPES = sorted(p for p in CORPUS.iterdir() if p.suffix in (".yaml", ".md") and p.name != "SOURCES.md")


def _lines(path: Path) -> list[str]:
    return path.read_text().split("\n")


def test_corpus_has_fifteen_real_recipes_with_sources():
    sources = (CORPUS / "SOURCES.md").read_text()
    assert len(RECIPES) >= 15
    for p in RECIPES:
        assert f"| {p.name} |" in sources, p.name


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_corpus_recipe_imports_to_a_program_that_parses(path):
    program, diags = import_recipe(str(path))
    assert program is not None, diags
    _, pdiags = parse(program, "imported.kmr")
    assert not has_errors(pdiags), (program, pdiags)
    lines = _lines(path)
    for d in diags:
        assert d.code in ("KMR531", "KMR532", "KMR533", "KMR534"), d
        assert d.span.file == str(path) and 1 <= d.span.line <= len(lines), d
        assert d.span.col <= len(lines[d.span.line - 1]) + 1, d


def _import(tmp_path, text, **kw):
    p = tmp_path / "recipe.yaml"
    p.write_text(textwrap.dedent(text))
    return p, *import_recipe(str(p), **kw)


def _at(path: Path, d) -> str:
    """The text at a diagnostic's position."""
    return _lines(path)[d.span.line - 1][d.span.col - 1:]


def test_smoothquant_gptq_recipe_maps_every_modifier(tmp_path):
    path = CORPUS / "w8a8_int8_smoothquant_gptq.yaml"
    program, diags = import_recipe(str(path))
    text = program.replace("#", "")  # commented steps count: they are what the recipe asks for
    assert "smoothquant(alpha = 0.8, calibration = recipe_data) on layers(Linear, name = " \
           '["re:.*q_proj", "re:.*k_proj", "re:.*v_proj", "re:.*gate_proj", "re:.*up_proj"])' in text
    assert 'gptq(bits = 8, group_size = 0, calibration = recipe_data) on layers(Linear, exclude = "lm_head")' in text
    # dynamic per-token symmetric int8 activations: KMR's `activations = token`
    assert 'quantize(bits = 8, activations = token) on layers(Linear, exclude = "lm_head")' in text
    by_code = {}
    for d in diags:
        by_code.setdefault(d.code, []).append(d)
    # the execution detail is a note at its key; nothing else is reported: every option maps
    (seq,) = [d for d in by_code["KMR534"] if "sequential_update" in d.message]
    assert _at(path, seq).startswith("sequential_update") and seq.severity is Severity.NOTE
    assert set(by_code) == {"KMR534"}


def _steps(program: str) -> list[str]:
    """The pipeline's step lines (commented ones too: they are what the recipe asks for)."""
    return [line.strip().lstrip("# ") for line in program.split("\n")
            if line.startswith("    ") and " on " in line and "needs" not in line]


GROUP = """\
    quant_stage:
      quant_modifiers:
        {modifier}:
          ignore: [lm_head]
          config_groups:
            group_0:
              targets: [Linear]
              weights: {weights}
              input_activations: {acts}
    """
W8 = "{num_bits: 8, type: int, symmetric: true, strategy: channel}"
W8_ASYM = "{num_bits: 8, type: int, symmetric: false, strategy: channel}"
SEL = 'on layers(Linear, exclude = "lm_head")'


@pytest.mark.parametrize("modifier, weights, acts, steps, reported", [
    # llm-compressor's W8A8 as a config group: dynamic per-token symmetric activations
    ("QuantizationModifier", W8, "{num_bits: 8, type: int, symmetric: true, dynamic: true, strategy: token}",
     [f"quantize(bits = 8, activations = token) {SEL}"], []),
    # asymmetric weights and per-token activations: both follow `symmetric = false`
    ("QuantizationModifier", W8_ASYM, "{num_bits: 8, type: int, symmetric: false, dynamic: true, strategy: token}",
     [f"quantize(bits = 8, symmetric = false, activations = token) {SEL}"], []),
    # asymmetric per-token activations with symmetric weights: KMR ties the two, reported at `symmetric`
    ("QuantizationModifier", W8, "{num_bits: 8, symmetric: false, dynamic: true, strategy: token}",
     [f"quantize(bits = 8, activations = token) {SEL}"], [("KMR532", "symmetric: false", "per-token activations follow")]),
    # static per-tensor asymmetric activations: KMR's static activations are affine, exactly
    ("QuantizationModifier", W8, "{num_bits: 8, symmetric: false, dynamic: false, strategy: tensor}",
     [f"quantize(bits = 8, scheme = static, calibration = recipe_data) {SEL}"], []),
    # symmetric static per-tensor activations: written affine, reported at `symmetric`
    ("QuantizationModifier", W8, "{num_bits: 8, symmetric: true, strategy: tensor, observer: static_minmax}",
     [f"quantize(bits = 8, scheme = static, calibration = recipe_data) {SEL}"], [("KMR532", "symmetric: true", "affine")]),
    # 4-bit weights with 8-bit activations (W4A8): KMR quantizes activations only in W8A8
    ("QuantizationModifier", "{num_bits: 4, symmetric: true, strategy: group, group_size: 32}",
     "{num_bits: 8, dynamic: true, strategy: token}",
     ["quantize(bits = 4, scheme = weight_only, group_size = 32) " + SEL], [("KMR532", "{num_bits: 8, dynamic", "W8A8")]),
    # GPTQ with asymmetric weights: gptq has no `symmetric` (its step stays a comment,
    # KMR533); the activations' quantize takes the float weights asymmetric
    ("GPTQModifier", W8_ASYM, "{num_bits: 8, symmetric: false, dynamic: true, strategy: token}",
     ["gptq(bits = 8, group_size = 0, symmetric = false, calibration = recipe_data) " + SEL,
      f"quantize(bits = 8, symmetric = false, activations = token) {SEL}"], [("KMR533", "GPTQModifier", "gptq")]),
])
def test_activation_and_symmetry_mappings(tmp_path, modifier, weights, acts, steps, reported):
    path, program, diags = _import(tmp_path, GROUP.format(modifier=modifier, weights=weights, acts=acts))
    assert _steps(program) == steps, program
    # each diagnostic: its code, the recipe text it points at, and what it says
    got = [(d.code, _at(path, d)[:len(r[1])], r[2] in d.message + " ".join(d.notes))
           for d, r in zip([d for d in diags if d.code != "KMR534"], reported)]
    assert len([d for d in diags if d.code != "KMR534"]) == len(reported), diags
    assert got == [(r[0], r[1], True) for r in reported], diags


@pytest.mark.parametrize("scheme, step", [
    ("W8A8", "quantize(bits = 8, activations = token) on layers(Linear)"),
    ("INT8", "quantize(bits = 8, activations = token) on layers(Linear)"),
    ("W4A16_ASYM", "quantize(bits = 4, scheme = weight_only, group_size = 128, symmetric = false) on layers(Linear)"),
])
def test_preset_schemes_map_exactly(tmp_path, scheme, step):
    _, program, diags = _import(tmp_path, f"""\
        quant_stage:
          quant_modifiers:
            QuantizationModifier:
              scheme: {scheme}
              targets: [Linear]
        """)
    assert _steps(program) == [step] and diags == []


def test_smoothquant_without_mappings_takes_llm_compressors_defaults(tmp_path):
    path, program, diags = _import(tmp_path, """\
        quant_stage:
          quant_modifiers:
            SmoothQuantModifier:
              smoothing_strength: 0.5
        """)
    assert _steps(program) == ['smoothquant(alpha = 0.5, calibration = recipe_data) on layers(Linear, name = '
                               '["re:.*q_proj", "re:.*k_proj", "re:.*v_proj", "re:.*gate_proj", "re:.*up_proj"])']
    (d,) = diags
    assert (d.code, d.span.line, d.span.col) == ("KMR532", 3, 5) and "architecture" in d.message


def test_sparsegpt_dampening_maps(tmp_path):
    _, program, diags = _import(tmp_path, """\
        sparsity_stage:
          sparsity_modifiers:
            SparseGPTModifier:
              sparsity: 0.5
              percdamp: 0.02
              targets: [Linear]
        """)
    assert _steps(program) == ["sparsegpt(amount = 0.5, calibration = recipe_data, dampening = 0.02) on layers(Linear)"]
    assert diags == []


def test_unknown_modifier_and_option_are_located(tmp_path):
    path, program, diags = _import(tmp_path, """\
        quant_stage:
          quant_modifiers:
            QuantizationModifier:
              scheme: W8A16
              targets: [Linear]
              frobnicate: 3
            LogarithmicEqualizationModifier:
              mappings: []
        """)
    assert "quantize(bits = 8, scheme = weight_only) on layers(Linear)" in program
    (opt,) = [d for d in diags if d.code == "KMR532"]
    assert (opt.span.line, opt.span.col) == (6, 7) and "frobnicate" in opt.message
    (mod,) = [d for d in diags if d.code == "KMR531"]
    assert (mod.span.line, mod.span.col) == (7, 5) and "LogarithmicEqualizationModifier" in mod.message


@pytest.mark.parametrize("text, where", [
    ("- a\n- b\n", (1, 1)),
    ("model: llama\nlr: 0.1\n", (1, 1)),
    ("quant_stage:\n  quant_modifiers: [1\n", (3, 1)),
    ("", None),
])
def test_not_a_recipe(tmp_path, text, where, capsys):
    p = tmp_path / "x.yaml"
    p.write_text(text)
    program, diags = import_recipe(str(p))
    assert program is None and [d.code for d in diags] == ["KMR530"]
    if where:
        assert (diags[0].span.line, diags[0].span.col) == where
    assert main(["import", str(p)]) == 2
    assert "KMR530" in capsys.readouterr().err


def test_sparseml_schedule_with_eval_variables():
    program, diags = import_recipe(str(CORPUS / "sml_resnet50_beans_pruning.yaml"))
    text = program.replace("#", "")
    assert "prune_gradually(final = 0.9, data = recipe_data, initial = 0.05, epochs = 10, curve = cubic, " \
           "lr = 0.00025, schedule = cosine)" in text
    assert 'name = ["conv1", "re:layer1.*.conv1",' in text  # parameter names name their layers
    assert "finetune(data = recipe_data, epochs = 3, lr = 0.00025, schedule = cosine)" in text  # 13 - 10 epochs
    assert not any(d.severity is Severity.ERROR for d in diags)


def test_markdown_recipe_keeps_the_files_line_numbers():
    path = CORPUS / "sml_bert_6layers_prune80.md"
    _, diags = import_recipe(str(path))
    (layer,) = [d for d in diags if "LayerPruningModifier" in d.message]
    assert _at(path, layer).startswith("!LayerPruningModifier")  # the tagged entry


def test_a_new_rule_is_one_table_entry(monkeypatch):
    """When the standard library has gptq (and 0.2 selectors), the step is active."""
    rules = dict(emit.stdlib_rules())
    rules["gptq"] = {"bits": None, "group_size": None, "calibration": None, "dampening": None, "act_order": None,
                     "samples": None}
    monkeypatch.setattr(emit, "stdlib_rules", lambda: rules)
    monkeypatch.setattr(emit, "grammar_has", lambda feature: True)
    program, diags = import_recipe(str(CORPUS / "lc_w4a16_actorder_weight.yaml"))
    assert "\n    gptq(bits = 4, group_size = 128, calibration = recipe_data, act_order = true) on layers(" in program
    assert not [d for d in diags if d.code == "KMR533"]


@pytest.fixture
def model_folder(tmp_path, monkeypatch):
    for module in ("recipe_models.py",):
        shutil.copy(CORPUS / module, tmp_path)
    monkeypatch.setenv("KMR_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def test_clean_import_checks_and_finds_a_composability_bug(model_folder, capsys):
    recipe = model_folder / "recipe.yaml"
    recipe.write_text(textwrap.dedent("""\
        quant_stage:
          run_type: oneshot
          quant_modifiers:
            QuantizationModifier:
              scheme: W8A16
              targets: [Linear]
        prune_stage:
          run_type: oneshot
          pruning_modifiers:
            MagnitudePruningModifier:
              final_sparsity: 0.5
              targets: [Linear]
        """))
    out = model_folder / "recipe.kmr"
    code = main(["import", str(recipe), "-o", str(out), "--model", 'factory("recipe_models:llama")'])
    assert code == 0, capsys.readouterr().err  # every modifier and option carried over
    text = out.read_text()
    assert 'model recipe_model = factory("recipe_models:llama")' in text
    assert "quantize(bits = 8, scheme = weight_only) on layers(Linear)" in text
    assert "prune(amount = 0.5) on layers(Linear)" in text
    capsys.readouterr()
    # the recipe prunes weights it already quantized: `prune` requires float weights
    assert main(["check", str(out)]) == 1
    assert "KMR301" in capsys.readouterr().err


def test_warnings_give_exit_one_and_model_spec_is_checked(model_folder, capsys):
    assert main(["import", str(CORPUS / "lc_fp8_dynamic.yaml")]) == 1
    assert main(["import", str(CORPUS / "lc_fp8_dynamic.yaml"), "--model", "not a call("]) == 2
    assert "KMR502" in capsys.readouterr().err


def test_w8a8_recipe_with_default_smoothquant_mappings_verifies(model_folder, capsys):
    # SmoothQuant without mappings (llm-compressor's defaults), then GPTQ with the W8A8
    # preset: per-token activations after GPTQ's int8 weights; `kmr check` proves every
    # precondition on a Llama (foldable balance layers, `activations = token` in W8A8)
    recipe = model_folder / "recipe.yaml"
    recipe.write_text(textwrap.dedent("""\
        quant_stage:
          quant_modifiers:
            SmoothQuantModifier:
              smoothing_strength: 0.8
            GPTQModifier:
              scheme: W8A8
              targets: [Linear]
              ignore: [lm_head]
        """))
    out = model_folder / "recipe.kmr"
    assert main(["import", str(recipe), "-o", str(out), "--model", 'factory("recipe_models:llama")',
                 "--data", 'factory("recipe_models:calibration")']) == 1     # KMR532: the default mappings
    text = out.read_text()
    assert 'quantize(bits = 8, activations = token) on layers(Linear, exclude = "lm_head")' in text
    capsys.readouterr()
    assert main(["check", str(out)]) == 0, capsys.readouterr().err
