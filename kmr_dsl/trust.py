"""The trust model in one place (docs/security.md): which code KMR may run without asking.

Contract:
- Code in the program's own folder is the user's: `local_module_file(name, folder)` is
  the file of module `name` there (`name.py` or `name/__init__.py`), or None. A folder
  of the Python installation (standard library, site-packages) is never a program
  folder, so `os`, `subprocess` or an installed package are never "local".
- Anything else that runs code (a module outside the folder, an installed package, a
  pickle) needs the user's trust: the loader's `trust = true` in the program they run,
  or --trust. `refuse_untrusted(...)` raises the KMR227 the loaders and the artifact
  reader use. Trust is never read from a data file: an artifact, a model file, a cache.
This module imports no torch (the checker's tests use it too).
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

from kmr_dsl.diagnostics import KmrError, Span, error


def python_folders() -> list[Path]:
    """The Python installation's library folders: never a program's own folder."""
    paths = sysconfig.get_paths()
    out = []
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        folder = paths.get(key)
        if folder:
            try:
                out.append(Path(folder).resolve())
            except OSError:
                pass
    return out


def local_module_file(name: str, base_dir) -> Path | None:
    """The file of module `name` inside the program folder `base_dir`, or None when it is
    not there (then importing it would run code from elsewhere)."""
    parts = name.split(".") if isinstance(name, str) else []
    if not parts or not all(p.isidentifier() for p in parts):
        return None
    try:
        base = Path(base_dir).resolve()
    except (OSError, RuntimeError, TypeError, ValueError):
        return None
    if any(base == lib or lib in base.parents for lib in python_folders()):
        return None
    for cand in (base.joinpath(*parts).with_suffix(".py"), base.joinpath(*parts, "__init__.py")):
        if cand.is_file():
            return cand
    return None


def refuse_untrusted(ref: str, base_dir, span: Span | None, what: str = "module") -> None:
    """KMR227: `ref` would run code from outside the program folder and trust was not given."""
    raise KmrError(error(
        "KMR227", span or Span.unknown(), f"{what} `{ref}` is not in the program's folder: refusing to run it without trust",
        f"program folder: {base_dir}",
        "KMR runs only the code of the program's own folder; a module from anywhere else "
        "(an installed package, the standard library) runs only if you trust it",
        hint="move the module next to the program, or, if you trust it, pass `trust = true` to the loader "
             "or run with --trust"))


__all__ = ["local_module_file", "python_folders", "refuse_untrusted"]
