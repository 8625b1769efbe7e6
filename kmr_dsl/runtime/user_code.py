"""Importing the code a program names (model and data factories, rules' and meters'
impls) under the trust model of docs/security.md; no torch.

Contract:
- `import_ref("pkg.mod:fn", base_dir, span, trust=...)` is the shared importer; with
  `trust=False` it refuses a module outside `base_dir` (KMR227). `import_impl(ref,
  base_dir, span, trust)` imports a rule's or meter's impl under the same rule, KMR's
  own `kmr_dsl.*` impls always allowed.
- `import_module_from(name, base_dir)` imports a module from `base_dir` if it lives there,
  else from sys.path (a module of the same name imported from elsewhere is evicted
  first); `findable(name)` says, running no code, whether it could come from outside.
- User code that calls `sys.exit` (at import or when called) is reported as KMR411 at
  the loader call instead of ending the process (`exited` builds that error).
The loaders (kmr_dsl.runtime.loaders) import factories through these.
Failures raise `KmrError`: KMR401 missing module (KMR407 for an impl), KMR402 a module
that fails to import or a bad reference, KMR227 code outside the program's folder
refused, KMR411 user code exited.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

from kmr_dsl.diagnostics import KmrError, Span, error
from kmr_dsl.trust import local_module_file, refuse_untrusted


def span_or_unknown(span):
    return span or Span.unknown()


def _is_under(module, base: Path) -> bool:
    file = getattr(module, "__file__", None)
    if not file:
        return False
    try:
        Path(file).resolve().relative_to(base)
        return True
    except ValueError:
        return False


def exited(exc: SystemExit, span: Span | None, what: str) -> KmrError:
    """KMR411: user code called sys.exit; report it where it was called from."""
    return KmrError(error("KMR411", span_or_unknown(span), f"{what} called sys.exit({exc.code!r})",
                          "KMR stops here: a loader or rule that ends the process would "
                          "otherwise look like a silent success",
                          hint="remove the sys.exit call (raise an exception to report a problem)"))


def import_module_from(name: str, base_dir: str | os.PathLike, span: Span | None = None,
                       missing: str = "KMR401"):
    """Import `name` from `base_dir` if it lives there, else from sys.path."""
    base = Path(base_dir).resolve()
    top = name.split(".")[0]
    rel = Path(*name.split("."))
    local = (base / rel).with_suffix(".py").is_file() or (base / rel / "__init__.py").is_file() \
        or (base / top).is_dir() or (base / f"{top}.py").is_file()
    try:
        if not local:
            return importlib.import_module(name)
        existing = sys.modules.get(top)
        if existing is not None and not _is_under(existing, base):
            for key in [k for k in sys.modules if k == top or k.startswith(top + ".")]:
                del sys.modules[key]
        sys.path.insert(0, str(base))
        try:
            importlib.invalidate_caches()
            return importlib.import_module(name)
        finally:
            sys.path.remove(str(base))
    except ModuleNotFoundError as exc:
        raise KmrError(error(missing, span_or_unknown(span), f"cannot import module `{name}`", str(exc),
                             hint=f"put {rel}.py next to the program or install the package")) from exc
    except SystemExit as exc:
        raise exited(exc, span, f"importing `{name}`") from exc
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
        raise KmrError(error("KMR402", span_or_unknown(span), f"importing `{name}` failed",
                             f"{type(exc).__name__}: {exc}", hint="fix the error in the module")) from exc


def findable(name: str) -> bool:
    """Could `name` be imported from outside the program folder? (finding runs no code)"""
    try:
        return importlib.util.find_spec(name.split(".")[0]) is not None
    except (ImportError, ValueError):
        return False


def import_ref(ref: str, base_dir=".", span: Span | None = None, missing: str = "KMR401", bad: str = "KMR402",
               trust: bool = True, what: str = "module"):
    """`"pkg.mod:attr"` -> the attribute (a callable). With `trust=False` the module must be
    a file of `base_dir` (KMR227 before anything is imported otherwise)."""
    if not isinstance(ref, str) or ":" not in ref:
        raise KmrError(error(bad, span_or_unknown(span), f"`{ref}` is not a reference of the form \"pkg.module:function\"",
                             hint='write "module:function", e.g. "digits_model:make_mlp"'))
    mod_name, _, attr = ref.partition(":")
    local = None if trust else local_module_file(mod_name, base_dir)
    if not trust and local is None:
        if findable(mod_name):
            refuse_untrusted(ref, base_dir, span, what)
        raise KmrError(error(missing, span_or_unknown(span), f"cannot import module `{mod_name}`",
                             f"no {Path(*mod_name.split('.'))}.py in the program folder {base_dir}",
                             hint=f"put {mod_name.split('.')[-1]}.py next to the program"))
    obj = import_module_from(mod_name, base_dir, span, missing)
    if local is not None and not _is_under(obj, local.parent):
        # a name the import system resolves elsewhere (a built-in module, a cached one)
        refuse_untrusted(ref, base_dir, span, what)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise KmrError(error(bad, span_or_unknown(span), f"module `{mod_name}` has no `{attr}`",
                                 hint=f"define `{attr}` in {mod_name} or fix the name"))
        obj = getattr(obj, part)
    if not callable(obj):
        raise KmrError(error(bad, span_or_unknown(span), f"`{ref}` is not callable", hint="reference a function"))
    return obj


def import_impl(ref: str, base_dir=".", span: Span | None = None, trust: bool = False):
    """A rule's or meter's `impl "module:function"`. KMR's own code (`kmr_dsl.*`, the
    standard library's impls) always runs; any other module must be a file of
    `base_dir` (the declaring file's folder) unless trusted (KMR227), like a factory."""
    module = ref.partition(":")[0] if isinstance(ref, str) else ""
    own = module == "kmr_dsl" or module.startswith("kmr_dsl.")
    return import_ref(ref, base_dir, span, missing="KMR407", bad="KMR407", trust=trust or own,
                      what="implementation")


__all__ = ["exited", "findable", "import_impl", "import_module_from", "import_ref", "span_or_unknown"]
