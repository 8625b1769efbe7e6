"""Import every recipe of tests/data/recipes, check and verify what comes out.

Usage: python scripts/import_corpus.py [--json]
Each recipe is imported with `--model` naming a small model of the family it targets
(tests/data/recipes/recipe_models.py) and checked with `kmr check` (the facts of the
model are loaded: torch). Prints one row per recipe and the totals that
docs/import.md reports.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kmr_dsl.diagnostics import Severity  # noqa: E402
from kmr_dsl.importer import import_recipe  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "recipes"
FAMILY = {"sml_bert": 'factory("recipe_models:bert_qa")',
          "sml_resnet50_beans": 'factory("recipe_resnet:resnet")',
          "sml_torchvision": 'factory("recipe_resnet:resnet")'}
DATA = 'factory("recipe_models:calibration")'


def model_for(name: str) -> str | None:
    for prefix, spec in FAMILY.items():
        if name.startswith(prefix):
            return spec
    if name.startswith("sml_"):
        return None  # SparseML's own ResNet / MobileNet naming: no small stand-in here
    return 'factory("recipe_models:llama")'


def measure(path: Path, work: Path) -> dict:
    from kmr_dsl.app import EXIT_OK, load_checked

    model = model_for(path.stem)
    program, diags = import_recipe(str(path), model, DATA)
    row = {"recipe": path.name, "imported": program is not None,
           "warnings": sum(d.severity is Severity.WARNING for d in diags),
           "errors": sum(d.severity is Severity.ERROR for d in diags),
           "notes": sum(d.severity is Severity.NOTE for d in diags),
           "codes": sorted({d.code for d in diags if d.severity is not Severity.NOTE}),
           "gaps": sum(d.code in ("KMR531", "KMR532") for d in diags),      # the recipe asks for more than KMR has
           "needs": sum(d.code == "KMR533" for d in diags)}                 # this installation lacks a 0.2 feature
    if program is None:
        return row
    lines = program.splitlines()
    row["steps"] = sum(1 for line in lines if line.startswith("    ") and not line.lstrip().startswith("#"))
    row["commented"] = sum(1 for line in lines if line.lstrip().startswith("# needs"))
    if model is None:
        row["verdict"] = "no model"
        return row
    kmr = work / f"{path.stem}.kmr"
    kmr.write_text(program)
    checked, cdiags, _ = load_checked(str(kmr))
    if checked is None:
        row["verdict"] = "check: " + ",".join(sorted({d.code for d in cdiags if d.severity is Severity.ERROR}))
        return row
    from kmr_dsl.verify import verify

    codes = [verify(checked, name).exit_code for name in checked.pipelines]
    row["verdict"] = "verified" if all(c == EXIT_OK for c in codes) else f"exit {max(codes)}"
    return row


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="kmr-import-"))
    for module in ("recipe_models.py", "recipe_resnet.py"):
        shutil.copy(CORPUS / module, work)
    rows = [measure(p, work) for p in sorted(CORPUS.iterdir()) if p.suffix in (".yaml", ".md") and p.name != "SOURCES.md"]
    shutil.rmtree(work, ignore_errors=True)
    if "--json" in sys.argv:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'recipe':<48} {'clean':>5} {'gaps':>4} {'needs':>5} {'steps':>5} {'commented':>9}  verdict")
    for r in rows:
        clean = "yes" if r["imported"] and not r["warnings"] and not r["errors"] else "no"
        print(f"{r['recipe']:<48} {clean:>5} {r['gaps']:>4} {r['needs']:>5} {r.get('steps', 0):>5} "
              f"{r.get('commented', 0):>9}  {r.get('verdict', 'not imported')}")
    n = len(rows)
    print(f"\n{n} recipes: {sum(r['imported'] for r in rows)} imported, "
          f"{sum(r['imported'] and not r['warnings'] and not r['errors'] for r in rows)} cleanly, "
          f"{sum(r['imported'] and (r['warnings'] or r['errors']) > 0 for r in rows)} with diagnostics "
          f"({sum(r['imported'] and not r['gaps'] and not r['errors'] for r in rows)} with no gap in the recipe "
          f"itself, only KMR533); "
          f"{sum(r.get('verdict') == 'verified' for r in rows)} verified "
          f"({sum(r.get('verdict') not in (None, 'no model') for r in rows)} checked with a model); "
          f"steps active {sum(r.get('steps', 0) for r in rows)}, commented {sum(r.get('commented', 0) for r in rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
