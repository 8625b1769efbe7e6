"""Where a per-input-channel scale goes: folded into the normalization that produces a
Linear's input, or kept as an explicit vector the layer multiplies its input by.

Contract: `scale_plan(model, inputs, targets, rule)` runs one forward pass on `inputs`
(`runtime.norms.fold_groups`, the trace the checker's `foldable` field is read by) and,
for the selected Linears `targets` [(logical name, float nn.Linear leaf)], returns
(groups, explicit):
- groups: [(norm name, norm module, [(name, leaf), ...])] for the selected layers that are
  `foldable`: the norm's output is read by Linear layers only, every one of them plain.
  Every reader must be selected (else KMR405 naming the one left out, as KMR306 says at
  check time): `fold(norm, linears, s)` divides the norm's affine weight and bias by s and
  multiplies each Linear's input columns by s, and the model computes the same function.
  A group may hold a reader that is not `foldable` itself (factorized by an earlier
  step, or already carrying a vector): the fold scales its leaf's columns too (the
  function is kept) and it is also in `explicit`.
- explicit: [(name, leaf)] for every selected layer that is not `foldable` (a residual
  also reads its norm, as in post-norm BERT; no norm produces its input at all; it is
  factorized or already carries a vector). `scale_explicitly`
  multiplies the leaf's input columns by s and makes the logical layer compute
  layer(x / s) (`modules.ScaledLinear`, stored in the artifact: the `input_scale` field),
  the same function up to float rounding.
This is automatic (the spec's "folding the inverse scale into the preceding
normalization" where one can take it): the state's `foldable` decides, so `kmr check`
predicts which layers carry a vector (`effect layer.input_scale`) and `size` counts it.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from kmr_dsl.rules import checks
from kmr_dsl.runtime import forward, norms
from kmr_dsl.runtime import layers as kl
from kmr_dsl.runtime import modules as km

is_norm = norms.is_norm


def scale_plan(model: nn.Module, inputs: torch.Tensor, targets, rule: str):
    folds = norms.fold_groups(model, inputs, run=lambda m, x: forward.checked_output(m, x, what="the calibration data"))
    modules = {n: m for n, m in model.named_modules() if is_norm(m)}
    by_name = dict(targets)
    groups: dict[str, list] = {}
    explicit = []
    for name, leaf in targets:
        if name not in folds:
            explicit.append((name, leaf))
            continue
        norm, group = folds[name]
        missing = [m for m in group if m not in by_name]
        if missing:
            checks.fail(rule, f"`{name}` reads the output of `{norm}`, which {', '.join(f'`{m}`' for m in missing)} "
                              "also read(s) without being selected",
                        hint="a scale folds into a normalization only when every reader of its output is selected: "
                             "select them together (e.g. q, k and v)")
        groups[norm] = [(m, by_name[m]) for m in group]
    return [(norm, modules[norm], linears) for norm, linears in groups.items()], explicit


def fold(norm: nn.Module, linears, scale: torch.Tensor) -> None:
    """Divide the norm's affine output by `scale`, multiply each Linear's inputs by it."""
    with torch.no_grad():
        norm.weight.div_(scale.to(norm.weight.dtype))
        if getattr(norm, "bias", None) is not None:
            norm.bias.div_(scale.to(norm.bias.dtype))
        for _, linear in linears:
            linear.weight.mul_(scale.to(linear.weight.dtype)[None, :])


def scale_explicitly(model: nn.Module, name: str, leaf: nn.Module, scale: torch.Tensor) -> None:
    """Multiply the leaf's input columns by `scale` and divide the layer's input by it at
    run time (an explicit vector: one multiply per call, before the weights)."""
    with torch.no_grad():
        leaf.weight.mul_(scale.to(leaf.weight.dtype)[None, :])
    kl.set_module(model, name, km.with_input_scale(kl.get_module(model, name), 1.0 / scale.float()))


__all__ = ["fold", "is_norm", "scale_explicitly", "scale_plan"]
