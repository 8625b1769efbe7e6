"""Golden files: tests/data/{parse,check}/{ok,err}/*.kmr with inline `# expect:` codes.

parse/: only the parser runs; check/: the whole checker, with the fake facts provider
of tests/check/fakes.py (chosen per model by the loader call's first argument) unless
the file says `# facts: none`. An ok file must produce no error (and no warning it does
not expect); an err file must produce exactly the codes on exactly the lines it names.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kmr_dsl.check import check_file
from kmr_dsl.diagnostics import has_errors, render_all
from kmr_dsl.parse import parse

from . import fakes
from .expect import compare, expectations, headers

DATA = Path(__file__).resolve().parent.parent / "data"


def _files(stage: str, kind: str) -> list[Path]:
    return sorted((DATA / stage / kind).glob("*.kmr"))


def _ids(paths):
    return [p.name for p in paths]


def _check(path: Path):
    h = headers(path)
    provider = None if h.get("facts") == "none" else fakes.provider
    return check_file(str(path), facts_provider=provider, trust=h.get("trust") == "true")


@pytest.mark.parametrize("path", _files("parse", "ok"), ids=_ids(_files("parse", "ok")))
def test_parse_ok(path):
    _, diags = parse(path.read_text(encoding="utf-8"), str(path))
    assert not diags, render_all(diags)


@pytest.mark.parametrize("path", _files("parse", "err"), ids=_ids(_files("parse", "err")))
def test_parse_err(path):
    assert expectations(path), "an err golden must expect at least one code"
    _, diags = parse(path.read_text(encoding="utf-8"), str(path))
    problem = compare(path, diags)
    assert problem is None, problem + "\n\n" + render_all(diags)


@pytest.mark.parametrize("path", _files("check", "ok"), ids=_ids(_files("check", "ok")))
def test_check_ok(path):
    program, diags = _check(path)
    assert not has_errors(diags), render_all(diags)
    problem = compare(path, diags)
    assert problem is None, problem + "\n\n" + render_all(diags)
    assert program is not None


@pytest.mark.parametrize("path", _files("check", "err"), ids=_ids(_files("check", "err")))
def test_check_err(path):
    program, diags = _check(path)
    problem = compare(path, diags)
    assert problem is None, problem + "\n\n" + render_all(diags)
    assert has_errors(diags) and program is None


def test_every_diagnostic_has_code_span_and_hint():
    for path in _files("check", "err"):
        _, diags = _check(path)
        for d in diags:
            assert d.code.startswith("KMR") and d.span.file and d.message
            assert d.hint, f"{path.name}: {d.code} has no hint"
