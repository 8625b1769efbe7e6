"""docs/errors.md documents every code of the registry (kmr_dsl.diagnostics.CODES).

Each code has a `### KMRnnn — title` heading with a failing example in a ```kmr block.
For the syntax (1xx) and checker (2xx) codes the example is also run: checking it must
report that very code, so the documentation cannot drift from the checker. Examples are
checked as `example.kmr` in a scratch folder (so an example may import itself), with
`doc_provider` standing in for the real model: `factory("digits_model:make_mlp")` is
the spec's 64-128-64-10 MLP (Linear fc1, fc2, fc3), `factory("tied_lm:make_lm")` a tiny
language model whose `lm_head` is tied to its embedding, `factory("prenorm:make_block")`
a pre-norm block whose LayerNorm `norm` feeds the Linears q and k (then `down`), an untrusted `torch_module` is a
refused pickle (KMR217), an untrusted factory from the standard library is refused
(KMR227), anything else fails to load (KMR216).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from kmr_dsl.check import check_file
from kmr_dsl.diagnostics import CODES, KmrError, error, render_all
from kmr_dsl.facts import LayerFact, ModelFacts
from kmr_dsl.trust import refuse_untrusted

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
HEADING = re.compile(r"^### (KMR\d{3}) — (.+)$", re.M)


def _linear(name: str, i: int, o: int) -> LayerFact:
    return LayerFact(name, "Linear", i, o, (o, i), i * o, o, "float32", 32, 1.0, i * o)


DIGITS = ModelFacts((_linear("fc1", 64, 128), _linear("fc2", 128, 64), _linear("fc3", 64, 10)),
                    64 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10, 64 * 128 + 128 * 64 + 64 * 10, (1, 64))


# a tiny language model whose output projection is tied to its embedding (KMR245)
TIED_LM = ModelFacts((_linear("layers.0", 16, 16),
                      LayerFact("lm_head", "Linear", 16, 64, (64, 16), 1024, 0, "float32", 32, 1.0, 1024,
                                tied=("embed",))), 1024 + 256 + 16, 1024 + 256, (1, 8), "int64")


# a pre-norm block: `norm`'s output is read by q and k only (their fold group, KMR306)
PRENORM = ModelFacts((LayerFact("norm", "LayerNorm", 16, 16, (16,), 16, 16, "float32", 32, 1.0, 0),
                      *(LayerFact(n, "Linear", 16, 16, (16, 16), 256, 16, "float32", 32, 1.0, 256, fold_norm="norm",
                                  fold_group=("k", "q")) for n in ("q", "k")),
                      _linear("down", 16, 4)), 32 + 2 * 272 + 68, 2 * 256 + 64, (1, 16))


def doc_provider(spec, trust, span):
    ref = spec.args[0] if spec.args else None
    if spec.kind == "factory" and ref == "prenorm:make_block":
        return PRENORM
    if spec.kind == "factory" and ref == "digits_model:make_mlp":
        return DIGITS
    if spec.kind == "factory" and ref == "tied_lm:make_lm":
        return TIED_LM
    if spec.kind == "factory" and not trust and str(ref).partition(":")[0].split(".")[0] in sys.stdlib_module_names:
        refuse_untrusted(ref, spec.base_dir, span, "factory")    # what the real loader does (KMR227)
    if spec.kind == "torch_module" and not trust:
        raise KmrError(error("KMR217", span, f"`{ref}` is a pickle that can run code when loaded",
                             "torch.load(weights_only=True) refused it: it holds Python objects, not only tensors"))
    raise AttributeError(f"module 'digits_model' has no attribute '{str(ref).partition(':')[2]}'")


def _sections() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    heads = list(HEADING.finditer(text))
    return {m.group(1): text[m.end():(heads[i + 1].start() if i + 1 < len(heads) else len(text))]
            for i, m in enumerate(heads)}


def _example(section: str) -> str | None:
    m = re.search(r"```kmr\n(.*?)```", section, re.S)
    return m.group(1) if m else None


def test_every_code_has_a_heading_and_an_example():
    sections = _sections()
    missing = [code for code in CODES if code not in sections]
    assert not missing, f"docs/errors.md lacks `### KMRnnn — title` sections for {missing}"
    no_example = [code for code in CODES if _example(sections[code]) is None]
    assert not no_example, f"these sections have no ```kmr example: {no_example}"


def test_stage_sections_exist():
    text = DOC.read_text(encoding="utf-8")
    for head in ("## 1xx syntax", "## 2xx names, types and units", "## 3xx proofs", "## 4xx runtime",
                 "## 5xx CLI and I/O"):
        assert head in text


@pytest.mark.parametrize("code", [c for c in CODES if c[3] in "12"])
def test_checker_examples_report_their_code(code, tmp_path, monkeypatch):
    example = _example(_sections().get(code, ""))
    if example is None:
        pytest.fail(f"{code} is not documented with a ```kmr example")
    (tmp_path / "example.kmr").write_text(example, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    _, diags = check_file("example.kmr", doc_provider)
    assert code in {d.code for d in diags}, render_all(diags, {"example.kmr": example})
