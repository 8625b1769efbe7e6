"""Fixtures of the runtime tests: toy models built through the real loaders."""

import copy
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE.parents[1]) not in sys.path:   # run from a checkout without installing
    sys.path.insert(0, str(HERE.parents[1]))

torch = pytest.importorskip("torch")

from kmr_dsl.runtime import context, loaders, user_code  # noqa: E402
from kmr_dsl.runtime.data import Dataset  # noqa: E402
from runtime_helpers import spec  # noqa: E402


@pytest.fixture
def mlp_spec():
    return spec()


@pytest.fixture
def mlp(mlp_spec):
    return loaders.load_model(mlp_spec)


@pytest.fixture
def cnn_spec():
    return spec("make_cnn", input_shape=[1, 3, 8, 8])


@pytest.fixture
def cnn(cnn_spec):
    return loaders.load_model(cnn_spec)


@pytest.fixture
def data():
    toy = user_code.import_ref("toy_models:make_data", HERE)
    x, y = toy()
    return Dataset(x, y, "toy")


@pytest.fixture
def image_data():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, 8, 8, generator=gen)
    return Dataset(x, (x.mean(dim=(1, 2, 3)) > 0).long() + 2 * (x[:, 0].mean(dim=(1, 2)) > 0).long(), "images")


@pytest.fixture
def run(mlp):
    """A run context whose baseline is a copy of the toy MLP."""
    with context.use(context.RunContext(seed=0, baseline=copy.deepcopy(mlp))) as ctx:
        yield ctx
