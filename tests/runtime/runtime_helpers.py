"""Shared helpers of the runtime tests (a uniquely named module: every test folder's
conftest.py is a top-level `conftest`, so tests must not import from it)."""

from pathlib import Path

from kmr_dsl.facts import LoaderSpec

HERE = Path(__file__).resolve().parent


def spec(fn: str = "make_mlp", **kwargs) -> LoaderSpec:
    """A factory loader spec for one of the toy models in toy_models.py."""
    return LoaderSpec("factory", (f"toy_models:{fn}",), tuple(sorted(kwargs.items())), str(HERE))
