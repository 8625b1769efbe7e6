"""The core package is the bottom of the house: it imports nothing heavy and no stage."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "kmr_dsl" / "core"
# what core may import from kmr_dsl: itself and the shared leaf modules
ALLOWED = ("kmr_dsl.core", "kmr_dsl.diagnostics", "kmr_dsl.facts", "kmr_dsl.units")


def test_core_imports_no_torch_z3_lark_or_sympy():
    code = textwrap.dedent("""
        import sys
        import kmr_dsl.core.program, kmr_dsl.core.walk, kmr_dsl.core.evaluate, kmr_dsl.core.state
        import kmr_dsl.core.step
        print(",".join(sorted(m for m in ("torch", "z3", "lark", "sympy", "numpy") if m in sys.modules)))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"kmr_dsl.core imported {out.stdout.strip()}"


def test_core_imports_no_stage_even_inside_functions():
    for path in sorted(CORE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kmr_dsl"):
                names = [node.module] if node.module != "kmr_dsl" else [f"kmr_dsl.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("kmr_dsl")]
            else:
                continue
            for name in names:
                assert name.startswith(ALLOWED), f"{path.name} imports {name}"


def test_one_definition_of_the_state_vocabulary():
    """The layer kinds, state fields and analytic meters are written out (as a literal)
    only in core/state.py; everything else derives from it."""
    names = {"MATRIX_KINDS", "ANALYTIC_METERS", "COUNT_FIELDS", "LAYER_FIELDS", "MODEL_FIELDS", "ANALYTIC"}
    literals = (ast.Tuple, ast.List, ast.Dict, ast.Set)
    found = []
    for path in sorted((ROOT / "kmr_dsl").rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Assign) and isinstance(node.value, literals):
                found += [(t.id, str(path.relative_to(ROOT))) for t in node.targets
                          if isinstance(t, ast.Name) and t.id in names]
    assert {p for _, p in found} == {"kmr_dsl/core/state.py"}, found
