"""The check stage imports no torch, z3 or sympy (STYLE.md: imports flow one way)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_check_and_parse_import_nothing_heavy():
    code = textwrap.dedent("""
        import sys
        import kmr_dsl.parse, kmr_dsl.check, kmr_dsl.units
        from kmr_dsl.check import check_file
        program, diags = check_file(sys.argv[1])
        assert program is not None, diags
        heavy = sorted(m for m in ("torch", "z3", "sympy") if m in sys.modules)
        print(",".join(heavy))
    """)
    spec = ROOT / "tests" / "data" / "check" / "ok" / "spec_example.kmr"
    out = subprocess.run([sys.executable, "-c", code, str(spec)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"the checker imported {out.stdout.strip()}"
