"""Static facts about a model and a dataset, and their on-disk cache.

Contract: `ModelFacts` is everything the checker and the verifier need to know about a
real model (its layers, their kinds and shapes, parameter counts, the example input
and the dense MACs each layer does on it), read once by the runtime and cached as
JSON keyed on the loader call and the content hash of every file it names. The facts
also record their `dependencies` (`dependencies_since`): the content hash of every
module of the program folder that was imported while the model was built (`arch.py`
that the factory's module imports, a package of the folder) and the version of every
installed distribution the build imported, torch always. `load_cached` treats a
changed, missing or upgraded dependency as a miss, so editing `arch.py` or upgrading
a package never serves the old model's facts. This module imports no torch: a cached
`kmr check` never pays for it.

`LoaderSpec` is a loader call with literal arguments, as written in the program, plus
the folder that relative paths are resolved against.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from kmr_dsl.core.state import full_rank
from kmr_dsl.patterns import selected

FACTS_VERSION = 5   # 2: facts carry their dependencies; 3: Conv1D layers (kind Linear), tied layers;
                    # 4: channel groups (coupled members, depthwise convs, why a layer is not linked),
                    #    symmetric (zero points), fold groups (the `foldable` field, read by `runtime.norms`);
                    # 5: attention heads (heads, head_group, head_consumers, attention_macs)


@dataclass(frozen=True, slots=True)
class LoaderSpec:
    """`factory("pkg.mod:fn", weights = "x.safetensors")` as data.

    kind: the loader name (`factory`, `torch_module`, `hf`, `sklearn`, `tensors`).
    args: positional literal arguments; kwargs: keyword literal arguments (sorted).
    base_dir: the folder of the .kmr file that wrote the call.
    """

    kind: str
    args: tuple = ()
    kwargs: tuple[tuple[str, object], ...] = ()
    base_dir: str = "."

    def kw(self, name: str, default=None):
        for k, v in self.kwargs:
            if k == name:
                return v
        return default

    def key(self) -> dict:
        return {"kind": self.kind, "args": list(self.args), "kwargs": [list(p) for p in self.kwargs]}


@dataclass(frozen=True, slots=True)
class LayerFact:
    """One selectable layer (a named submodule whose class name is its kind)."""

    name: str                 # qualified name, e.g. "encoder.layer.0.attention.self.query"
    kind: str                 # class name: Linear, Conv2d, Embedding, LayerNorm, ...
    in_features: int          # Linear: in_features; Conv2d: in_channels; Embedding: embedding_dim
    out_features: int         # Linear: out_features; Conv2d: out_channels; Embedding: num_embeddings
    weight_shape: tuple[int, ...]
    weight_params: int        # elements of the weight tensor (0 if none)
    bias_params: int          # elements of the bias tensor (0 if none)
    dtype: str                # "float32", "float16", "bfloat16", "qint8", ...
    bits: int                 # storage width of the weight at load time (32 for float32)
    density: float            # measured fraction of non-zero weights
    macs: int                 # dense multiply-accumulates of this layer for one example input
    consumers: tuple[str, ...] = ()   # layers whose input is this layer's output channels (sequential models)
    kernel: tuple[int, ...] = ()      # Conv2d kernel size
    tied: tuple[str, ...] = ()        # other names of this layer's weight (a tied embedding): not layers themselves
    group_size: int = 0               # inputs per integer scale (0: one scale per row)
    # channel groups (runtime/depgraph.py): the other layers whose output channels are this
    # layer's (a residual stream's producers, a gated unit's gate and up projections, a
    # depthwise conv over them), pruned with it
    coupled: tuple[str, ...] = ()
    depthwise: bool = False           # a depthwise conv: in = out channels, one filter per channel
    unlinked: str = ""                # why its output channels cannot be removed (diagnostics)
    # bytes of its stored buffers with one entry per channel (a BatchNorm's running
    # statistics; part of ModelFacts.buffers_bytes): they shrink with its channels
    channel_buffer_bytes: int = 0
    symmetric: bool = True            # False: the integer weight carries zero points
    # attention heads (runtime.heads): the head units of a query/key/value projection (0:
    # not one), the attention's other projections and its output projection, and the
    # MACs of the attention's own matmuls (scores, weighted values), which scale with
    # the heads: counted on the query projection, not in the model's rest
    heads: int = 0
    head_group: tuple[str, ...] = ()
    head_consumers: tuple[str, ...] = ()
    attention_macs: int = 0
    # a Linear whose input a normalization produces for Linears only (`runtime.norms`):
    # that norm and every Linear reading it (itself included); empty: nothing folds into it
    fold_norm: str = ""
    fold_group: tuple[str, ...] = ()
    # an explicit input scale (runtime `ScaledLinear`); a model as loaded holds none (only
    # awq and smoothquant make one), so facts read it as False
    input_scale: bool = False

    @property
    def foldable(self) -> bool:
        return bool(self.fold_group)

    @property
    def params(self) -> int:
        return self.weight_params + self.bias_params

    @property
    def rank(self) -> int:
        return full_rank(self.in_features, self.out_features)


@dataclass(frozen=True, slots=True)
class ModelFacts:
    layers: tuple[LayerFact, ...]
    total_params: int             # every parameter of the model, layers or not
    total_macs: int               # dense MACs of the whole model for one example input
    input_shape: tuple[int, ...]  # the example input's shape (batch 1), for macs
    input_dtype: str = "float32"
    buffers_bytes: int = 0        # non-parameter state stored in the artifact
    source_hash: str = ""
    # ("file:REL", sha256) of program-folder modules and ("dist:NAME", version) of
    # installed distributions the model's build imported: the cache's staleness check
    dependencies: tuple[tuple[str, str], ...] = ()

    def select(self, kinds: tuple[str, ...] = (), names: tuple[str, ...] | str | None = None,
               exclude: tuple[str, ...] | None = None) -> list[LayerFact]:
        """Layers of one of `kinds` (any when empty) whose name `names` matches and
        `exclude` does not (kmr_dsl.patterns: globs or `re:` expressions)."""
        if isinstance(names, str):
            names = (names,)
        return [layer for layer in self.layers
                if (not kinds or layer.kind in kinds) and selected(layer.name, names, exclude)]

    def layer(self, name: str) -> LayerFact:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def other_params(self) -> int:
        """Parameters outside every selectable layer (kept as they are)."""
        return self.total_params - sum(layer.params for layer in self.layers)

    def to_json(self) -> dict:
        return {"version": FACTS_VERSION, **asdict(self)}

    @staticmethod
    def from_json(data: dict) -> "ModelFacts":
        layers = tuple(
            LayerFact(**{**d, "weight_shape": tuple(d["weight_shape"]), "consumers": tuple(d.get("consumers", ())),
                         "kernel": tuple(d.get("kernel", ())), "tied": tuple(d.get("tied", ())),
                         "coupled": tuple(d.get("coupled", ())), "head_group": tuple(d.get("head_group", ())),
                         "head_consumers": tuple(d.get("head_consumers", ())),
                         "fold_group": tuple(d.get("fold_group", ()))})
            for d in data["layers"]
        )
        return ModelFacts(
            layers=layers,
            total_params=data["total_params"],
            total_macs=data["total_macs"],
            input_shape=tuple(data["input_shape"]),
            input_dtype=data.get("input_dtype", "float32"),
            buffers_bytes=data.get("buffers_bytes", 0),
            source_hash=data.get("source_hash", ""),
            dependencies=tuple((str(k), str(v)) for k, v in data.get("dependencies", ())),
        )


# ---------------------------------------------------------------- cache

def cache_dir() -> Path:
    env = os.environ.get("KMR_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kmr"


def _hash_path(h, path: Path) -> None:
    if path.is_dir():
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(child.relative_to(path)).encode())
            h.update(child.read_bytes())
    elif path.is_file():
        h.update(path.read_bytes())


def source_files(spec: LoaderSpec) -> list[Path]:
    """Every file the loader reads, so that the cache key changes when one does."""
    base = Path(spec.base_dir)
    files: list[Path] = []
    for value in list(spec.args) + [v for _, v in spec.kwargs]:
        if isinstance(value, str):
            if ":" in value and spec.kind == "factory":
                module = value.split(":", 1)[0]
                rel = Path(*module.split("."))
                for cand in (base / rel.with_suffix(".py"), base / rel / "__init__.py"):
                    if cand.is_file():
                        files.append(cand)
            cand = base / value
            if cand.exists():
                files.append(cand)
    return files


def spec_hash(spec: LoaderSpec) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"v": FACTS_VERSION, **spec.key()}, sort_keys=True, default=str).encode())
    for path in source_files(spec):
        _hash_path(h, path)
    return h.hexdigest()[:32]


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:32]
    except OSError:
        return None


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


def dependencies_since(spec: LoaderSpec, before: set[str]) -> tuple[tuple[str, str], ...]:
    """What the model's build ran, called right after it: every imported module whose
    file lies in the program folder (outside the Python installation), and the installed
    distributions of torch and of the top-level modules first imported since `before`
    (a snapshot of `sys.modules` taken before the build)."""
    from kmr_dsl.trust import python_folders

    base = Path(spec.base_dir).resolve()
    libs = python_folders()
    deps: dict[str, str] = {}
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not file:
            continue
        try:
            path = Path(file).resolve()
        except (OSError, RuntimeError):
            continue
        if base in path.parents and not any(lib == path or lib in path.parents for lib in libs):
            digest = _digest(path)
            if digest is not None:
                deps[f"file:{path.relative_to(base).as_posix()}"] = digest
    tops = {"torch"} | {name.partition(".")[0] for name in list(sys.modules) if name not in before}
    owners = importlib.metadata.packages_distributions()
    for top in sorted(tops):
        for dist in owners.get(top, ()):
            version = _dist_version(dist)
            if version is not None:
                deps[f"dist:{dist}"] = version
    return tuple(sorted(deps.items()))


def _still_current(spec: LoaderSpec, deps) -> bool:
    base = Path(spec.base_dir)
    for key, value in deps:
        kind, _, name = key.partition(":")
        if kind == "file" and _digest(base / name) != value:
            return False
        if kind == "dist" and _dist_version(name) != value:
            return False
    return True


def load_cached(spec: LoaderSpec) -> ModelFacts | None:
    path = cache_dir() / f"facts-{spec_hash(spec)}.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != FACTS_VERSION:
        return None
    try:
        facts = ModelFacts.from_json(data)
    except (KeyError, TypeError, ValueError):
        return None
    return facts if _still_current(spec, facts.dependencies) else None


def store_cached(spec: LoaderSpec, facts: ModelFacts) -> None:
    """Write atomically; a cache that cannot be written is not an error."""
    directory = cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"facts-{spec_hash(spec)}.json"
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(facts.to_json()))
        os.replace(tmp, path)
    except OSError:
        pass


__all__ = ["LayerFact", "LoaderSpec", "ModelFacts", "dependencies_since", "load_cached", "store_cached", "spec_hash"]
