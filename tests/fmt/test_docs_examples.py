"""The KMR snippets in README.md and docs/language.md are real KMR: each parses, and the
formatter round-trips it (so the reference never shows syntax the parser rejects)."""

from __future__ import annotations

import re

import pytest

from kmr_dsl.fmt import format_source
from kmr_dsl.parse import parse

from fuzz.programs import ROOT

DOCS = [ROOT / "README.md", ROOT / "docs" / "language.md"]


def kmr_blocks():
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for i, m in enumerate(re.finditer(r"```kmr\n(.*?)```", text, re.S)):
            yield pytest.param(m.group(1), id=f"{doc.name}#{i}")


BLOCKS = list(kmr_blocks())


def test_the_docs_have_examples():
    assert len(BLOCKS) >= 10


@pytest.mark.parametrize("source", BLOCKS)
def test_doc_example_parses_and_formats(source):
    program, diags = parse(source, "doc.kmr")
    assert diags == [], diags
    out, diags = format_source(source, "doc.kmr")
    assert diags == [] and parse(out, "doc.kmr")[0] == program
