"""Which normalization feeds which Linear layers, so a per-input scale can be folded into it.

Contract: `norm_groups(model, inputs, targets, rule)` runs one forward pass on `inputs`
and returns, for the selected float Linear leaves `targets` [(name, module)], a list of
(norm name, norm module, [(name, module), ...]): each normalization whose output tensor is
consumed *only* by selected Linears (no residual addition, no other op, no unselected
layer reads it), with every such Linear. A per-input-channel scale s can then be folded:
the norm's affine weight and bias are divided by s and each Linear's input columns are
multiplied by s, and the model computes the same function (SmoothQuant's and AWQ's
migration). A normalization is a torch `LayerNorm` or a module whose class name ends in
`RMSNorm` or `LayerNorm` with an affine `weight` over the last dimension (Llama's,
T5's). A selected Linear whose input no such normalization produces alone fails with
KMR405 naming it, and the hint says why (what else reads that input).

How: forward hooks record each normalization's output tensor; a TorchFunctionMode sees
every torch function call in the pass and records who reads those tensors: `F.linear`
inside a selected leaf's forward counts as that leaf, anything else as a foreign reader.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from kmr_dsl.rules import checks
from kmr_dsl.runtime import forward


def is_norm(module: nn.Module) -> bool:
    if isinstance(module, nn.LayerNorm):
        return module.elementwise_affine
    name = type(module).__name__
    weight = getattr(module, "weight", None)
    return (name.endswith("RMSNorm") or name.endswith("LayerNorm")) and isinstance(weight, torch.Tensor) \
        and weight.dim() == 1


# reads of a tensor's metadata (shape, dtype ...), not of its values
METADATA = {"__get__", "size", "dim", "__len__", "numel", "stride", "is_contiguous", "data_ptr", "element_size"}
# functions that may return their input's values unchanged (then they alias it)
ALIASES = {"dropout", "contiguous", "to", "clone", "detach", "float"}


class _Readers(TorchFunctionMode):
    def __init__(self, outputs: dict, keep_alive: list):
        super().__init__()
        self.outputs = outputs          # id(tensor) -> norm name
        self.keep_alive = keep_alive
        self.active: list[str] = []     # the selected leaves whose forward is running
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
            if reader is None and name in ALIASES and isinstance(result, torch.Tensor) \
                    and result.shape == arg.shape and torch.equal(result, arg):
                # an identity on this pass (dropout in eval mode, a no-op copy): its
                # readers read the norm's output
                self.outputs[id(result)] = norm
                self.keep_alive.append(result)
                continue
            self.readers.setdefault(norm, set()).add(reader or f"`{name}`")
        return result


def norm_groups(model: nn.Module, inputs: torch.Tensor, targets, rule: str):
    norms = [(n, m) for n, m in model.named_modules() if is_norm(m)]
    outputs: dict[int, str] = {}
    keep_alive = []

    def record(name):
        def hook(module, args, out):
            outputs[id(out)] = name
            keep_alive.append(out)          # ids stay unique while the pass runs
        return hook

    mode = _Readers(outputs, keep_alive)
    handles = [m.register_forward_hook(record(n)) for n, m in norms]
    for name, leaf in targets:
        handles.append(leaf.register_forward_pre_hook(lambda mod, args, name=name: mode.active.append(name)))
        handles.append(leaf.register_forward_hook(lambda mod, args, out: mode.active.pop() and None))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), mode:
            forward.checked_output(model, inputs, what="the calibration data")
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    by_name = dict(targets)
    modules = dict(norms)
    groups, placed = [], set()
    for norm, readers in mode.readers.items():
        chosen = [r for r in readers if r in by_name]
        if not chosen:
            continue
        foreign = sorted(r for r in readers if r not in by_name)
        if foreign:
            checks.fail(rule, f"`{chosen[0]}` reads the output of `{norm}`, which {', '.join(foreign)} also read(s)",
                        hint="a scale folds into a normalization only when every reader of its output is selected "
                             "(a residual connection reads it too in post-norm models such as BERT)")
        groups.append((norm, modules[norm], sorted((r, by_name[r]) for r in chosen)))
        placed.update(chosen)
    for name, _ in targets:
        if name not in placed:
            checks.fail(rule, f"`{name}` does not read a normalization's output directly",
                        hint="select the Linear layers right after a LayerNorm or RMSNorm "
                             "(e.g. the attention and MLP input projections of a pre-norm transformer)")
    return groups


def fold(norm: nn.Module, linears, scale: torch.Tensor) -> None:
    """Divide the norm's affine output by `scale`, multiply each Linear's inputs by it."""
    with torch.no_grad():
        norm.weight.div_(scale.to(norm.weight.dtype))
        if getattr(norm, "bias", None) is not None:
            norm.bias.div_(scale.to(norm.bias.dtype))
        for _, linear in linears:
            linear.weight.mul_(scale.to(linear.weight.dtype)[None, :])


__all__ = ["fold", "is_norm", "norm_groups"]
