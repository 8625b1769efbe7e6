"""The checker never raises: random token-level mutations of every golden file go
through `check_source` and must come back as diagnostics, each with a registered code,
a span in a file, and never KMR500 (an internal error is a bug)."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmr_dsl.check import check_source
from kmr_dsl.diagnostics import CODES

from . import fakes

DATA = Path(__file__).resolve().parent.parent / "data"
GOLDENS = sorted(p for stage in ("parse", "check") for kind in ("ok", "err")
                 for p in (DATA / stage / kind).glob("*.kmr"))
TOKEN = re.compile(r'"[^"\n]*"?|#[^\n]*|\d+\.?\d*(?:[eE][-+]?\d+)?|[A-Za-z_]\w*|<=|>=|==|!=|\s+|.', re.S)


def _tokens(path: Path) -> list[str]:
    return TOKEN.findall(path.read_text(encoding="utf-8"))


@st.composite
def mutated(draw):
    path = draw(st.sampled_from(GOLDENS))
    toks = _tokens(path)
    for _ in range(draw(st.integers(1, 4))):
        if not toks:
            break
        i = draw(st.integers(0, len(toks) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "replace"]))
        if op == "delete":
            del toks[i]
        elif op == "duplicate":
            toks.insert(i, toks[i])
        elif op == "swap" and i + 1 < len(toks):
            toks[i], toks[i + 1] = toks[i + 1], toks[i]
        elif op == "replace":
            toks[i] = draw(st.sampled_from(toks + ["(", ")", "{", "}", "[", "]", "-", "0", "1e9", "KB", "baseline",
                                                   "layer", "layers", "for", "all", "on", "=", ",", '"']))
    return path, "".join(toks)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_checker_never_raises(case):
    path, text = case
    program, diags = check_source(text, str(path), fakes.provider)
    for d in diags:
        assert d.code in CODES and d.code != "KMR500", (d.code, d.message, d.notes)
        assert d.span.file and d.span.line >= 0 and d.message
    if program is not None:
        assert all(d.severity.value != "error" for d in diags)


def test_goldens_are_collected():
    assert len(GOLDENS) > 30
