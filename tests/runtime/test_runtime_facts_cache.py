"""The model-facts cache is keyed on everything the loader runs: the factory's module,
the modules of the program folder it imports, and the installed packages it uses."""

import json
import sys

import pytest

from kmr_dsl import facts as kfacts
from kmr_dsl.app import facts_provider
from kmr_dsl.diagnostics import Span
from kmr_dsl.facts import LoaderSpec

ARCH = "HIDDEN = {hidden}\n"
MODEL = '''
import torch
import torch.nn as nn

from arch import HIDDEN
from parts.blocks import head


def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, HIDDEN), nn.ReLU(), head(HIDDEN))


def example_input():
    return torch.zeros(1, 16)
'''
BLOCKS = "import torch.nn as nn\n\n\ndef head(width):\n    return nn.Linear(width, {out})\n"


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("KMR_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "__init__.py").write_text("")
    (tmp_path / "model_cached.py").write_text(MODEL)
    yield tmp_path
    for name in ("arch", "model_cached", "parts", "parts.blocks"):
        sys.modules.pop(name, None)


def facts_of(folder):
    for name in ("arch", "model_cached", "parts", "parts.blocks"):   # a fresh process each time
        sys.modules.pop(name, None)
    return facts_provider(LoaderSpec("factory", ("model_cached:make",), (), str(folder)), False, Span.unknown())


def test_editing_an_imported_module_of_the_program_folder_invalidates_the_cache(folder):
    (folder / "arch.py").write_text(ARCH.format(hidden=128))
    (folder / "parts" / "blocks.py").write_text(BLOCKS.format(out=3))
    assert facts_of(folder).total_params == 16 * 128 + 128 + 128 * 3 + 3
    assert facts_of(folder).total_params == 16 * 128 + 128 + 128 * 3 + 3      # a hit, still right
    (folder / "arch.py").write_text(ARCH.format(hidden=512))
    assert facts_of(folder).total_params == 16 * 512 + 512 + 512 * 3 + 3
    (folder / "parts" / "blocks.py").write_text(BLOCKS.format(out=5))       # a package module too
    assert facts_of(folder).total_params == 16 * 512 + 512 + 512 * 5 + 5


def test_an_upgraded_package_invalidates_the_cache(folder, monkeypatch):
    (folder / "arch.py").write_text(ARCH.format(hidden=8))
    (folder / "parts" / "blocks.py").write_text(BLOCKS.format(out=3))
    spec = LoaderSpec("factory", ("model_cached:make",), (), str(folder))
    facts = facts_of(folder)
    assert kfacts.load_cached(spec) == facts
    deps = dict(facts.dependencies)
    assert "dist:torch" in deps and any(k.startswith("file:") and k.endswith("arch.py") for k in deps)
    real = kfacts._dist_version
    monkeypatch.setattr(kfacts, "_dist_version", lambda name: "0.0-other" if name == "torch" else real(name))
    assert kfacts.load_cached(spec) is None                                  # torch "upgraded": a miss
