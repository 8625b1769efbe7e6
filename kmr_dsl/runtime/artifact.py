"""Save a compressed model as one safetensors file, and load it back without pickle.

Contract (docs/artifact.md is the full specification):
- `save(model, path, recipe=None) -> int` writes ONE standard safetensors file and
  returns its size in bytes. Its `__metadata__` has `format = "pt"` and `kmr_recipe`,
  a compact JSON object {"format": 1, "base": LOADER, "layers": {NAME: CONFIG},
  "info": {...}}: LOADER is the loader call that builds the original architecture
  (`recipe["base"]`, a LoaderSpec or its dict; its folder is stored as an absolute
  path, so the file's bytes do not depend on where it is written), CONFIG describes every logical layer as it is now
  (`codec.describe`), and `info` is the rest of the caller's `recipe` (pipeline, knob
  setting...). The tensors follow the byte layout of `kmr_dsl.artifact_layout`.
  The write is atomic: a temporary file in the same folder, fsync, `os.replace`; if
  anything (an error, Ctrl-C) interrupts it, the temporary file is removed and no file,
  partial or old-overwritten, appears at `path`.
- `load(path, trust=False, base=None, base_dir=None) -> nn.Module` rebuilds the
  architecture from the recipe's loader (its folder: `base_dir`, else the recorded one,
  else the artifact's folder or its parent) or from `base` (a fresh instance of the
  original architecture),
  replaces every logical layer by the one its config describes, and fills every tensor
  from the file; the result computes exactly the outputs of the saved model. Only a
  `torch_module` base needs `trust`, and then only to rebuild the architecture.
Failures raise KmrError: KMR402 (not a KMR artifact, inconsistent file), KMR401
(missing file), KMR505 (folder not writable).
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import suppress
from pathlib import Path

import torch
import torch.nn as nn

from kmr_dsl.diagnostics import KmrError, Span, error
from kmr_dsl.facts import LoaderSpec
from kmr_dsl.runtime import codec, layers as kl, state

RECIPE_KEY = "kmr_recipe"
# 2: 4- and 2-bit codes are on the zero-preserving midrise grid (runtime.quant). A
# format-1 file is still read when it holds no 4- or 2-bit layer (nothing else changed).
FORMAT_VERSION = 2


def _base_dict(base) -> dict | None:
    if base is None:
        return None
    if isinstance(base, LoaderSpec):
        base = {"kind": base.kind, "args": list(base.args), "kwargs": [list(p) for p in base.kwargs],
                "base_dir": base.base_dir}
    base = dict(base)
    # absolute, so the header (and so `size`) does not depend on where the file is
    # written; `load` falls back to the artifact's folders when the program moved
    base["base_dir"] = os.path.abspath(base.get("base_dir", "."))
    return base


def build_recipe(model: nn.Module, recipe: dict | None) -> dict:
    recipe = dict(recipe or {})
    layers = {}
    for name, layer in kl.logical_layers(model):
        cfg = codec.describe(layer)
        if state.layer_frozen(name, layer):
            cfg["frozen"] = True
        layers[name] = cfg
    return {"format": FORMAT_VERSION, "base": _base_dict(recipe.pop("base", None)),
            "layers": layers, "info": recipe}


def _under(key: str, prefixes: set[str]) -> bool:
    parts = key.split(".")
    return any(".".join(parts[:i]) in prefixes for i in range(1, len(parts)))


def collect_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    names = set()
    for name, layer in kl.logical_layers(model):
        names.add(name)
        tensors.update(codec.encode_layer(name, layer))
    for key, value in model.state_dict().items():
        if isinstance(value, torch.Tensor) and not _under(key, names):
            # clone: safetensors refuses tensors that share storage (tied weights)
            tensors[key] = value.detach().contiguous().clone()
    return tensors


def save(model: nn.Module, path, recipe: dict | None = None, span: Span | None = None) -> int:
    from safetensors.torch import save_file

    span = span or Span.unknown()
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KmrError(error("KMR505", span, f"cannot create `{directory}`", str(exc))) from exc
    text = json.dumps(build_recipe(model, recipe), separators=(",", ":"), sort_keys=True, default=str)
    tensors = collect_tensors(model)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        os.close(fd)
    except OSError as exc:
        raise KmrError(error("KMR505", span, f"cannot write into `{directory}`", str(exc))) from exc
    try:
        save_file(tensors, tmp, metadata={"format": "pt", RECIPE_KEY: text})
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        # whatever stopped us (an error, Ctrl-C), leave nothing partial behind
        with suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise KmrError(error("KMR505", span, f"cannot write `{path}`", str(exc))) from exc
        raise
    return path.stat().st_size


def read_recipe(path) -> dict:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise KmrError(error("KMR401", Span.unknown(str(path)), f"artifact `{path}` not found"))
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        recipe = json.loads(meta[RECIPE_KEY])
    except Exception as exc:  # noqa: BLE001 - unreadable, or a safetensors file that is not ours
        raise KmrError(error("KMR402", Span.unknown(str(path)), f"`{path.name}` is not a KMR artifact",
                             f"{type(exc).__name__}: {exc}", hint="load a file written by `kmr run`")) from exc
    if recipe.get("format") == 1 and _low_bit(recipe.get("layers", {})):
        raise KmrError(error("KMR402", Span.unknown(str(path)),
                             f"`{path.name}` is format 1 and holds 4- or 2-bit weights on the old integer grid",
                             hint="write it again with `kmr run` (format 2 stores them on the midrise grid)"))
    if recipe.get("format") not in (1, FORMAT_VERSION):
        raise KmrError(error("KMR402", Span.unknown(str(path)), f"artifact format {recipe.get('format')!r} is not supported",
                             hint=f"this KMR reads format {FORMAT_VERSION} (and format 1 without 4- or 2-bit layers)"))
    return recipe


def _low_bit(node) -> bool:
    """Does a recipe's layer config (or any config nested in it) store 4- or 2-bit codes?"""
    if isinstance(node, dict):
        return node.get("bits") in (2, 4) or any(_low_bit(v) for v in node.values())
    if isinstance(node, list):
        return any(_low_bit(v) for v in node)
    return False


def _program_folder(spec: dict, path: Path, base_dir) -> str:
    """The folder the base loader's relative paths resolve against: `base_dir` if given,
    else the recorded one, else the artifact's folder or its parent (a program folder
    moved together with its `out/`), whichever holds the loader's module or file."""
    if base_dir is not None:
        return str(base_dir)
    recorded = spec.get("base_dir", ".")
    if os.path.isdir(recorded):
        return recorded
    first = str(spec.get("args", [""])[0]) if spec.get("args") else ""
    wanted = first.partition(":")[0].replace(".", "/") + ".py" if spec.get("kind") == "factory" else first
    for folder in (path.parent, path.parent.parent):
        if wanted and (folder / wanted).exists():
            return str(folder)
    return str(path.parent)


def load(path, trust: bool = False, base: nn.Module | None = None, base_dir=None) -> nn.Module:
    from safetensors.torch import load_file

    path = Path(path)
    span = Span.unknown(str(path))
    recipe = read_recipe(path)
    if base is None:
        spec_dict = recipe.get("base")
        if not spec_dict:
            raise KmrError(error("KMR402", span, "the artifact names no base loader",
                                 hint="pass base = a fresh instance of the original architecture"))
        from kmr_dsl.runtime import loaders
        spec = LoaderSpec(spec_dict["kind"], tuple(spec_dict.get("args", ())),
                          tuple((k, v) for k, v in spec_dict.get("kwargs", ())),
                          _program_folder(spec_dict, path.resolve(), base_dir))
        base = loaders.load_model(spec, trust=trust, span=span, weights=False)
    model = base
    tensors = load_file(str(path))
    used: set[str] = set()
    try:
        for name, cfg in recipe["layers"].items():
            built = codec.build(cfg)
            if built is not None:
                kl.set_module(model, name, built)
            layer = kl.get_module(model, name)
            used |= codec.decode_layer(name, layer, tensors)
            _restore_flags(name, layer, cfg)
        layer_names = set(recipe["layers"])
        rest = {k: v for k, v in tensors.items() if k not in used}
        expected = {k: v for k, v in model.state_dict(keep_vars=True).items()
                    if isinstance(v, torch.Tensor) and not _under(k, layer_names)}
        if set(rest) != set(expected):
            odd = sorted(set(rest) ^ set(expected))
            raise KeyError(", ".join(odd[:6]))
        # copy by hand: load_state_dict would also visit the layers, whose tensors
        # (packed integers, int8 dynamic weights) were decoded above
        with torch.no_grad():
            for key, value in rest.items():
                if expected[key].shape != value.shape:
                    raise ValueError(f"{key}: shape {tuple(value.shape)} != {tuple(expected[key].shape)}")
                expected[key].copy_(value)
    except (KeyError, AttributeError, RuntimeError, ValueError) as exc:
        raise KmrError(error("KMR402", span, f"`{path.name}` does not match the architecture its recipe builds",
                             f"{type(exc).__name__}: {exc}")) from exc
    return model.eval()


def _restore_flags(name: str, layer: nn.Module, cfg: dict) -> None:
    """Masks come back from the zeros; frozen layers freeze their own weights again."""
    from kmr_dsl.runtime import modules as km

    def walk(mod, c):
        if c.get("masked") and kl.is_leaf(mod) and kl.leaf_is_float(mod):
            kl.set_mask(mod, mod.weight.detach() != 0)
        if c["type"] == "FactorizedLinear":
            walk(mod.first, c["first"])
            walk(mod.second, c["second"])
        elif c["type"] == "LoRALinear":
            walk(mod.base, c["base"])
    walk(layer, cfg)
    if cfg.get("frozen"):
        base = layer.base if isinstance(layer, km.LoRALinear) else layer
        for p in base.parameters():
            p.requires_grad_(False)


__all__ = ["FORMAT_VERSION", "RECIPE_KEY", "build_recipe", "collect_tensors", "load", "read_recipe", "save"]
