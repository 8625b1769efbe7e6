"""The TextMate grammar of editors/ agrees with the KMR lexer on real files: every
comment, string, number and keyword token the lexer finds is painted as one, and no
identifier is painted as a comment, string or keyword."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kmr_dsl.parse import parser
from tests.editors.textmate import GRAMMAR, Grammar

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted([*ROOT.glob("examples/**/*.kmr"), *ROOT.glob("stdlib/*.kmr"),
                *ROOT.glob("tests/data/*/ok/*.kmr")])
EXPECT = {"COMMENT": "comment.", "STRING": "string.", "NUMBER": "constant.numeric", "QUANTITY": "constant.numeric"}
WORDS = set(re.findall(r'"([a-z_]+)"', (ROOT / "grammar" / "kmr.lark").read_text()))  # the language's words
PAINTED_KEYWORD = ("keyword.", "support.", "variable.language", "constant.language", "storage.")


def _tokens(text: str):
    for tok in parser().lex(text, dont_ignore=True):
        if tok.type != "WS":
            yield tok


def _lines_scopes(grammar: Grammar, text: str):
    return [grammar.scopes(line) for line in text.split("\n")]


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_grammar_agrees_with_the_lexer(path):
    text = path.read_text()
    assert not _disagreements(text, _lines_scopes(Grammar(), text))


NODE_MODULES = ROOT / "editors" / "vscode" / "node_modules"


@pytest.mark.skipif(not (shutil.which("node") and (NODE_MODULES / "vscode-textmate").is_dir()),
                    reason="the real TextMate engine needs node and `npm install` in editors/vscode")
def test_vscode_textmate_agrees_with_the_lexer():
    """The same check with vscode-textmate and Oniguruma, the engine VS Code runs."""
    script = ROOT / "editors" / "vscode" / "test" / "scopes.js"
    out = subprocess.run(["node", str(script), *map(str, FILES)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    scopes = json.loads(out.stdout)
    wrong = {str(p): _disagreements(p.read_text(), scopes[str(p)]) for p in FILES}
    assert not {k: v for k, v in wrong.items() if v}
    # and the tokenizer the other tests use paints exactly what the real engine paints
    for p in FILES:
        assert _lines_scopes(Grammar(), p.read_text()) == scopes[str(p)], p


def _disagreements(text: str, scopes) -> list[str]:
    wrong = []
    for tok in _tokens(text):
        scope = scopes[tok.line - 1][tok.column - 1] or ""
        if tok.type in EXPECT:
            ok = scope.startswith(EXPECT[tok.type])
        elif tok.type == "NAME":
            # a word the grammar matches in context (`maximize`) may be painted as a keyword
            bad = ("comment", "string", "constant.numeric") + (() if tok.value in WORDS else ("keyword",))
            ok = not scope.startswith(bad)
        elif tok.value.isidentifier():  # a keyword of the language
            ok = scope.startswith(PAINTED_KEYWORD) or scope == "entity.name.function.kmr"
        else:
            continue  # punctuation
        if not ok:
            wrong.append(f"{tok.line}:{tok.column} {tok.type} {tok.value!r} painted {scope!r}")
    return wrong


def test_declared_names_and_units_are_captured():
    g = Grammar()
    line = 'knob bits : int in {4, 8} = 8   size <= 16 KB  # not 16 KB'
    s = g.scopes(line)
    assert s[line.index("bits")] == "entity.name.kmr"
    assert s[line.index("KB")] == "keyword.other.unit.kmr"
    assert s[line.index("# not")] == s[len(line) - 1] == "comment.line.number-sign.kmr"
    s = g.scopes('impl "a#b"  requires model.trainable')
    assert s[8] == "string.quoted.double.kmr" and s[12] == "keyword.control.kmr"
    assert s[21] == "variable.language.kmr"


def test_vscode_extension_folder_is_complete():
    ext = ROOT / "editors" / "vscode"
    pkg = json.loads((ext / "package.json").read_text())
    lang = pkg["contributes"]["languages"][0]
    assert lang["id"] == "kmr" and ".kmr" in lang["extensions"]
    gram = pkg["contributes"]["grammars"][0]
    assert (ext / gram["path"]).resolve() == GRAMMAR and gram["scopeName"] == "source.kmr"
    assert (ext / lang["configuration"]).is_file()
    json.loads((ext / lang["configuration"]).read_text())
    main = ext / pkg["main"]
    assert main.is_file() and "kmr" in main.read_text() and "lsp" in main.read_text()
    if shutil.which("node"):
        out = subprocess.run(["node", "--check", str(main)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
