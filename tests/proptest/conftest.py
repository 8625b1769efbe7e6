"""Fixtures of the property-test tests: the tiny programs of data/, a private facts cache."""

import os
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:   # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from .helpers import DATA, USER_KMR, USER_RULES  # noqa: E402


@pytest.fixture(autouse=True, scope="package")
def _kmr_cache(tmp_path_factory):
    """Facts and Hypothesis storage go to a temporary folder, not the user's cache."""
    old = os.environ.get("KMR_CACHE_DIR")
    os.environ["KMR_CACHE_DIR"] = str(tmp_path_factory.mktemp("kmr-cache"))
    yield
    if old is None:
        os.environ.pop("KMR_CACHE_DIR", None)
    else:
        os.environ["KMR_CACHE_DIR"] = old


@pytest.fixture
def programs(tmp_path) -> Path:
    """A copy of data/ (the .kmr files and their model module) in a fresh folder."""
    dest = tmp_path / "programs"
    shutil.copytree(DATA, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


@pytest.fixture
def user_rules(tmp_path) -> Path:
    """A program declaring its own rules, with their impls in a module next to it."""
    folder = tmp_path / "user"
    folder.mkdir()
    (folder / "user_rules.py").write_text(USER_RULES)
    path = folder / "user.kmr"
    path.write_text(USER_KMR)
    return path
