"""`kmr import RECIPE.yaml [-o FILE.kmr] [--model SPEC] [--data SPEC]`.

Contract: writes the program to FILE (or prints it), renders the diagnostics, and
returns 0 when every modifier and option has a KMR equivalent that this installation
supports (notes allowed), 1 when something was reported instead of imported
(warnings: KMR531-533; the program is still written, the gaps as comments), 2 when the
file is not a recipe or cannot be read, or SPEC is not a loader call.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from kmr_dsl.diagnostics import KmrError, Severity, Span, error, render_all


def _spec(text: str | None, flag: str) -> str | None:
    """A loader call as written in a program, checked by the program parser."""
    if text is None:
        return None
    from kmr_dsl.parse import parse
    from kmr_dsl.diagnostics import has_errors

    _, diags = parse(f"model m = {text}\n", f"<{flag}>")
    if has_errors(diags) or "\n" in text:
        raise KmrError(error("KMR502", Span.unknown(f"kmr import {flag}"), f"{flag} is not a loader call: {text}",
                             hint=f"""for example {flag} 'factory("mymodel:make")'"""))
    return text


def import_command(args) -> int:
    from kmr_dsl.importer import import_recipe

    model, data = _spec(args.model, "--model"), _spec(args.data, "--data")
    program, diags = import_recipe(args.recipe, model, data)
    if diags:
        print(render_all(diags), file=sys.stderr)
    if program is None:
        return 2
    if args.output:
        out = Path(args.output)
        tmp = out.with_name(f".{out.name}.import.tmp")
        try:
            tmp.write_text(program, encoding="utf-8")
            os.replace(tmp, out)
        except OSError as exc:
            raise KmrError(error("KMR505", Span.unknown(str(out)), f"cannot write {out}", str(exc))) from exc
        print(f"wrote {out}", file=sys.stderr)
    else:
        print(program, end="")
    return 1 if any(d.severity is not Severity.NOTE for d in diags) else 0
