"""Which normalization feeds which selected Linear layers, so a per-input scale can be folded into it.

Contract: `norm_groups(model, inputs, targets, rule)` runs one forward pass on `inputs`
(`runtime.norms.norm_readers`, the trace the checker's `foldable` field is read by) and
returns, for the selected float Linear leaves `targets` [(name, module)], a list of
(norm name, norm module, [(name, module), ...]): each normalization whose output tensor is
consumed *only* by selected Linears (no residual addition, no other op, no unselected
layer reads it), with every such Linear. A per-input-channel scale s can then be folded:
the norm's affine weight and bias are divided by s and each Linear's input columns are
multiplied by s, and the model computes the same function (SmoothQuant's and AWQ's
migration). A selected Linear whose input no such normalization produces alone fails with
KMR405 naming it, and the hint says why (what else reads that input).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from kmr_dsl.rules import checks
from kmr_dsl.runtime import forward, norms

is_norm = norms.is_norm


def norm_groups(model: nn.Module, inputs: torch.Tensor, targets, rule: str):
    readers = norms.norm_readers(model, inputs,
                                 run=lambda m, x: forward.checked_output(m, x, what="the calibration data"))
    modules = {n: m for n, m in model.named_modules() if is_norm(m)}
    by_name = dict(targets)
    groups, placed = [], set()
    for norm, names in readers.items():
        chosen = sorted(r for r in names if r in by_name)
        if not chosen:
            continue
        foreign = sorted(r if r.startswith("`") else f"`{r}`" for r in names if r not in by_name)
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
