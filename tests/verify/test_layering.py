"""Layering: the verifier imports z3 and sympy, never torch; nothing else imports z3."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_verify_does_not_import_torch():
    mods = _modules_after("import kmr_dsl.verify; from kmr_dsl.verify import verify, predict, explain")
    assert "z3" in mods and "sympy" in mods
    assert "torch" not in mods


def test_only_verify_imports_z3():
    offenders = []
    for path in (ROOT / "kmr_dsl").rglob("*.py"):
        if "verify" in path.relative_to(ROOT / "kmr_dsl").parts:
            continue
        text = path.read_text(encoding="utf-8")
        if "import z3" in text or "from z3" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders
