"""The decoder-LM example end to end: GPT-2's Conv1D projections quantized per layer
(a knob family), lm_head tied to the embedding (one table, counted and stored once),
check's size prediction against run's measurement."""

import json
import shutil
from pathlib import Path

import pytest
from examples_helpers import run_program

from kmr_dsl.cli import main

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_tiny_lm_per_layer_quantization(tmp_path, kmr_cache, one_thread, capsys):
    folder = tmp_path / "tiny_lm"
    folder.mkdir()
    for name in ("tiny_lm.kmr", "lm_model.py"):
        shutil.copy(EXAMPLES / "tiny_lm" / name, folder / name)
    program = str(folder / "tiny_lm.kmr")
    assert main(["check", "--format", "json", program]) == 0
    (pipeline,) = json.loads(capsys.readouterr().out)["files"][0]["pipelines"]
    assert pipeline["verdict"] == "proved"
    layers = {name for r in pipeline["results"] for name in (r.get("layers") or [])}
    assert "transformer.h.0.attn.c_attn" in layers and "lm_head" in layers   # Conv1D is a Linear

    out = tmp_path / "out"
    code, report = run_program(main, program, out, "--set", "bits[transformer.h.0.mlp.c_fc]=4",
                               "--set", "bits[transformer.h.1.attn.c_proj]=16")
    assert code == 0, report["budget"]
    predicted, measured = report["predicted"], report["meters"]
    assert predicted["params"] == measured["params"] == report["baseline"]["params"]
    assert abs(predicted["size"] - measured["size"]) <= max(200, 0.02 * measured["size"])

    from safetensors import safe_open

    from kmr_dsl.runtime import artifact, meters, tied
    with safe_open(str(out / "model.safetensors"), framework="pt") as handle:
        keys = list(handle.keys())
    assert not any(k.startswith("transformer.wte.") for k in keys)       # the tied table is stored once
    model = artifact.load(out / "model.safetensors", base_dir=folder)
    assert tied.tied_names(model) == {"lm_head": ("transformer.wte",)}
    assert model.transformer.h[0].mlp.c_fc.bits == 4
    # the parameters torch sees, deduplicated, plus the integer weights held as buffers
    assert meters.params(model) == measured["params"]
