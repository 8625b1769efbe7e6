"""Which normalization's output each layer reads, traced on one forward pass: what a
per-input-channel scale can be folded into (SmoothQuant's and AWQ's migration).

Contract:
- `is_norm(module)`: a normalization a scale folds into: a torch `LayerNorm` with an
  affine weight, or a module whose class name ends in `RMSNorm` or `LayerNorm` with an
  affine `weight` over the last dimension (Llama's, T5's).
- `norm_readers(model, inputs, run=forward.output)` runs `run(model, inputs)` once (eval
  mode, no grad) and returns {norm name: readers of its output}: a reader is the name of
  the logical layer (`layers.logical_layers`) whose forward read the tensor, or `` `fn` ``
  for a torch function called on it outside every layer (a residual addition, an
  attention score, a concatenation ...). A norm no one reads is absent.
- `fold_groups(model, inputs, run=forward.output)` is the `foldable` state field and the `fold_group` fact:
  {layer name: (norm name, the group)} for every Linear-kind logical layer that is one
  plain weight matrix (not factorized, no unmerged adapter, no tied embedding reading
  its weight) and reads the output of a normalization whose every reader is a
  Linear-kind logical layer; the group is those readers, sorted. Folding a scale into
  that norm preserves the function exactly when every member of the group is scaled
  with it, so a fold refuses a selection that leaves one out (KMR306 at check time,
  KMR405 at run time).

How: forward hooks record each normalization's output tensor; a TorchFunctionMode sees
every torch function call in the pass and records who reads those tensors: a call while
a logical layer's forward runs counts as that layer, any other as a foreign reader.
Reads of metadata (shape, dtype) outside a layer are not reads; an identity on this pass
(dropout in eval mode, a no-op copy or cast) passes its input's norm on to its result.

The checker's facts (`introspect`), the measured state (`runtime.state`) and the rules
that fold (`rules.folding`) all read this one trace, so `kmr check` refuses exactly the
selections `kmr run` refuses. The facts are cached: a change to what this trace finds
must bump `facts.FACTS_VERSION`, or `kmr check` keeps reading the old answer.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from kmr_dsl.runtime import forward
from kmr_dsl.runtime import layers as kl

# reads of a tensor's metadata (shape, dtype ...), not of its values
METADATA = {"__get__", "size", "dim", "__len__", "numel", "stride", "is_contiguous", "data_ptr", "element_size"}
# functions that may return their input's values unchanged (then they alias it)
ALIASES = {"dropout", "contiguous", "to", "clone", "detach", "float"}


def is_norm(module: nn.Module) -> bool:
    if isinstance(module, nn.LayerNorm):
        return module.elementwise_affine
    name = type(module).__name__
    weight = getattr(module, "weight", None)
    return (name.endswith("RMSNorm") or name.endswith("LayerNorm")) and isinstance(weight, torch.Tensor) \
        and weight.dim() == 1


def has_norm(model: nn.Module) -> bool:
    return any(is_norm(m) for m in model.modules())


def _same_values(result, arg) -> bool:
    if not isinstance(result, torch.Tensor) or result.shape != arg.shape:
        return False
    if result.is_meta or arg.is_meta:
        return True         # a meta pass has no values: an alias function of equal shape is an identity
    return result.dtype == arg.dtype and torch.equal(result, arg) or \
        result.dtype != arg.dtype and torch.equal(result.float(), arg.float())


class _Readers(TorchFunctionMode):
    def __init__(self, outputs: dict, keep_alive: list):
        super().__init__()
        self.outputs = outputs          # id(tensor) -> norm name
        self.keep_alive = keep_alive
        self.active: list[str] = []     # the logical layers whose forward is running
        self.readers: dict[str, set] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat = list(args) + list(kwargs.values())
        reader = self.active[-1] if self.active else None
        name = getattr(func, "__name__", str(func))
        result = func(*args, **kwargs)
        for arg in flat:
            norm = self.outputs.get(id(arg)) if isinstance(arg, torch.Tensor) else None
            if norm is None or (reader is None and name in METADATA):
                continue
            if reader is None and name in ALIASES and _same_values(result, arg):
                # its readers read the norm's output
                self.outputs[id(result)] = norm
                self.keep_alive.append(result)
                continue
            self.readers.setdefault(norm, set()).add(reader or f"`{name}`")
        return result


def norm_readers(model: nn.Module, inputs: torch.Tensor, run=forward.output) -> dict[str, set[str]]:
    norms = [(n, m) for n, m in model.named_modules() if is_norm(m)]
    if not norms:
        return {}
    outputs: dict[int, str] = {}
    keep_alive: list = []

    def record(name):
        def hook(module, args, out):
            outputs[id(out)] = name
            keep_alive.append(out)          # ids stay unique while the pass runs
        return hook

    mode = _Readers(outputs, keep_alive)
    handles = [m.register_forward_hook(record(n)) for n, m in norms]
    for name, layer in kl.logical_layers(model):
        if kl.kind_of(layer) in ("Linear", "Conv1d", "Conv2d", "Embedding"):
            handles.append(layer.register_forward_pre_hook(lambda mod, args, name=name: mode.active.append(name)))
            handles.append(layer.register_forward_hook(lambda mod, args, out: mode.active.pop() and None))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), mode:
            run(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return mode.readers


def fold_groups(model: nn.Module, inputs: torch.Tensor, run=forward.output) -> dict[str, tuple[str, tuple[str, ...]]]:
    """{layer: (norm, group)} of every foldable layer (module docstring)."""
    readers = norm_readers(model, inputs, run=run)
    if not readers:
        return {}
    layers = dict(kl.logical_layers(model))
    out = {}
    for norm, names in readers.items():
        if not all(n in layers and kl.kind_of(layers[n]) == "Linear" for n in names):
            continue            # a residual, another op or a non-Linear layer reads it too
        group = tuple(sorted(names))
        for name in group:
            layer = layers[name]
            if kl.leaves(name, layer) == [(name, layer)] and not kl.tied_aliases(model, layer):
                out[name] = (norm, group)
    return out


__all__ = ["ALIASES", "METADATA", "fold_groups", "has_norm", "is_norm", "norm_readers"]
