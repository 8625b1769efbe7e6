"""`gptq`: weight-only integer quantization of Linear layers with GPTQ's error compensation.

Contract (stdlib/rules.kmr): requires `layer.bits >= 16` (GPTQ needs the float weights);
effect `layer.bits = bits`, `layer.group_size = group_size` below 16 bits, the model
stops being trainable below 16 bits. 16 and 32 bits are `quantize`'s (bfloat16, and
unchanged): GPTQ has nothing to compensate there, and a per-layer width knob over
{4, 8, 16} can then choose per layer. The result is the same weight-only integer layer `quantize(scheme =
weight_only)` makes (`modules.QuantLinear`, KMR's grid, per-row or per-group scales), so
it is stored and costed exactly like it; only the codes differ (`kmr_dsl.runtime.gptq`).

Calibration: layer by layer in the order the forward pass calls them, the first
`samples` examples of `calibration` are run through the model up to that layer (the pass
stops there) and its Hessian H = 2/n X^T X is accumulated from the inputs that reach it,
the layers before it already quantized — sequential, as the reference quantizes a
transformer block by block, so each layer compensates the error of those before it. The last group of a row holds the remainder when `group_size` does
not divide the layer's input width.
"""

from __future__ import annotations

import torch.nn as nn

from kmr_dsl.rules import checks
from kmr_dsl.rules import quantize as quantize_rule
from kmr_dsl.rules import calibration as calibration_
from kmr_dsl.runtime import gptq as algorithm
from kmr_dsl.runtime import layers as kl
from kmr_dsl.runtime import modules as km
from kmr_dsl.runtime import training

RULE = "gptq"
BITS = (2, 4, 8, 16, 32)


def apply(model: nn.Module, layers, bits: int = 4, group_size: int = 128, calibration=None, samples: int = 128,
          dampening: float = 0.01, act_order: bool = False):
    bits = int(checks.choice(RULE, "bits", bits, BITS))
    group_size = checks.integer(RULE, "group_size", group_size, 0, 1 << 20)
    samples = checks.integer(RULE, "samples", samples, 1, 1 << 20)
    dampening = checks.number(RULE, "dampening", dampening, 0.0, 1.0, lo_open=True)
    data = training.require_data(calibration, RULE)
    if bits >= 16:
        # nothing to compensate above 8 bits: 16 is bfloat16 and 32 leaves the layers, as
        # `quantize` does, so a per-layer width knob can span {4, 8, 16}
        return quantize_rule.apply(model, layers, bits=bits)
    targets = [leaf for leaves in calibration_.linear_leaves(model, layers, RULE) for leaf in leaves]
    if not targets:
        return model
    inputs = data.inputs[:samples]
    # sequential, as the reference quantizes a transformer block by block: each layer's
    # Hessian comes from the inputs it receives once the layers before it are quantized
    for leaf_name, leaf in execution_order(model, inputs[:1], targets):
        stats = calibration_.observe(model, inputs, [(leaf_name, leaf)],
                                     lambda leaf: calibration_.Hessian(leaf.in_features), RULE, stop_early=True)
        weight = kl.leaf_weight(leaf).detach().float()
        try:
            codes = algorithm.quantize(weight, stats[leaf_name].value(), bits, group_size, dampening,
                                       bool(act_order))
        except algorithm.NotPositiveDefinite as exc:
            checks.fail(RULE, f"`{leaf_name}`: {exc}", hint="raise `dampening` or give more calibration samples")
        kl.set_module(model, leaf_name, km.quantized_leaf(leaf, weight, bits, group_size, codes=codes))
    return model


def execution_order(model: nn.Module, sample, targets):
    """`targets` in the order the model's forward pass first calls them (those it never
    calls last, where `observe` reports them)."""
    order: list[str] = []
    handles = [leaf.register_forward_hook(lambda mod, args, out, name=name: order.append(name) and None)
               for name, leaf in targets]
    try:
        calibration_.observe(model, sample, [], lambda m: None, RULE)
    finally:
        for handle in handles:
            handle.remove()
    rank = {name: i for i, name in reversed(list(enumerate(order)))}
    return sorted(targets, key=lambda t: rank.get(t[0], len(order)))
