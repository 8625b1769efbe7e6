"""The trust model (docs/security.md): no code named by an artifact, a model file or a
module outside the program's folder runs without the user's explicit `trust`; trust is
never read from a file. Every probe would write a marker file if the code ran."""

import json
import os
import shutil
import sys

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from runtime_helpers import HERE
from kmr_dsl.cli import main
from kmr_dsl.diagnostics import KmrError
from kmr_dsl.facts import LoaderSpec
from kmr_dsl.runtime import artifact, layers as kl, loaders
from kmr_dsl.rules import quantize


def hostile_artifact(path, base, layers=None):
    """A safetensors file whose recipe is whatever an attacker writes."""
    recipe = {"format": artifact.FORMAT_VERSION, "base": base, "layers": layers or {}, "info": {}}
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "pt", artifact.RECIPE_KEY: json.dumps(recipe)})
    return path


def marker_command(marker):
    return f"{sys.executable} -c \"open(r'{marker}', 'w').write('ran')\""


@pytest.mark.parametrize("where", ["recorded", "stdlib", "argument"])
@pytest.mark.parametrize("trust_flag", [False, True])
def test_an_artifact_naming_os_system_never_runs_it(tmp_path, where, trust_flag):
    marker = tmp_path / "marker"
    stdlib = os.path.dirname(os.__file__)        # holds os.py: a "local" module there
    base = {"kind": "factory", "args": ["os:system"], "kwargs": [["command", marker_command(marker)]],
            "base_dir": stdlib if where == "stdlib" else str(tmp_path)}
    if trust_flag:                               # a trust flag in the file is not trust
        base["kwargs"].append(["trust", True])
    path = hostile_artifact(tmp_path / "evil.safetensors", base)
    with pytest.raises(KmrError) as e:
        artifact.load(path, base_dir=stdlib if where == "argument" else None)
    assert e.value.diagnostic.code in ("KMR227", "KMR402")
    assert e.value.diagnostic.hint
    assert not marker.exists()


@pytest.mark.parametrize("base", [
    {"kind": "factory", "args": ["toy_models:make_mlp"], "kwargs": 5},
    {"kind": "factory", "args": ["toy_models:make_mlp"], "kwargs": [["seed"]]},
    {"kind": "factory", "args": ["toy_models:make_mlp"], "kwargs": [[3, 4]]},
    {"kind": "factory", "args": "toy_models:make_mlp", "kwargs": []},
    {"kind": "factory", "args": [["not", "a", "string"]], "kwargs": []},
    {"kind": ["factory"], "args": [], "kwargs": []},
    {"kind": "exec", "args": ["print(1)"], "kwargs": []},
    "factory",
    [1, 2],
])
def test_a_malformed_recipe_is_kmr402_not_a_type_error(tmp_path, base):
    path = hostile_artifact(tmp_path / "odd.safetensors", base)
    with pytest.raises(KmrError) as e:
        artifact.load(path, base_dir=HERE)
    assert e.value.diagnostic.code == "KMR402"


@pytest.mark.parametrize("layers", [[1, 2], {"0": "Linear"}, {"0": {"type": "os.system"}}, {"0": {"type": "Linear"}}])
def test_malformed_layer_configs_are_kmr402(tmp_path, layers):
    path = hostile_artifact(tmp_path / "odd.safetensors", None, layers)
    with pytest.raises(KmrError) as e:
        artifact.load(path, base=nn.Sequential(nn.Linear(2, 2)))
    assert e.value.diagnostic.code == "KMR402"


class Payload:
    """Unpickling this runs a command (the classic pickle attack)."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_replaced_pickle_beside_a_trusted_artifact_does_not_unpickle(tmp_path):
    model = nn.Sequential(nn.Linear(4, 3))
    torch.save(model, str(tmp_path / "whole.pt"))
    base = LoaderSpec("torch_module", ("whole.pt",), (("trust", True),), str(tmp_path))
    quantize.apply(model, kl.select_layers(model), bits=8)
    out = tmp_path / "out" / "m.safetensors"
    artifact.save(model, out, {"base": base})       # made from a trusted pickle: its recipe says trust = true
    assert artifact.read_recipe(out)["base"]["kwargs"] == [["trust", True]]
    marker = tmp_path / "marker"
    torch.save(Payload(marker_command(marker)), str(tmp_path / "whole.pt"))
    with pytest.raises(KmrError) as e:
        artifact.load(out, base_dir=tmp_path)
    assert e.value.diagnostic.code == "KMR217"
    assert not marker.exists()


def test_a_factory_in_the_program_folder_rebuilds_when_the_caller_names_the_folder(tmp_path, mlp_spec):
    program = tmp_path / "program"
    program.mkdir()
    shutil.copy(HERE / "toy_models.py", program / "toy_models.py")
    spec = LoaderSpec("factory", ("toy_models:make_mlp",), (), str(program))
    model = loaders.load_model(spec)
    quantize.apply(model, kl.select_layers(model), bits=8)
    path = program / "out" / "m.safetensors"
    artifact.save(model, path, {"base": spec})
    with pytest.raises(KmrError) as e:               # no folder named, no trust: nothing runs
        artifact.load(path)
    assert e.value.diagnostic.code == "KMR227"
    x = torch.randn(2, 16)
    assert torch.equal(artifact.load(path, base_dir=program)(x), model(x))
    assert torch.equal(artifact.load(path, trust=True)(x), model(x))


def test_a_factory_outside_the_program_folder_needs_trust(tmp_path):
    elsewhere = tmp_path / "site"
    elsewhere.mkdir()
    marker = tmp_path / "marker"
    (elsewhere / "helper_pkg_trust.py").write_text(
        "import torch.nn as nn\n"
        f"def make():\n    open(r'{marker}', 'w').write('ran')\n    return nn.Linear(2, 2)\n")
    sys.path.insert(0, str(elsewhere))
    try:
        spec = LoaderSpec("factory", ("helper_pkg_trust:make",), (), str(tmp_path / "program"))
        with pytest.raises(KmrError) as e:
            loaders.load_model(spec)
        assert e.value.diagnostic.code == "KMR227" and not marker.exists()
        data_spec = LoaderSpec("factory", ("helper_pkg_trust:make",), (), str(tmp_path / "program"))
        with pytest.raises(KmrError) as e:
            loaders.load_data(data_spec)
        assert e.value.diagnostic.code == "KMR227" and not marker.exists()
        assert isinstance(loaders.load_model(spec, trust=True), nn.Linear)    # the user's decision
        assert marker.exists()
    finally:
        sys.path.remove(str(elsewhere))
        sys.modules.pop("helper_pkg_trust", None)


PROGRAM = '''import "std"
model m = factory("os:system", command = "{command}")
knob bits : int in {{8, 32}} = 8
pipeline p(m) {{
    quantize(bits = bits) on layers(Linear)
    budget {{ size <= 1 MB }}
}}
'''


def test_check_does_not_run_an_installed_function(tmp_path, capsys, monkeypatch):
    marker = tmp_path / "marker"
    command = f"touch {marker}"
    (tmp_path / "evil.kmr").write_text(PROGRAM.format(command=command))
    monkeypatch.setenv("KMR_CACHE_DIR", str(tmp_path / "cache"))
    code = main(["check", str(tmp_path / "evil.kmr")])
    err = capsys.readouterr().err
    assert code != 0 and not marker.exists()
    assert "error[KMR227]" in err and "evil.kmr:2:" in err and "--trust" in err
    assert "Traceback" not in err


RULE_PROGRAM = '''import "std"
model net = factory("local_model:make")

rule touch()
    accepts Linear
    effect layer.bits = layer.bits
    impl "helper_impl_trust:touch"

pipeline p(net) {
    touch() on layers(Linear)
    budget { size <= 1 MB }
}
'''
LOCAL_MODEL = '''import torch
import torch.nn as nn


def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3))


def example_input():
    return torch.zeros(1, 4)
'''


@pytest.mark.parametrize("trusted", [False, True])
def test_a_rule_impl_outside_the_program_folder_needs_trust(tmp_path, monkeypatch, capsys, trusted):
    elsewhere, program = tmp_path / "site", tmp_path / "program"
    elsewhere.mkdir()
    program.mkdir()
    marker = tmp_path / "marker"
    (elsewhere / "helper_impl_trust.py").write_text(
        f"def touch(model, layers):\n    open(r'{marker}', 'w').write('ran')\n    return model\n")
    (program / "local_model.py").write_text(LOCAL_MODEL)
    (program / "p.kmr").write_text(RULE_PROGRAM)
    monkeypatch.chdir(program)
    monkeypatch.setenv("KMR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(elsewhere))
    try:
        code = main(["run", "p.kmr", "--out", "o"] + (["--trust"] if trusted else []))
    finally:
        sys.modules.pop("helper_impl_trust", None)
    err = capsys.readouterr().err
    if trusted:
        assert code == 0 and marker.exists()
    else:
        assert code != 0 and not marker.exists()
        assert "error[KMR227]" in err and "p.kmr:10:" in err


def test_the_size_guard_accepts_a_real_depthwise_model(tmp_path):
    model = nn.Sequential(nn.Conv2d(256, 256, 3, groups=256, padding=1), nn.ReLU(), nn.Conv2d(256, 8, 1))
    path = tmp_path / "dw.safetensors"
    artifact.save(model, path)
    fresh = nn.Sequential(nn.Conv2d(256, 256, 3, groups=256, padding=1), nn.ReLU(), nn.Conv2d(256, 8, 1))
    x = torch.randn(1, 256, 4, 4)
    assert torch.equal(artifact.load(path, base=fresh)(x), model(x))


def test_a_forged_huge_layer_is_refused_before_allocating(tmp_path):
    path = hostile_artifact(tmp_path / "big.safetensors", None, {"0": {"type": "Linear", "in": 10 ** 6, "out": 10 ** 6,
                                                                     "bias": True}})
    with pytest.raises(KmrError) as e:
        artifact.load(path, base=nn.Sequential(nn.Linear(2, 2)))
    assert e.value.diagnostic.code == "KMR402" and "more than the file can hold" in e.value.diagnostic.message
