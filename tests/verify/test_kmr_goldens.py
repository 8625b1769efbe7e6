"""tests/data/verify/{ok,err}/*.kmr through the real checker (fake facts) and the verifier.

Each file states its expected diagnostics inline (`# expect: KMR301`, see
tests/check/expect.py); an ok file must verify (exit 0), an err file must fail with
exactly the codes it names, on the lines it names.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kmr_dsl.check import check_file
from kmr_dsl.diagnostics import has_errors, render_all
from kmr_dsl.verify import verify
from tests.check import fakes
from tests.check.expect import compare, expectations

DATA = Path(__file__).resolve().parent.parent / "data" / "verify"
OK = sorted((DATA / "ok").glob("*.kmr"))
ERR = sorted((DATA / "err").glob("*.kmr"))


def _verify(path: Path):
    program, diags = check_file(str(path), facts_provider=fakes.provider)
    assert program is not None and not has_errors(diags), render_all(diags)
    report = verify(program)
    return report, list(diags) + report.diagnostics, program


@pytest.mark.parametrize("path", OK, ids=[p.name for p in OK])
def test_ok(path):
    report, diags, program = _verify(path)
    assert report.exit_code == 0, render_all(diags, program.sources)
    problem = compare(path, diags)
    assert problem is None, problem + "\n\n" + render_all(diags, program.sources)


@pytest.mark.parametrize("path", ERR, ids=[p.name for p in ERR])
def test_err(path):
    assert expectations(path)
    report, diags, program = _verify(path)
    assert report.exit_code == 1
    problem = compare(path, diags)
    assert problem is None, problem + "\n\n" + render_all(diags, program.sources)


def test_hand_built_rules_are_the_stdlib():
    """tests/verify/build.py's STD must stay clause for clause what stdlib/rules.kmr checks to."""
    from kmr_dsl.check import check_source
    from tests.verify.build import STD

    program, diags = check_source('import "std"\n', str(DATA / "std_probe.kmr"))
    assert program is not None, render_all(diags)
    for name, rule in STD.items():
        assert program.rules[name] == rule, name
