"""Faults around `kmr check` and `kmr run`: user code that exits the process, an output
set that is never half old and half new, Ctrl-C, temporary files, deterministic bytes."""

import json
import os
import textwrap

import pytest

from kmr_dsl.cli import main

MODEL = '''
import sys

import torch
import torch.nn as nn

{top}


def make_mlp(hidden=16):
    {body}
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, hidden), nn.ReLU(), nn.Linear(hidden, 3))


def make_data():
    {data}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 4, generator=g)
    return x, (x[:, 0] > 0).long()


def example_input():
    return torch.zeros(1, 4)
'''

PROGRAM = '''import "std"

model net = factory("fault_model:make_mlp")
data train = factory("fault_model:make_data")

knob bits : int in {8, 32} = 8

pipeline shrink(net) {
    quantize(bits = bits) on layers(Linear)
    budget {
        size <= 1 MB
        accuracy(train) >= 0%
    }
}
'''


def program(tmp_path, monkeypatch, top="", body="pass", data="pass"):
    (tmp_path / "fault_model.py").write_text(MODEL.format(top=top, body=body, data=data))
    (tmp_path / "fault.kmr").write_text(PROGRAM)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KMR_CACHE_DIR", str(tmp_path / "cache"))
    return "fault.kmr"


# ---------------------------------------------------------------- sys.exit (item 7)

@pytest.mark.parametrize("status", [0, 3])
@pytest.mark.parametrize("where", ["factory", "import"])
def test_a_factory_calling_sys_exit_is_a_located_error(tmp_path, monkeypatch, capsys, status, where):
    kw = {"body": f"sys.exit({status})"} if where == "factory" else {"top": f"sys.exit({status})"}
    path = program(tmp_path, monkeypatch, **kw)
    for command in (["check", path], ["run", path, "--out", "o"]):
        code = main(command)
        err = capsys.readouterr().err
        assert code in (1, 2), (command, code)      # never 0, never the code's own status
        assert "error[KMR411]" in err and "fault.kmr:3:1" in err, err
        assert "Traceback" not in err
        assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("status", [0, 3])
def test_a_data_loader_calling_sys_exit_fails_the_run(tmp_path, monkeypatch, capsys, status):
    path = program(tmp_path, monkeypatch, data=f"sys.exit({status})")
    code = main(["run", path, "--out", "o"])
    err = capsys.readouterr().err
    assert code == 1
    assert "error[KMR411]" in err and "fault.kmr:4:1" in err, err
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- the output set (items 8, 10)

def _snapshot(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder)) if (folder / name).is_file()}


def _leftovers(folder):
    return [n for n in os.listdir(folder) if ".kmr-" in n or n.startswith("kmr-size-")]


@pytest.mark.parametrize("fault", [OSError("No space left on device"), KeyboardInterrupt()])
def test_a_failed_report_write_keeps_the_old_set_whole(tmp_path, monkeypatch, capsys, fault):
    from kmr_dsl.runtime import session

    path = program(tmp_path, monkeypatch)
    assert main(["run", path, "--set", "bits=8", "--out", "o"]) == 0
    old = _snapshot(tmp_path / "o")
    assert set(old) == {"model.safetensors", "report.json", "report.md"}

    def broken(*args, **kwargs):
        raise fault
    monkeypatch.setattr(session, "render_markdown", broken)   # after the new model is written
    code = main(["run", path, "--set", "bits=32", "--out", "o"])
    err = capsys.readouterr().err
    if isinstance(fault, KeyboardInterrupt):
        assert code == 130 and "error[KMR409]" in err           # documented: Ctrl-C exits 130
    else:
        assert code == 2 and "error[KMR505]" in err             # an I/O error (5xx)
    assert _snapshot(tmp_path / "o") == old                     # not a 32-bit model beside an 8-bit report
    assert _leftovers(tmp_path) == []


def test_ctrl_c_during_the_pipeline_writes_nothing(tmp_path, monkeypatch, capsys):
    from kmr_dsl.runtime.session import PipelineSession

    path = program(tmp_path, monkeypatch)

    def interrupted(self, setting):
        raise KeyboardInterrupt
    monkeypatch.setattr(PipelineSession, "apply", interrupted)
    assert main(["run", path, "--out", "o"]) == 130
    assert "error[KMR409]" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize("out", ["blocked/o", "."])
def test_an_unusable_out_folder_is_refused_before_the_pipeline_runs(tmp_path, monkeypatch, capsys, out):
    from kmr_dsl.runtime.session import PipelineSession

    path = program(tmp_path, monkeypatch)
    (tmp_path / "blocked").write_text("a file where the folder should be")
    ran = []
    monkeypatch.setattr(PipelineSession, "apply", lambda self, setting: ran.append(setting))
    before = _snapshot(tmp_path) if out == "." else None
    assert main(["run", path, "--out", out]) == 2
    assert "error[KMR505]" in capsys.readouterr().err
    assert ran == []
    if before is not None:                                      # `--out .` does not replace the project
        assert {k: v for k, v in _snapshot(tmp_path).items() if k in before} == before


def test_a_stale_staging_folder_of_a_killed_run_is_swept(tmp_path, monkeypatch):
    path = program(tmp_path, monkeypatch)
    dead = 2 ** 22 + 12345                                      # above pid_max: no such process
    stale = tmp_path / f".o.kmr-stage-{dead}-abcd1234"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    live = tmp_path / f".o.kmr-stage-{os.getpid()}-abcd1234"   # a running process's: kept
    live.mkdir()
    assert main(["run", path, "--out", "o"]) == 0
    assert not stale.exists() and live.exists()


# ---------------------------------------------------------------- temporary files (item 11)

def test_the_size_meter_leaves_no_file_a_kill_could_strand(tmp_path, monkeypatch):
    import tempfile

    import safetensors.torch
    import torch.nn as nn

    from kmr_dsl.runtime import meters

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    seen = []
    real_save, real_save_file = safetensors.torch.save, safetensors.torch.save_file

    def watch(real):
        def wrapped(*args, **kwargs):
            seen.append(sorted(os.listdir(scratch)))            # what a SIGKILL now would leave
            return real(*args, **kwargs)
        return wrapped
    monkeypatch.setattr(safetensors.torch, "save", watch(real_save))
    monkeypatch.setattr(safetensors.torch, "save_file", watch(real_save_file))
    assert meters.size(nn.Linear(8, 4)) > 4 * 8 * 4
    assert seen and all(listing == [] for listing in seen), seen
    assert os.listdir(scratch) == []


# ---------------------------------------------------------------- deterministic bytes (item 12)

def test_saving_the_same_model_gives_the_same_bytes(tmp_path):
    import torch.nn as nn

    from kmr_dsl.runtime import artifact

    model = nn.Sequential(nn.Linear(4, 3))
    blobs = set()
    for i in range(16):           # safetensors orders the metadata from a hash map: it varies per save
        path = tmp_path / f"m{i}.safetensors"
        artifact.save(model, path, {"pipeline": "p"})
        blobs.add(path.read_bytes())
    assert len(blobs) == 1


def test_two_identical_runs_write_identical_artifacts(tmp_path, monkeypatch):
    from kmr_dsl.runtime import artifact

    path = program(tmp_path, monkeypatch)
    assert main(["run", path, "--set", "bits=8", "--out", "a"]) == 0
    assert main(["run", path, "--set", "bits=8", "--out", "b"]) == 0
    first, second = (tmp_path / "a" / "model.safetensors").read_bytes(), (tmp_path / "b" / "model.safetensors").read_bytes()
    assert first == second
    # the setting is recorded in report.json, written in the same set as the model; the
    # artifact's `info` leaves it out so that `size` does not depend on how a value prints
    assert artifact.read_recipe(tmp_path / "a" / "model.safetensors")["info"] == {"pipeline": "shrink"}
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["setting"] == {"bits": 8} and report["artifact_bytes"] == len(first)
    assert report["meters"]["size"] == len(first)               # `size` is the file's bytes


def test_an_out_folder_behind_a_symlink_is_replaced_where_it_lives(tmp_path, monkeypatch):
    path = program(tmp_path, monkeypatch)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    assert main(["run", path, "--out", "link"]) == 0
    assert main(["run", path, "--out", "link"]) == 0
    assert (tmp_path / "link").is_symlink() and (tmp_path / "real" / "model.safetensors").is_file()
    assert _leftovers(tmp_path) == []


KILLER = '''
import os, signal, sys
sys.path.insert(0, {root!r})
from kmr_dsl.runtime import session
def killed(*args, **kwargs):          # the new model is in the staging folder: die now
    os.kill(os.getpid(), signal.SIGKILL)
session.render_markdown = killed
from kmr_dsl.cli import main
sys.exit(main(["run", "fault.kmr", "--set", "bits=32", "--out", "o"]))
'''


def test_sigkill_while_writing_keeps_the_old_set_and_the_next_run_sweeps(tmp_path, monkeypatch):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    path = program(tmp_path, monkeypatch)
    assert main(["run", path, "--set", "bits=8", "--out", "o"]) == 0
    old = _snapshot(tmp_path / "o")
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", KILLER.format(root=root)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert _snapshot(tmp_path / "o") == old                    # the old set, whole
    assert len(_leftovers(tmp_path)) == 1                      # the dead run's staging folder ...
    assert main(["run", path, "--set", "bits=32", "--out", "o"]) == 0
    assert _leftovers(tmp_path) == []                          # ... swept by the next run
    assert json.loads((tmp_path / "o" / "report.json").read_text())["setting"] == {"bits": 32}
