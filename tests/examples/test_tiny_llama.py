"""The structured-pruning example end to end: a small Llama trained by its own script,
`kmr check` proves the program, `kmr run` removes key/value heads and SwiGLU channels
(smaller tensors, the cost model's prediction met exactly), and `kmr export --format hf`
writes a folder transformers loads as a smaller Llama computing what the artifact does."""

import json
import shutil
from pathlib import Path

import pytest
from examples_helpers import run_program

from kmr_dsl.cli import main

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FILES = ("tiny_llama.kmr", "llama_model.py", "train_baseline.py")


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory, one_thread):
    folder = tmp_path_factory.mktemp("tiny_llama")
    for name in FILES:
        shutil.copy(EXAMPLES / "tiny_llama" / name, folder / name)
    from kmr_dsl.runtime.user_code import import_module_from

    script = import_module_from("train_baseline", folder)
    assert script.main(["--out", str(folder / "llama.safetensors")]) == 0
    return folder


def test_tiny_llama_heads_and_swiglu_channels(llama_folder, tmp_path, kmr_cache, capsys):
    program = str(llama_folder / "tiny_llama.kmr")
    assert main(["check", "--format", "json", program]) == 0
    (pipeline,) = json.loads(capsys.readouterr().out)["files"][0]["pipelines"]
    assert pipeline["verdict"] == "proved"

    out = tmp_path / "out"
    code, report = run_program(main, program, out)
    assert code == 0, report["budget"]
    predicted, measured, baseline = report["predicted"], report["meters"], report["baseline"]
    assert predicted["params"] == measured["params"] < 0.6 * baseline["params"]
    assert predicted["macs"] == measured["macs"]
    assert measured["accuracy(text)"] >= 0.6

    from kmr_dsl.runtime import artifact
    model = artifact.load(out / "model.safetensors", base_dir=llama_folder)
    attention = model.model.layers[0].self_attn
    assert attention.k_proj.weight.shape == (16, 64) and attention.q_proj.weight.shape == (32, 64)
    assert model.model.layers[1].mlp.up_proj.weight.shape == (64, 64)

    capsys.readouterr()
    hf = tmp_path / "hf"
    assert main(["export", str(out / "model.safetensors"), "--format", "hf", "-o", str(hf),
                 "--base-dir", str(llama_folder), "--json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["config_changes"] == {"num_key_value_heads": [2, 1], "num_attention_heads": [4, 2],
                                          "intermediate_size": [128, 64]}
    config = json.loads((hf / "config.json").read_text())
    assert (config["num_key_value_heads"], config["num_attention_heads"], config["intermediate_size"]) == (1, 2, 64)

    # what a user does with the folder: transformers alone, offline, on CPU
    loaded = transformers.AutoModelForCausalLM.from_pretrained(str(hf)).eval()
    ids = torch.randint(0, 64, (3, 24), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=1e-4, rtol=1e-4)
    assert sum(p.numel() for p in loaded.parameters()) == measured["params"]
