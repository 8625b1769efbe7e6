"""The 3xx examples of docs/errors.md, checked and verified for real.

Each `### KMR3nn` entry's ```kmr example is checked as `example.kmr` (with the doc's
digits-MLP facts provider) and verified (KMR303's with `rlimit=1`, as its text says);
the code must be reported, and every line of the entry's ```text block — the message
and each note — must be what the verifier prints, so the documentation cannot drift.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kmr_dsl.check import check_file
from kmr_dsl.diagnostics import render_all
from kmr_dsl.verify import verify
from tests.test_errors_doc import doc_provider

DOC = Path(__file__).resolve().parents[2] / "docs" / "errors.md"
ENTRY = re.compile(r"^### (KMR3\d\d) — .*?```kmr\n(.*?)```.*?```text\n(.*?)```", re.M | re.S)


def _entries():
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## 3xx proofs"):text.index("## 4xx runtime")]
    return ENTRY.findall(section)


ENTRIES = _entries()

@pytest.fixture
def doc_folder(tmp_path):
    return tmp_path


def test_every_3xx_code_has_an_example():
    assert {code for code, _, _ in ENTRIES} == {"KMR301", "KMR302", "KMR303", "KMR304", "KMR305", "KMR306", "KMR310", "KMR311",
                                                "KMR312",
                                                "KMR313"}


@pytest.mark.parametrize("code,source,expected", ENTRIES, ids=[e[0] for e in ENTRIES])
def test_example_reports_its_code(code, source, expected, doc_folder, monkeypatch):
    monkeypatch.chdir(doc_folder)
    Path("example.kmr").write_text(source, encoding="utf-8")
    program, diags = check_file("example.kmr", facts_provider=doc_provider)
    assert program is not None, render_all(diags)
    report = verify(program, rlimit=1 if code == "KMR303" else 50_000_000)
    assert code in [d.code for d in report.diagnostics], render_all(report.diagnostics)
    rendered = render_all(report.diagnostics, program.sources).splitlines()
    for line in expected.strip().splitlines():
        assert line in rendered, f"{line!r} not in:\n" + "\n".join(rendered)
