"""Fixtures of the example tests: the examples' own scripts, run into temporary folders.

The examples' weights are git-ignored, so each test session trains what it needs with
the example's own train script, into a temporary copy of the example folder (the
checkout is left untouched). Torch runs on one thread here: the machines are shared and
small, and the examples' budgets include latency lines that two threads contending
with other processes measure badly (see docs/benchmarks.md).
"""

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
if str(ROOT) not in sys.path:   # run from a checkout without installing
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def one_thread():
    torch = pytest.importorskip("torch")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def kmr_cache(tmp_path, monkeypatch):
    """A private facts cache, so a test does not depend on (or fill) the user's."""
    monkeypatch.setenv("KMR_CACHE_DIR", str(tmp_path / "kmr-cache"))


@pytest.fixture(scope="session")
def digits_cnn_folder(tmp_path_factory, one_thread):
    """A copy of examples/digits_cnn with `cnn.safetensors` trained by its own script."""
    folder = tmp_path_factory.mktemp("digits_cnn")
    for name in ("digits_cnn.kmr", "digits_cnn_model.py", "train_baseline.py"):
        shutil.copy(EXAMPLES / "digits_cnn" / name, folder / name)
    from kmr_dsl.runtime.user_code import import_module_from

    script = import_module_from("train_baseline", folder)
    assert script.main(["--out", str(folder / "cnn.safetensors")]) == 0
    return folder

