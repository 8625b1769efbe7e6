"""`qat`: quantization-aware training, then the real integer format.

Contract (stdlib/rules.kmr): requires `model.trainable` and `layer.bits >= 16`; effect
`layer.bits = bits`, `layer.group_size = group_size`, `model.trainable =
model.trainable and bits >= 16` — the same as `quantize(bits, scheme, group_size)`,
whose conversion ends the rule. During training (`training.train`: the whole model,
`task_loss` of the data) each selected leaf's weight is fake-quantized on KMR's own grid
(`quant.quantize`, so the grid trained on is the grid stored) with a straight-through
estimator: forward sees dequantize(quantize(w)), the gradient passes to w unchanged.
Pruning masks hold throughout (the fake-quantized weight is masked, and the float weight
is masked again before conversion), so density is kept exactly.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from kmr_dsl.rules import checks
from kmr_dsl.rules import quantize as quantize_rule
from kmr_dsl.runtime import layers as kl
from kmr_dsl.runtime import quant, training

RULE = "qat"
BITS = (2, 4, 8)


class FakeQuant(nn.Module):
    def __init__(self, bits: int, group_size: int, mask: torch.Tensor | None, qmax: int | None = None):
        super().__init__()
        self.bits, self.group_size, self.mask, self.qmax = bits, group_size, mask, qmax

    def forward(self, w):
        if self.mask is not None:
            w = w * self.mask.to(w.dtype)
        q, scale = quant.quantize(w.detach(), self.bits, self.group_size, qmax=self.qmax)
        fake = quant.dequantize(q, scale, self.bits, self.group_size).to(w.dtype)
        return w + (fake - w).detach()


def apply(model: nn.Module, layers, bits: int, data, epochs: int = 1, lr: float = 1e-3, batch_size: int = 64,
          scheme: str = "dynamic", group_size: int = 0, optimizer: str = "adam", momentum: float = 0.9,
          weight_decay: float = 0.0, schedule: str = "constant"):
    bits = int(checks.choice(RULE, "bits", bits, BITS))
    scheme = checks.choice(RULE, "scheme", scheme, ("dynamic", "weight_only"))
    group_size = checks.integer(RULE, "group_size", group_size, 0, 1 << 20)
    training.require_trainable(model, RULE)
    data = training.require_data(data, RULE)
    leaves = []
    for name, layer in layers:
        kind = checks.kinds(RULE, name, layer, ("Linear", "Conv2d"))
        checks.float_weights(RULE, name, layer)
        leaves.extend((leaf_name, leaf, kind) for leaf_name, leaf in kl.leaves(name, layer))
    for _, leaf, kind in leaves:
        # a dynamic int8 Linear stores the int8 kernels' narrower codes: train on those
        kernel = scheme == "dynamic" and kind == "Linear" and bits == 8 and not group_size
        parametrize.register_parametrization(leaf, "weight", FakeQuant(bits, group_size, getattr(leaf, kl.MASK, None),
                                                                       quant.KERNEL_QMAX if kernel else None))
    try:
        training.train(model, data, training.task_loss(data, rule=RULE), epochs, lr, batch_size, RULE,
                       optimizer=optimizer, momentum=momentum, weight_decay=weight_decay, schedule=schedule)
    finally:
        for _, leaf, _ in leaves:
            parametrize.remove_parametrizations(leaf, "weight", leave_parametrized=False)
            kl.apply_masks(leaf)
    for leaf_name, leaf, kind in leaves:
        new = quantize_rule.convert(leaf, kind, bits, scheme, leaf_name, group_size)
        if new is not leaf:
            kl.set_module(model, leaf_name, new)
    return model
