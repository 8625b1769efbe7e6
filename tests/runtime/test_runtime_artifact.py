"""The artifact: one safetensors file, rebuilt without pickle, outputs reproduced
exactly, written atomically."""

import copy
import json
import os

import pytest
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

from runtime_helpers import HERE, spec
from kmr_dsl.diagnostics import KmrError
from kmr_dsl.facts import LoaderSpec
from kmr_dsl.rules import finetune, lora, lowrank, prune, quantize
from kmr_dsl.runtime import artifact, layers as kl, loaders, state
from kmr_dsl.runtime import modules as km


def mlp_steps(model, data, steps):
    sel = lambda kinds=("Linear",): kl.select_layers(model, kinds)  # noqa: E731
    for step in steps:
        if step == "prune":
            prune.apply(model, sel(), amount=0.6)
        elif step == "global":
            prune.apply(model, sel(), amount=0.5, method="global")
        elif step == "channel":
            prune.apply(model, [s for s in sel() if s[0] != "4"], amount=0.5, method="channel")
        elif step in ("q16", "q8", "q4", "q2", "q8w"):
            quantize.apply(model, sel(), bits=int(step[1:].rstrip("w")),
                           scheme="weight_only" if step.endswith("w") else "dynamic")
        elif step == "lowrank":
            lowrank.apply(model, sel(), ratio=0.25)
        elif step == "lowrank-dense":
            lowrank.apply(model, sel(), ratio=0.9)
        elif step in ("lora", "lora-merged"):
            lora.apply(model, sel(), data=data, rank=2, epochs=1, lr=0.01, merge=step == "lora-merged")
    return model


CASES = [[], ["prune"], ["global", "q8"], ["q16"], ["q4"], ["prune", "q2"], ["q8w"], ["channel", "q8"],
         ["lowrank"], ["lowrank", "q4"], ["lowrank-dense"], ["lora"], ["lora", "q8"], ["prune", "lora-merged"],
         ["channel", "lora", "q16"]]


@pytest.mark.parametrize("steps", CASES, ids=lambda s: "-".join(s) or "plain")
def test_roundtrip_reproduces_outputs(mlp, mlp_spec, data, run, tmp_path, steps):
    model = mlp_steps(mlp, data, steps)
    path = tmp_path / "out" / "model.safetensors"
    size = artifact.save(model, path, {"base": mlp_spec, "pipeline": "p", "knobs": {"a": 1}})
    assert size == path.stat().st_size and os.listdir(path.parent) == ["model.safetensors"]
    loaded = artifact.load(path, base_dir=HERE)
    x = data.inputs
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert state.measure_state(loaded) == state.measure_state(model)
    assert [type(m) for m in loaded.modules()] == [type(m) for m in model.modules()]
    assert artifact.save(loaded, tmp_path / "out" / "again.safetensors", {"base": mlp_spec, "pipeline": "p",
                                                                   "knobs": {"a": 1}}) == size
    assert artifact.read_recipe(path)["info"] == {"pipeline": "p", "knobs": {"a": 1}}


@pytest.mark.parametrize("steps", [[], ["prune"], ["channel"], ["q8"], ["q4"], ["q16"]])
def test_cnn_roundtrip(cnn, cnn_spec, tmp_path, steps):
    sel = lambda: kl.select_layers(cnn, ("Conv2d", "Linear"))  # noqa: E731
    for step in steps:
        if step == "prune":
            prune.apply(cnn, sel(), amount=0.7)
        elif step == "channel":
            prune.apply(cnn, [s for s in sel() if s[0] != "8"], amount=0.5, method="channel")
        else:
            quantize.apply(cnn, sel(), bits=int(step[1:]))
    path = tmp_path / "cnn.safetensors"
    artifact.save(cnn, path, {"base": cnn_spec})
    loaded = artifact.load(path, base_dir=HERE)
    x = torch.randn(3, 3, 8, 8)
    assert torch.equal(loaded(x), cnn(x))
    assert torch.equal(loaded[1].running_var, cnn[1].running_var)


@pytest.mark.parametrize("bits", [32, 16, 8, 4])
def test_embedding_model_roundtrip(tmp_path, bits):
    s = spec("make_tagger", input_shape=[1, 5])
    model = loaders.load_model(s)
    quantize.apply(model, kl.select_layers(model, ("Embedding", "Linear")), bits=bits)
    path = tmp_path / "t.safetensors"
    artifact.save(model, path, {"base": s})
    loaded = artifact.load(path, base_dir=HERE)
    ids = torch.randint(0, 50, (4, 5))
    assert torch.equal(loaded(ids), model(ids))
    assert torch.equal(loaded.scale, model.scale)


def test_file_is_plain_safetensors_with_recipe(mlp, mlp_spec, tmp_path):
    quantize.apply(mlp, kl.select_layers(mlp), bits=4)
    path = tmp_path / "m.safetensors"
    artifact.save(mlp, path, {"base": mlp_spec})
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        meta = f.metadata()
    assert {"0.weight.q", "0.weight.scale", "0.bias"} <= keys
    recipe = json.loads(meta["kmr_recipe"])
    assert recipe["layers"]["0"] == {"type": "QuantLinear", "bits": 4, "shape": [32, 16], "bias": True}
    # the loader call without the program's folder: the bytes do not depend on (nor reveal) where it lives
    assert recipe["base"] == {"kind": "factory", "args": list(mlp_spec.args), "kwargs": [list(p) for p in mlp_spec.kwargs]}


def test_the_file_is_the_same_whichever_folder_the_program_is_in(mlp, mlp_spec, tmp_path):
    paths = []
    for folder in ("/p", "/a/much/longer/folder/of/the/same/program"):
        paths.append(tmp_path / f"{len(paths)}.safetensors")
        artifact.save(mlp, paths[-1], {"base": LoaderSpec(mlp_spec.kind, mlp_spec.args, mlp_spec.kwargs, folder)})
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_masks_survive_reload_and_training(mlp, mlp_spec, data, run, tmp_path):
    prune.apply(mlp, kl.select_layers(mlp), amount=0.8)
    path = tmp_path / "m.safetensors"
    artifact.save(mlp, path, {"base": mlp_spec})
    loaded = artifact.load(path, base_dir=HERE)
    zeros = loaded[0].weight == 0
    finetune.apply(loaded, [], data=data, epochs=2, lr=0.05)
    assert torch.all(loaded[0].weight[zeros] == 0)


def test_unmerged_lora_reload_keeps_frozen_and_fp32_adapters(mlp, mlp_spec, data, run, tmp_path):
    lora.apply(mlp, kl.select_layers(mlp), data=data, rank=3, epochs=1, merge=False)
    quantize.apply(mlp, kl.select_layers(mlp), bits=16)
    path = tmp_path / "m.safetensors"
    artifact.save(mlp, path, {"base": mlp_spec})
    loaded = artifact.load(path, base_dir=HERE)
    assert isinstance(loaded[0], km.LoRALinear) and loaded[0].lora_A.dtype == torch.float32
    assert loaded[0].base.weight.dtype == torch.bfloat16
    assert state.measure_state(loaded)["layers"]["0"]["frozen"] is True


def test_moved_program_folder_still_loads(tmp_path):
    import shutil
    program = tmp_path / "program"
    program.mkdir()
    shutil.copy(spec().base_dir + "/toy_models.py", program / "toy_models.py")
    base = LoaderSpec("factory", ("toy_models:make_mlp",), (), str(program))
    model = loaders.load_model(base)
    quantize.apply(model, kl.select_layers(model), bits=4)
    artifact.save(model, program / "out" / "model.safetensors", {"base": base})
    moved = tmp_path / "moved"
    program.rename(moved)
    with pytest.raises(KmrError) as e:             # the file names the factory: no folder given, no run
        artifact.load(moved / "out" / "model.safetensors")
    assert e.value.diagnostic.code == "KMR227"
    loaded = artifact.load(moved / "out" / "model.safetensors", trust=True)   # the factory's module found above it
    assert torch.equal(artifact.load(moved / "out" / "model.safetensors", base_dir=moved)(torch.ones(1, 16)),
                       model(torch.ones(1, 16)))
    x = torch.randn(2, 16)
    assert torch.equal(loaded(x), model(x))


def test_trusted_load_finds_the_factory_where_kmr_run_writes(tmp_path):
    """`kmr run` writes out/<pipeline>/model.safetensors in the folder it runs in: the
    program's module is two folders up, and the file records no folder to find it by."""
    import shutil
    program = tmp_path / "program"
    program.mkdir()
    shutil.copy(spec().base_dir + "/toy_models.py", program / "toy_models.py")
    base = LoaderSpec("factory", ("toy_models:make_mlp",), (), str(program))
    model = loaders.load_model(base)
    path = program / "out" / "compress" / "model.safetensors"
    artifact.save(model, path, {"base": base})
    assert str(tmp_path) not in path.read_bytes()[:8192].decode("latin-1")
    x = torch.randn(2, 16)
    assert torch.equal(artifact.load(path, trust=True)(x), model(x))


def test_load_with_explicit_base(tmp_path):
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    prune.apply(model, [("0", model[0])], amount=0.5, method="channel")
    quantize.apply(model, kl.select_layers(model), bits=8)
    path = tmp_path / "m.safetensors"
    artifact.save(model, path)
    with pytest.raises(KmrError) as e:
        artifact.load(path)
    assert e.value.diagnostic.code == "KMR402"
    fresh = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    loaded = artifact.load(path, base=fresh)
    x = torch.randn(3, 4)
    assert torch.equal(loaded(x), model(x))


def test_torch_module_base_needs_trust(tmp_path):
    model = nn.Sequential(nn.Linear(4, 3))
    torch.save(model, str(tmp_path / "whole.pt"))
    base = LoaderSpec("torch_module", ("whole.pt",), (), str(tmp_path))
    quantize.apply(model, kl.select_layers(model), bits=8)
    artifact.save(model, tmp_path / "out" / "m.safetensors", {"base": base})
    with pytest.raises(KmrError) as e:
        artifact.load(tmp_path / "out" / "m.safetensors")
    assert e.value.diagnostic.code == "KMR217"
    loaded = artifact.load(tmp_path / "out" / "m.safetensors", trust=True)
    x = torch.randn(2, 4)
    assert torch.equal(loaded(x), model(x))


def test_not_an_artifact(tmp_path):
    with pytest.raises(KmrError) as e:
        artifact.load(tmp_path / "absent.safetensors")
    assert e.value.diagnostic.code == "KMR401"
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(KmrError) as e:
        artifact.load(tmp_path / "plain.safetensors")
    assert e.value.diagnostic.code == "KMR402"


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, RuntimeError])
def test_interrupted_save_leaves_nothing(mlp, mlp_spec, tmp_path, monkeypatch, interrupt):
    import safetensors.torch

    def partial_then_fail(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"\x00" * 100)            # half a file...
        raise interrupt("stopped mid-write")      # ...then the process is interrupted
    target = tmp_path / "model.safetensors"
    monkeypatch.setattr(safetensors.torch, "save_file", partial_then_fail)
    with pytest.raises(interrupt):
        artifact.save(mlp, target, {"base": mlp_spec})
    assert os.listdir(tmp_path) == []
    # an older artifact at the same path is left untouched
    monkeypatch.undo()
    artifact.save(mlp, target, {"base": mlp_spec})
    old = target.read_bytes()
    monkeypatch.setattr(safetensors.torch, "save_file", partial_then_fail)
    with pytest.raises(interrupt):
        artifact.save(copy.deepcopy(mlp), target, {"base": mlp_spec})
    assert target.read_bytes() == old and os.listdir(tmp_path) == ["model.safetensors"]


def test_unwritable_folder_is_a_diagnostic(mlp, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(KmrError) as e:
        artifact.save(mlp, blocker / "sub" / "m.safetensors")
    assert e.value.diagnostic.code == "KMR505"


def _as_format_1(path, out):
    """The same file with its recipe marked format 1 (before the midrise 4/2-bit grid)."""
    with safe_open(str(path), framework="pt") as handle:
        meta = dict(handle.metadata())
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    recipe = json.loads(meta[artifact.RECIPE_KEY])
    recipe["format"] = 1
    meta[artifact.RECIPE_KEY] = json.dumps(recipe, separators=(",", ":"), sort_keys=True)
    save_file(tensors, str(out), metadata=meta)
    return out


@pytest.mark.parametrize("bits,readable", [(8, True), (4, False), (2, False)])
def test_format_1_files_load_unless_they_hold_old_low_bit_codes(tmp_path, bits, readable):
    model = loaders.load_model(spec())
    quantize.apply(model, kl.select_layers(model, ("Linear",)), bits=bits, scheme="weight_only")
    path = tmp_path / "m.safetensors"
    artifact.save(model, path, {"base": spec(), "pipeline": "p", "knobs": {}})
    old = _as_format_1(path, tmp_path / "old.safetensors")
    if readable:
        x = torch.randn(3, 16)
        assert torch.equal(artifact.load(old, base_dir=HERE)(x), model(x))
    else:
        with pytest.raises(KmrError) as e:
            artifact.load(old, base_dir=HERE)
        assert e.value.diagnostic.code == "KMR402" and "kmr run" in e.value.diagnostic.hint
