"""`kmr lsp` driven over JSON-RPC as an editor drives it: open, edit, hover, complete,
go to definition, format, and malformed input that must neither crash nor hang it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest


from tests.lsp.client import Editor

MODEL = textwrap.dedent("""
    import torch.nn as nn

    def make():
        return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
""")

PROGRAM = textwrap.dedent("""\
    import "std"

    model m = factory("tinymlp:make")

    knob sparsity : float in [0.0, 0.9] step 0.1 = 0.5
    knob bits : int in {8, 16, 32} = 8

    pipeline small(m) {
        prune(amount = sparsity) on layers(Linear)
        quantize(bits = bits) on layers(Linear)
        budget {
            size <= 60% * baseline.size
        }
    }
""")


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "tinymlp.py").write_text(MODEL)
    path = tmp_path / "prog.kmr"
    path.write_text(PROGRAM)
    monkeypatch.setenv("KMR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return path


@pytest.fixture
def editor(project):
    ed = Editor("--load-models")
    ed.start(project.parent)
    yield ed
    if ed.proc.poll() is None:
        ed.proc.kill()


def _codes(diags):
    return sorted(d["code"] for d in diags)


def _pos(text: str, needle: str, offset: int = 0) -> tuple[int, int]:
    i = text.index(needle) + offset
    return text.count("\n", 0, i), i - text.rfind("\n", 0, i) - 1


def test_session_open_edit_hover_complete_format(editor, project):
    uri = editor.open(project, PROGRAM)
    # the background check loads the model and verifies: no diagnostics for a good program
    assert editor.diagnostics(uri, 1) == []

    # an edit that breaks a name: the quick pass reports it at once with `kmr check`'s code and span
    bad = PROGRAM.replace("amount = sparsity", "amount = sparsty")
    editor.change(uri, bad, 2)
    diags = editor.diagnostics(uri, 2)
    assert _codes(diags) == ["KMR201"]
    line, col = _pos(bad, "sparsty)")
    assert diags[0]["range"]["start"] == {"line": line, "character": col}
    assert diags[0]["range"]["end"] == {"line": line, "character": col + len("sparsty")}

    # an edit the verifier refutes: the budget is out of reach, found in the background
    infeasible = PROGRAM.replace("size <= 60% * baseline.size", "size <= 1% * baseline.size")
    editor.change(uri, infeasible, 3)
    diags = editor.diagnostics(uri, 3, want=lambda ds: any(d["code"].startswith("KMR3") for d in ds))
    assert "KMR302" in _codes(diags) or "KMR312" in _codes(diags)

    editor.change(uri, PROGRAM, 4)
    assert editor.diagnostics(uri, 4) == []  # the quick pass (no model loaded)
    assert editor.diagnostics(uri, 4) == []  # the background pass: loaded and verified

    # hover: a knob's domain and default, a rule's contract, a meter's predicted value
    text = editor.at("textDocument/hover", uri, *_pos(PROGRAM, "sparsity)"))["contents"]["value"]
    assert "float in [0.0, 0.9] step 0.1 = 0.5" in text and "default `0.5`" in text
    text = editor.at("textDocument/hover", uri, *_pos(PROGRAM, "quantize("))["contents"]["value"]
    assert "requires bits <= layer.bits" in text and "effect layer.bits = bits" in text
    text = editor.at("textDocument/hover", uri, *_pos(PROGRAM, "size <="))["contents"]["value"]
    assert "predicted at the default setting of `small`" in text

    # completion: rule arguments and enum members inside a call; layer names inside a string
    editing = PROGRAM.replace("quantize(bits = bits)", "quantize(bits = bits, )")
    editor.change(uri, editing, 5)
    editor.diagnostics(uri, 5)
    labels = {i["label"] for i in editor.at("textDocument/completion", uri,
                                             *_pos(editing, ", )", 2))["items"]}
    assert {"scheme", "weight_only", "dynamic", "prune", "sparsity", "size"} <= labels
    named = editing.replace("layers(Linear)\n    budget", 'layers(Linear, name = "")\n    budget')
    editor.change(uri, named, 6)
    labels = {i["label"] for i in editor.at("textDocument/completion", uri,
                                             *_pos(named, 'name = ""', 8))["items"]}
    assert labels == {"0", "2"}

    # go to definition: into the stdlib
    loc = editor.at("textDocument/definition", uri, *_pos(PROGRAM, "prune("))
    assert loc["uri"].endswith("rules.kmr")
    rules = Path(loc["uri"][len("file://"):]).read_text().split("\n")
    assert rules[loc["range"]["start"]["line"]].lstrip().startswith("rule prune")

    # formatting: the same text `kmr fmt` writes
    messy = PROGRAM.replace("knob bits : int in {8, 16, 32} = 8", "knob   bits:int in {8,16,32}=8")
    editor.change(uri, messy, 7)
    edits = editor.request("textDocument/formatting", {"textDocument": {"uri": uri},
                                                       "options": {"tabSize": 4, "insertSpaces": True}})
    from kmr_dsl.fmt import format_source

    assert edits[0]["newText"] == format_source(messy, str(project))[0]
    assert editor.close() == 0


def test_definition_into_imported_file(editor, project):
    lib = project.parent / "lib.kmr"
    lib.write_text("knob shared : float in [0.0, 0.5] = 0.1\n")
    text = PROGRAM.replace('import "std"', 'import "std"\nimport "lib.kmr"').replace(
        "amount = sparsity", "amount = shared")
    uri = editor.open(project, text)
    loc = editor.at("textDocument/definition", uri, *_pos(text, "shared)"))
    assert loc["uri"] == lib.resolve().as_uri() and loc["range"]["start"] == {"line": 0, "character": 5}
    loc = editor.at("textDocument/definition", uri, *_pos(text, '"lib.kmr"', 2))
    assert loc["uri"] == lib.resolve().as_uri()
    assert editor.close() == 0


MALFORMED = [
    "",
    "pipeline {",
    'model m = factory("',
    "knob k : float in [1.0, 0.0] = 2",
    "\x00\x01 rule ((((",
    "budget { size <= }" * 50,
    'import "missing.kmr"\nimport "prog.kmr"',
]


def test_malformed_documents_never_crash_or_hang(editor, project):
    uri = editor.open(project, "")
    for version, text in enumerate(MALFORMED, start=2):
        editor.change(uri, text, version)
        editor.diagnostics(uri, version, timeout=30)
        for line in range(3):
            for char in (0, 3, 200):
                editor.at("textDocument/hover", uri, line, char)
                editor.at("textDocument/completion", uri, line, char)
                editor.at("textDocument/definition", uri, line, char)
        editor.request("textDocument/formatting", {"textDocument": {"uri": uri},
                                                   "options": {"tabSize": 4, "insertSpaces": True}})
    diags = editor.diagnostics  # the server still answers after all of that
    editor.change(uri, PROGRAM, 99)
    assert diags(uri, 99) == []
    assert editor.proc.poll() is None
    assert editor.close() == 0


def test_without_load_models_uncached_model_is_a_note_not_an_error(project):
    ed = Editor()
    try:
        ed.start(project.parent)
        uri = ed.open(project, PROGRAM)
        diags = ed.diagnostics(uri, 1, want=lambda ds: bool(ds))
        assert [(d["code"], d["severity"]) for d in diags] == [("KMR216", 3)]
        assert not (project.parent / "cache").exists() or not any((project.parent / "cache").iterdir())
        assert ed.close() == 0
    finally:
        if ed.proc.poll() is None:
            ed.proc.kill()


def test_edits_cancel_background_verification(editor, project):
    """Fast typing: a background result is never published after a newer version's
    diagnostics, so the editor never shows a stale verdict."""
    uri = editor.open(project, PROGRAM)
    last = 12
    for version in range(2, last + 1):
        pct = 1 if version % 2 else 60  # alternate refuted / verified budgets
        editor.change(uri, PROGRAM.replace("60%", f"{pct}%"), version)
    seen = []
    while True:
        msg = editor.notes.get(timeout=60)
        if msg.get("method") != "textDocument/publishDiagnostics":
            continue
        seen.append(msg["params"].get("version"))
        if seen.count(last) == 2:  # the final version's quick and background passes
            break
    assert seen == sorted(seen), seen
    assert editor.close() == 0
