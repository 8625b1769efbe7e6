"""The `kmr` shell: exit codes, usage errors without tracebacks, JSON output, and that
`--help`, `--version`, `fmt` and parse-only checks never import torch, sympy or z3."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kmr_dsl.cli import main

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "sympy", "z3")


def _imported_after(argv: list[str]) -> set[str]:
    code = (
        "import sys\n"
        "from kmr_dsl.cli import main\n"
        f"rc = main({argv!r})\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1].replace("'", '"')))


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["fmt", "--check", "stdlib/rules.kmr"],
                                  ["check", "--no-verify", "stdlib/std.kmr"]])
def test_light_commands_import_nothing_heavy(argv):
    assert _imported_after(argv) == set()


def test_version_and_help_exit_zero(capsys):
    assert main(["--version"]) == 0
    assert "kmr" in capsys.readouterr().out
    assert main(["--help"]) == 0


@pytest.mark.parametrize("argv", [[], ["bogus"], ["check"], ["run"], ["check", "--format", "xml", "x.kmr"],
                                  ["run", "x.kmr", "--threads", "0"], ["search", "x.kmr", "--threads", "-1"]])
def test_misuse_is_exit_2_with_a_code_and_no_traceback(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if argv:
        assert "error[KMR502]" in err


def test_missing_file_is_kmr501(capsys, tmp_path):
    assert main(["check", str(tmp_path / "nope.kmr")]) == 2
    assert "error[KMR501]" in capsys.readouterr().err


def test_malformed_program_json_carries_codes(capsys, tmp_path):
    bad = tmp_path / "bad.kmr"
    bad.write_text('import "std"\nknob x : int in [5, 1] = 3\n')
    assert main(["check", "--format", "json", str(bad)]) == 2
    payload = json.loads(capsys.readouterr().out)
    assert payload["exit_code"] == 2
    codes = {d["code"] for f in payload["files"] for d in f["diagnostics"]}
    assert "KMR205" in codes


def test_run_refuses_unknown_knob_in_set(capsys):
    rc = main(["run", str(ROOT / "examples/digits/digits.kmr"), "--set", "nosuch=1", "--out", "/nonexistent-never"])
    err = capsys.readouterr().err
    # malformed command line: KMR503 before anything runs (or the example's weights are missing: KMR216/KMR401)
    assert rc == 2 and ("KMR503" in err or "KMR216" in err or "KMR401" in err)
    assert "Traceback" not in err
