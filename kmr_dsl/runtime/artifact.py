"""Save a compressed model as one safetensors file, and load it back without pickle.

Contract (docs/artifact.md is the full specification):
- `save(model, path, recipe=None) -> int` writes ONE standard safetensors file and
  returns its size in bytes. Its `__metadata__` has `format = "pt"` and `kmr_recipe`,
  a compact JSON object {"format": 2, "base": LOADER, "layers": {NAME: CONFIG},
  "info": {...}} (written by `artifact_recipe.recipe_json`, which the `size` cost model
  counts with): LOADER is the loader call that builds the original architecture
  (`recipe["base"]`, a LoaderSpec or its dict, without the program's folder, so the
  file's bytes do not depend on where the program lives), CONFIG describes
  every logical layer as it is now (`codec.describe`), and `info` is the rest of the
  caller's `recipe` (`kmr run`: the pipeline's name; the knob setting is in report.json,
  docs/artifact.md says why). The tensors follow the byte layout of
  `kmr_dsl.artifact_layout`.
  The write is atomic: a temporary file in the same folder, fsync, `os.replace`; if
  anything (an error, Ctrl-C) interrupts it, the temporary file is removed and no file,
  partial or old-overwritten, appears at `path`.
- `load(path, trust=False, base=None, base_dir=None) -> nn.Module` rebuilds the model.
  The file is data only (docs/security.md): nothing it names is imported or called on
  its say-so. Layers are rebuilt from `codec.build`, a fixed registry of KMR's own layer
  types; the original architecture comes from `base` (a fresh instance you construct:
  no code from anywhere runs) or from the recipe's loader call, which runs code and so
  needs the caller's decision: `base_dir=` names the program folder whose code is yours
  (the factory's module must be a file there, as `kmr run` requires), or `trust=True`
  trusts the file (its recorded folder, else the artifact's folder or its parent). A
  `torch_module` base always needs `trust=True`; a `trust` flag inside the recipe is
  ignored. A recipe that is not the documented shape is KMR402, never a TypeError.
- The bytes are deterministic: two saves of the same model with the same recipe write
  identical files (the recipe is sorted JSON, the metadata keys are written in sorted
  order).
Failures raise KmrError: KMR402 (not a KMR artifact, inconsistent or malformed file),
KMR401 (missing file), KMR227 (rebuilding would run code and no folder or trust was
given), KMR217 (a pickled base without trust), KMR505 (folder not writable).
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import suppress
from pathlib import Path

import torch
import torch.nn as nn

from kmr_dsl import artifact_layout as layout
from kmr_dsl import artifact_recipe
from kmr_dsl.diagnostics import KmrError, Span, error
from kmr_dsl.facts import LoaderSpec
from kmr_dsl.runtime import codec, fusion, layers as kl, state, tied
from kmr_dsl.trust import refuse_untrusted

RECIPE_KEY = "kmr_recipe"
FORMAT_VERSION = artifact_recipe.FORMAT_VERSION


def layer_configs(model: nn.Module) -> dict:
    """Every logical layer's config as the recipe stores it (`codec.describe`, + frozen)."""
    layers = {}
    for name, layer in kl.logical_layers(model):
        cfg = codec.describe(layer)
        if state.layer_frozen(name, layer):
            cfg["frozen"] = True
        layers[name] = cfg
    return layers


def build_recipe(model: nn.Module, recipe: dict | None) -> dict:
    recipe = dict(recipe or {})
    return {"format": FORMAT_VERSION, "base": artifact_recipe.base_dict(recipe.pop("base", None)),
            "layers": layer_configs(model), "info": recipe}


def _under(key: str, prefixes: set[str]) -> bool:
    parts = key.split(".")
    return any(".".join(parts[:i]) in prefixes for i in range(1, len(parts)))


def collect_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    layers = list(kl.logical_layers(model))
    names = {name for name, _ in layers}
    rest: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if isinstance(value, torch.Tensor) and not _under(key, names):
            # clone: safetensors refuses tensors that share storage (tied weights)
            rest[key] = value.detach().contiguous().clone()
    # the writer picks each weight's form with its header entries at the digits of the
    # largest offset the file can have (artifact_layout.is_sparse)
    bound = sum(codec.data_bound(name, layer) for name, layer in layers) + \
        sum(v.numel() * v.element_size() for v in rest.values())
    digits = layout.offset_digits(bound)
    tensors: dict[str, torch.Tensor] = {}
    for name, layer in layers:
        tensors.update(codec.encode_layer(name, layer, digits))
    tensors.update(rest)
    return tensors


def encode(model: nn.Module, recipe: dict | None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the `__metadata__` of the file `save` writes."""
    recipe = dict(recipe or {})
    # artifact_recipe writes the text, so the `size` cost model counts the same bytes
    text = artifact_recipe.recipe_json(recipe.pop("base", None), layer_configs(model), recipe)
    return collect_tensors(model), {"format": "pt", RECIPE_KEY: text}


def nbytes(model: nn.Module, recipe: dict | None = None) -> int:
    """The length of the file `save(model, PATH, recipe)` writes, serialized in memory
    (the metadata's key order does not change its length)."""
    from safetensors.torch import save as to_bytes

    tensors, metadata = encode(model, recipe)
    return len(to_bytes(tensors, metadata=metadata))


def save(model: nn.Module, path, recipe: dict | None = None, span: Span | None = None) -> int:
    from safetensors.torch import save_file

    span = span or Span.unknown()
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KmrError(error("KMR505", span, f"cannot create `{directory}`", str(exc))) from exc
    tensors, metadata = encode(model, recipe)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
        os.close(fd)
    except OSError as exc:
        raise KmrError(error("KMR505", span, f"cannot write into `{directory}`", str(exc))) from exc
    try:
        save_file(tensors, tmp, metadata=metadata)
        _sort_metadata(tmp)
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


_META_PREFIX = b'{"__metadata__":{'
_FORMAT_PAIR = b'"format":"pt"'


def _sort_metadata(path) -> None:
    """safetensors writes `__metadata__` from a hash map, so its two keys come out in
    either order from one save to the next; put `format` first (sorted order) so equal
    models give equal bytes. Both orders have the same length: rewrite in place."""
    with open(path, "r+b") as handle:
        n = int.from_bytes(handle.read(8), "little")
        header = handle.read(n)
        if not header.startswith(_META_PREFIX) or header[len(_META_PREFIX):].startswith(_FORMAT_PAIR + b","):
            return
        # the recipe is one escaped JSON string: every quote inside it is `\"`, so the
        # unescaped `","format":"pt"}` can only be the end of the metadata object
        tail = b"," + _FORMAT_PAIR + b"}"
        end = header.find(tail)
        if end < 0:
            return
        pair = header[len(_META_PREFIX):end]
        fixed = _META_PREFIX + _FORMAT_PAIR + b"," + pair + b"}" + header[end + len(tail):]
        assert len(fixed) == len(header)
        handle.seek(8)
        handle.write(fixed)


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
    if not isinstance(recipe, dict):
        raise _bad(Span.unknown(str(path)), f"it is {type(recipe).__name__}, not an object")
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


LOADER_KINDS = ("factory", "hf", "torch_module")
_SCALARS = (str, int, float, bool, type(None))


def _bad(span: Span, what: str) -> KmrError:
    return KmrError(error("KMR402", span, f"the artifact's recipe is malformed: {what}",
                          hint="load a file written by `kmr run`; this one was changed or made elsewhere"))


def _literal(value) -> bool:
    """A loader argument as `kmr check` writes them: a scalar or a list of scalars."""
    if isinstance(value, list):
        return all(isinstance(v, _SCALARS) for v in value)
    return isinstance(value, _SCALARS)


def _recorded_base(recipe: dict, span: Span) -> dict:
    """The recipe's loader call, checked to be the documented shape (KMR402 if not), with
    any `trust` argument dropped: trust is the caller's decision, never the file's."""
    base = recipe.get("base")
    if base is None:
        raise KmrError(error("KMR402", span, "the artifact names no base loader",
                             hint="pass base = a fresh instance of the original architecture"))
    if not isinstance(base, dict):
        raise _bad(span, f"`base` is {type(base).__name__}, not an object")
    kind, args, kwargs = base.get("kind"), base.get("args", []), base.get("kwargs", [])
    if kind not in LOADER_KINDS:
        raise _bad(span, f"`base.kind` {kind!r} is not one of {', '.join(LOADER_KINDS)}")
    if not isinstance(args, list) or len(args) != 1 or not isinstance(args[0], str):
        raise _bad(span, "`base.args` is not a list holding one string")
    if not isinstance(kwargs, list) or not all(
            isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and _literal(p[1]) for p in kwargs):
        raise _bad(span, "`base.kwargs` is not a list of [name, literal] pairs")
    if not isinstance(base.get("base_dir", ""), str):
        raise _bad(span, "`base.base_dir` is not a string")
    # only files written before 2026-12-02 record the program's folder (artifact_recipe.base_dict)
    return {"kind": kind, "args": args, "kwargs": [p for p in kwargs if p[0] != "trust"],
            "base_dir": base.get("base_dir")}


def _check_layers(recipe: dict, span: Span, limit: int) -> dict:
    """Layer configs are objects of KMR's layer registry with sizes the file can hold
    (a forged `"out": 10**12` must not allocate terabytes before the tensors are read)."""
    layers = recipe.get("layers")
    if not isinstance(layers, dict):
        raise _bad(span, "`layers` is not an object")

    def walk(name, cfg):
        if not isinstance(cfg, dict) or not isinstance(cfg.get("type"), str):
            raise _bad(span, f"layer `{name}`: its config is not an object with a `type`")
        elements = 1
        for key in ("in", "out", "num", "dim", "channels", "shape", "kernel"):
            value = cfg.get(key)
            for v in (value if isinstance(value, list) else [value]):
                if isinstance(v, bool) or (v is not None and not isinstance(v, int)) or (isinstance(v, int) and v < 0):
                    raise _bad(span, f"layer `{name}`: `{key}` is {value!r}")
                elements *= v if isinstance(v, int) else 1
        groups = cfg.get("groups")
        if isinstance(groups, int) and not isinstance(groups, bool) and groups > 0:
            elements //= groups        # a grouped (depthwise) conv holds in * out * k / groups weights
        if elements > limit:
            raise _bad(span, f"layer `{name}` describes {elements:,} weights, more than the file can hold")
        for key in ("first", "second", "base", "linear"):
            if key in cfg:
                walk(name, cfg[key])
    for name, cfg in layers.items():
        walk(name, cfg)
    return layers


def program_folder(spec: dict, path: Path) -> str:
    """With trust: the folder the base loader's relative paths resolve against: the
    artifact's folder or one or two above it (`kmr run` writes `out/<pipeline>/` in the
    folder it runs in), whichever holds the loader's module or file; an older file's
    recorded folder first, while it exists."""
    recorded = spec.get("base_dir")
    if recorded and os.path.isabs(recorded) and os.path.isdir(recorded):
        return recorded
    first = str(spec["args"][0])
    wanted = first.partition(":")[0].replace(".", "/") + ".py" if spec["kind"] == "factory" else first
    for folder in (path.parent, path.parent.parent, path.parent.parent.parent):
        if wanted and (folder / wanted).exists():
            return str(folder)
    return str(path.parent)


def _rebuild_base(recipe: dict, path: Path, span: Span, trust: bool, base_dir) -> nn.Module:
    """The original architecture from the recipe's loader call, under the trust model."""
    from kmr_dsl.runtime import loaders

    spec_dict = _recorded_base(recipe, span)
    kind, first = spec_dict["kind"], spec_dict["args"][0]
    if kind == "torch_module" and not trust:
        raise KmrError(error("KMR217", span, f"the artifact's base is the pickle `{first}`: refusing to unpickle it",
                             "a pickle can run code when loaded; a `trust` flag inside the artifact is not trust",
                             hint="pass trust=True if you trust the file, or base = a fresh instance of the architecture"))
    if base_dir is not None:
        folder = str(base_dir)
    elif trust:
        folder = program_folder(spec_dict, path.resolve())
    elif kind == "factory":
        # the file names the function; only the caller may say whose code may run
        raise KmrError(error(
            "KMR227", span, f"rebuilding `{path.name}` would run `{first}`, which the file names",
            "the artifact is data: KMR runs the code it names only from a program folder you give",
            hint="pass base_dir = the program's folder (its code is yours), base = a fresh instance of the "
                 "architecture, or trust=True if you trust this file"))
    else:
        folder = str(path.resolve().parent)
    spec = LoaderSpec(kind, tuple(spec_dict["args"]), tuple((k, v) for k, v in spec_dict["kwargs"]), folder)
    if kind == "factory" and not trust:
        from kmr_dsl.trust import local_module_file

        if local_module_file(first.partition(":")[0], folder) is None:
            refuse_untrusted(first, folder, span, "factory")
    return loaders.load_model(spec, trust=trust, span=span, weights=False)


def load(path, trust: bool = False, base: nn.Module | None = None, base_dir=None) -> nn.Module:
    from safetensors.torch import load_file

    path = Path(path)
    span = Span.unknown(str(path))
    recipe = read_recipe(path)
    layers = _check_layers(recipe, span, 8 * path.stat().st_size + 4096)
    if base is None:
        base = _rebuild_base(recipe, path, span, trust, base_dir)
    model = tied.link(base)     # a base built by hand: its tied embedding reads lm_head, as saved
    tensors = load_file(str(path))
    used: set[str] = set()
    try:
        for name, cfg in layers.items():
            built = codec.build(cfg)
            if built is not None:
                kl.set_module(model, name, built)
            layer = kl.get_module(model, name)
            used |= codec.decode_layer(name, layer, tensors)
            _restore_flags(name, layer, cfg)
        layer_names = set(layers)
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
    except (KeyError, AttributeError, RuntimeError, ValueError, TypeError, IndexError, OverflowError) as exc:
        raise KmrError(error("KMR402", span, f"`{path.name}` does not match the architecture its recipe builds",
                             f"{type(exc).__name__}: {exc}")) from exc
    fusion.install(model)       # sibling int8 Linears on one input: one GEMM (nothing saved changes)
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
        elif c["type"] == "ScaledLinear":
            walk(mod.linear, c["linear"])
    walk(layer, cfg)
    if cfg.get("frozen"):
        base = layer.base if isinstance(layer, km.LoRALinear) else layer
        for p in base.parameters():
            p.requires_grad_(False)


__all__ = ["FORMAT_VERSION", "LOADER_KINDS", "RECIPE_KEY", "build_recipe", "collect_tensors", "encode", "load", "nbytes",
           "read_recipe", "save"]
