"""Fuzz the front end and the CLI: no input makes KMR raise or print a traceback.

Inputs: programs generated from the grammar (grammar/kmr_gen.lark), deeply nested
expressions around and far past the parser's nesting limit with unicode noise
(`deep_unicode_programs`, also checked with model facts), and token and byte
mutations (delete, duplicate, swap, insert; non-ASCII, NUL, BOM, stray control
characters) of every .kmr file in the checkout: stdlib, examples and golden tests.
Properties: `parse` never raises; every diagnostic has a registered KMR1xx/KMR2xx code
and a span inside the text; `kmr_dsl.fmt.format_source` never raises and, when the
text parses, formats it into the same program; `kmr check` in-process returns 0-3,
prints no traceback and no internal error, and returns 2 for a malformed program.

About 2,200 cases, deterministic (`derandomize=True`). The 10,000-program run, with
the verifier, is benchmarks/bench_fuzz.py (figures in docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shutil
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmr_dsl.check import check_source
from kmr_dsl.diagnostics import CODES, has_errors, render
from kmr_dsl.fmt import format_source, same_program
from kmr_dsl.parse import parse

from check.fakes import provider as fake_provider
from fuzz.programs import ROOT, deep_unicode_programs, kmr_files, programs

FILES = kmr_files(include_errors=True)
SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
MUTATION_CASES = 1800   # token + byte mutations in total, shared out over the files
PER_FILE = max(4, MUTATION_CASES // (2 * max(1, len(FILES))))

# ---------------------------------------------------------------- mutations

_TOKEN = re.compile(r'\s+|[A-Za-z_]\w*|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|"(?:[^"\\\n]|\\.)*"?|#[^\n]*|.', re.S)
POOL = [
    "{", "}", "(", ")", "[", "]", ",", "=", ":", ".", "-", "+", "*", "/", "<=", "==", "!=", "\n", " ", "#",
    '"', "\\", "import", "model", "data", "knob", "meter", "rule", "pipeline", "property", "budget", "for",
    "in", "on", "step", "if", "then", "else", "not", "and", "or", "check", "forall", "layers", "all",
    "baseline", "layer", "accepts", "requires", "effect", "impl", "objective", "maximize", "search",
    "16 KB", "25%", "2 ms", "1e-3", "1e999", "-1", "0", "3.", "é", "λ", "\x00", "\ufeff", "\u2028", "\r",
    "\t", "\x0b", "\x0c", "💥", '"std"', 'name = "x*"', "layer.bits", "size <= 1 KB", "x[l]",
]

token_ops = st.lists(st.tuples(st.sampled_from(["delete", "duplicate", "swap", "insert"]),
                               st.integers(0, 1 << 20), st.integers(0, 1 << 20), st.sampled_from(POOL)),
                     min_size=1, max_size=5)
byte_ops = st.lists(st.tuples(st.sampled_from(["delete", "insert", "flip"]),
                              st.integers(0, 1 << 20), st.binary(min_size=1, max_size=4)),
                    min_size=1, max_size=5)


def mutate_tokens(text: str, ops) -> str:
    tokens = _TOKEN.findall(text)
    for op, i, j, new in ops:
        if not tokens:
            tokens = [new]
            continue
        i, j = i % len(tokens), j % len(tokens)
        if op == "delete":
            del tokens[i]
        elif op == "duplicate":
            tokens.insert(i, tokens[i])
        elif op == "swap":
            tokens[i], tokens[j] = tokens[j], tokens[i]
        else:
            tokens.insert(i, new)
    return "".join(tokens)


def mutate_bytes(data: bytes, ops) -> bytes:
    buf = bytearray(data)
    for op, i, chunk in ops:
        i = i % (len(buf) + 1)
        if op == "delete":
            del buf[i:i + len(chunk)]
        elif op == "insert":
            buf[i:i] = chunk
        elif i < len(buf):
            buf[i] ^= chunk[0] or 0x80
    return bytes(buf)


def test_mutations_change_the_text():
    assert mutate_tokens("knob a : bool", [("delete", 0, 0, "")]) == " a : bool"
    assert mutate_tokens("knob a : bool", [("swap", 0, 2, "")]) == "a knob : bool"
    assert mutate_tokens("a b", [("insert", 1, 0, "{")]) == "a{ b"
    assert mutate_bytes(b"abc", [("flip", 1, b"\x01")]) == b"acc"
    assert mutate_bytes(b"abc", [("insert", 3, b"\x00\xff")]) == b"abc\x00\xff"


# ---------------------------------------------------------------- the property

def check_front_end(text: str, file: str = "fuzz.kmr") -> list:
    """The property above; returns the parse diagnostics."""
    program, diags = parse(text, file)                       # must not raise
    lines = text.count("\n") + 1
    for d in diags:
        assert re.fullmatch(r"KMR[12]\d\d", d.code) and d.code in CODES, d
        assert d.span.line >= 1 and d.span.col >= 1, d
        assert d.span.line <= lines, (d, lines)
        assert d.message
        render(d, {file: text})                              # rendering must not raise either
    out, fdiags = format_source(text, file)                 # must not raise
    if has_errors(diags):
        assert out is None and fdiags == diags
        return diags
    assert out is not None, fdiags                           # a parsed program always formats
    again, again_diags = parse(out, file)
    assert not again_diags and same_program(again, program)
    assert format_source(out, file) == (out, [])
    return diags


def check_all_stages(text: str, *, verify_too: bool = False, file: str = "fuzz.kmr") -> str:
    """The front-end property, then the checker (with model facts) and optionally the
    verifier: no internal error anywhere (KMR500, or the verifier's "internal error"),
    and a text with syntax errors is never a checked program. Returns what happened:
    "syntax", "nesting" (KMR109), "checker" (other errors), "checked" or "verified"."""
    parse_diags = check_front_end(text, file)
    program, diags = check_source(text, file, fake_provider)
    codes = {d.code for d in diags}
    assert "KMR500" not in codes, [d for d in diags if d.code == "KMR500"]
    if has_errors(parse_diags):
        assert program is None and has_errors(diags)
        return "nesting" if "KMR109" in {d.code for d in parse_diags} else "syntax"
    if program is None:
        return "nesting" if "KMR109" in codes else "checker"
    if not verify_too:
        return "checked"
    from kmr_dsl.verify import verify

    report = verify(program)
    internal = [d for d in report.diagnostics if "internal error" in d.message + " ".join(d.notes)]
    assert not internal, internal
    return "verified"


@settings(max_examples=200, **SETTINGS)
@given(deep_unicode_programs())
def test_deep_and_unicode_programs(source):
    """Nesting on both sides of the parser's limit and far past it, in every context
    an expression can take, with unicode noise: never an internal error. (The 10,000-
    program run is benchmarks/bench_fuzz.py.)"""
    check_all_stages(source)


@settings(max_examples=200, **SETTINGS)
@given(programs(), st.lists(token_ops.map(lambda ops: ops[0]), max_size=2))
def test_generated_programs(source, ops):
    check_front_end(source)
    if ops:
        check_front_end(mutate_tokens(source, ops))


def _file_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_there_are_files_to_mutate():
    assert len(FILES) >= 3 and all(p.suffix == ".kmr" for p in FILES)


@pytest.mark.parametrize("path", FILES, ids=_file_id)
def test_token_mutations(path):
    text = path.read_text(encoding="utf-8")

    @settings(max_examples=PER_FILE, **SETTINGS)
    @given(token_ops)
    def run(ops):
        check_front_end(mutate_tokens(text, ops), str(path))

    check_front_end(text, str(path))
    run()


@pytest.mark.parametrize("path", FILES, ids=_file_id)
def test_byte_mutations(path):
    data = path.read_bytes()

    @settings(max_examples=PER_FILE, **SETTINGS)
    @given(byte_ops)
    def run(ops):
        check_front_end(mutate_bytes(data, ops).decode("utf-8", errors="replace"), str(path))

    run()


# ---------------------------------------------------------------- the whole CLI, in-process

CLI_PRESENT = importlib.util.find_spec("kmr_dsl.cli") is not None
needs_cli = pytest.mark.skipif(not CLI_PRESENT, reason="kmr_dsl/cli.py has not landed yet")
EXAMPLE = ROOT / "examples" / "digits"


def run_check(path: Path) -> tuple[int, str]:
    from kmr_dsl.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["check", str(path)])                   # must not raise
    return code, out.getvalue() + err.getvalue()


def assert_cli_verdict(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    code, printed = run_check(path)
    assert code in (0, 1, 2, 3), (code, printed)
    assert "Traceback" not in printed, printed
    assert "KMR500" not in printed, printed                  # internal error: a bug
    try:
        malformed = has_errors(parse(data.decode("utf-8"), str(path))[1])
    except UnicodeDecodeError:
        malformed = True
    if malformed:
        assert code == 2, (code, printed)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A copy of the digits example (so mutants can load its model) and an isolated
    facts cache."""
    root = tmp_path_factory.mktemp("cli-fuzz")
    if EXAMPLE.is_dir():
        shutil.copytree(EXAMPLE, root / "digits", ignore=shutil.ignore_patterns("out", "__pycache__"))
    else:
        (root / "digits").mkdir()
    with mock.patch.dict(os.environ, {"KMR_CACHE_DIR": str(root / "cache"), "NO_COLOR": "1"}):
        yield root


@needs_cli
def test_cli_check_on_every_file_unchanged(workspace):
    for i, path in enumerate(FILES):
        assert_cli_verdict(workspace / f"seed{i}.kmr", path.read_bytes())


@needs_cli
@settings(max_examples=120, **SETTINGS)
@given(st.sampled_from(FILES), st.one_of(token_ops.map(lambda o: ("tokens", o)), byte_ops.map(lambda o: ("bytes", o))))
def test_cli_check_on_mutants(workspace, path, plan):
    kind, ops = plan
    data = path.read_bytes()
    data = mutate_bytes(data, ops) if kind == "bytes" else mutate_tokens(data.decode("utf-8"), ops).encode("utf-8")
    assert_cli_verdict(workspace / "mutant.kmr", data)


@needs_cli
@pytest.mark.skipif(not (EXAMPLE / "digits.kmr").is_file(), reason="examples/digits has not landed yet")
@settings(max_examples=40, **SETTINGS)
@given(token_ops)
def test_cli_check_on_mutants_of_the_main_example(workspace, ops):
    """Mutants next to the example's model file, so that some reach verification."""
    text = (EXAMPLE / "digits.kmr").read_text(encoding="utf-8")
    assert_cli_verdict(workspace / "digits" / "mutant.kmr", mutate_tokens(text, ops).encode("utf-8"))
