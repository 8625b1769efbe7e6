"""Where the grammar and the standard library live.

Contract: in an installed wheel they ship inside the package (`kmr_dsl/grammar`,
`kmr_dsl/stdlib`); in a source checkout they are the top-level `grammar/` and
`stdlib/` folders. Both layouts are searched, installed first.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    for cand in (_PKG / name, _PKG.parent / name):
        if cand.is_dir():
            return cand
    raise FileNotFoundError(f"KMR installation is missing its {name}/ folder")


def grammar_path() -> Path:
    return _find("grammar") / "kmr.lark"


def stdlib_dir() -> Path:
    return _find("stdlib")
