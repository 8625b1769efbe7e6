"""examples/recipes/: four published compression recipes, each one short KMR program on
a small generated model. Each must verify (`kmr check` exit 0) and run (`kmr run`: its
budget met, its report items measured), and its selection must be the recipe's."""

import json
from pathlib import Path

import pytest
from examples_helpers import run_program

from kmr_dsl.cli import main

pytest.importorskip("torch")
pytest.importorskip("sklearn")

RECIPES = Path(__file__).resolve().parents[2] / "examples" / "recipes"

# recipe -> (the step line whose selection is checked, the layers it must select)
SELECTION = {
    "sparseml_gmp.kmr": ("prune_gradually", ["fc1", "fc2", "fc3"]),
    "nni_config_list.kmr": ("prune", ["conv1", "conv2"]),
    "llmcompressor_w8a8.kmr": ("quantize", [f"layers.{b}.{p}" for b in (0, 1) for p in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")]),
    "intel_fp32_layers.kmr": ("quantize", [f"layers.{b}.{p}" for b in (0, 1) for p in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")][:-1]),
}


def test_every_recipe_is_tested():
    assert sorted(p.name for p in RECIPES.glob("*.kmr")) == sorted(SELECTION)


@pytest.mark.parametrize("name", sorted(SELECTION))
def test_recipe_verifies_and_runs(name, kmr_cache, one_thread, tmp_path, capsys):
    program = str(RECIPES / name)
    assert main(["check", "--format", "json", "--explain", "layers", program]) == 0
    checked = json.loads(capsys.readouterr().out)["files"][0]
    (pipeline,) = checked["pipelines"]
    assert pipeline["verdict"] == "proved"
    rule, layers = SELECTION[name]
    (step,) = [s for s in next(iter(checked["layers"].values())) if s["rule"] == rule]
    assert step["layers"] == layers
    out = tmp_path / "out"
    code, report = run_program(main, program, out)
    assert code == 0, report["budget"]
    assert report["report"] and all(r["value"] == r["value"] for r in report["report"])   # measured, not NaN
    assert (out / "model.safetensors").stat().st_size > 0


def test_gmp_recipe_reaches_its_final_sparsity(kmr_cache, one_thread, tmp_path):
    """88% of the weights gone in every Linear (the biases stay): the masks survived the
    fine-tuning after the pruning schedule."""
    out = tmp_path / "out"
    code, report = run_program(main, str(RECIPES / "sparseml_gmp.kmr"), out)
    assert code == 0
    weights = 64 * 128 + 128 * 64 + 64 * 10
    biases = 128 + 64 + 10
    assert report["meters"]["nonzero"] <= round(weights * 0.12) + biases + 3
