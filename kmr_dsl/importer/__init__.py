"""`kmr import`: llm-compressor and SparseML recipes as KMR programs.

Module map: recipe.py (YAML with every value's line and column; stages and modifiers)
-> mapping.py (one table entry per modifier: its KMR steps, and a located diagnostic
for every option with no equivalent) -> emit.py (the program text, checked against the
installed standard library and grammar) -> command.py. Torch-free; needs PyYAML (the
`import` extra).
"""

from __future__ import annotations

from pathlib import Path

from kmr_dsl.diagnostics import Diagnostic, Span, error


def import_recipe(path: str, model: str | None = None, data: str | None = None,
                  name: str | None = None) -> tuple[str | None, list[Diagnostic]]:
    """(KMR program text or None, diagnostics sorted by position)."""
    from kmr_dsl.importer.emit import emit
    from kmr_dsl.importer.mapping import map_recipe
    from kmr_dsl.importer.recipe import read_recipe

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [error("KMR501", Span.unknown(path), f"cannot read {path}", f"{type(exc).__name__}: {exc}")]
    recipe, diags = read_recipe(text, path)
    if recipe is None:
        return None, diags
    staged, more = map_recipe(recipe)
    program, emitted = emit(recipe, staged, model, data, name or Path(path).stem)
    all_diags = diags + more + emitted
    all_diags.sort(key=lambda d: (d.span.line, d.span.col, d.code))
    return program, all_diags
