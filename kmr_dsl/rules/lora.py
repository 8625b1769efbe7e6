"""`lora`: train low-rank adapters on selected Linears, then merge them or keep them.

Contract (docs/design.md): requires `layer.bits >= 16`, `layer.adapter_rank == 0`,
`model.trainable`; effect `layer.adapter_rank = if merge then 0 else rank`,
`layer.frozen = not merge`.
Each selected layer becomes `LoRALinear(base, rank, alpha / rank)`: A (rank x in)
uniform in +-1/sqrt(in) from a generator seeded with the run's seed, B (out x rank)
zero, so training starts at the unchanged model. Only the adapters are trained (every
other parameter's requires_grad is switched off during training and restored after).
- merge = true: W += (alpha / rank) * B A, masked by the layer's pruning mask (zeros stay
  zero), and the adapter is removed; if the base is of reduced rank (factorized, or a
  truncated dense Linear) the merged weight is projected back onto its rank by SVD so
  `layer.rank` stays as the state says.
- merge = false: the adapter stays (fp32) and the base weights are frozen.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from kmr_dsl.rules import checks, lowrank
from kmr_dsl.runtime import context, layers as kl, state, training
from kmr_dsl.runtime import modules as km

RULE = "lora"


def apply(model: nn.Module, layers, data, rank: int = 8, alpha: float = 16.0, epochs: int = 1,
          lr: float = 1e-3, batch_size: int = 64, merge: bool = True, optimizer: str = "adam",
          momentum: float = 0.9, weight_decay: float = 0.0, schedule: str = "constant"):
    rank = checks.integer(RULE, "rank", rank, 1, 256)
    alpha = checks.number(RULE, "alpha", alpha, 0.0, 1024.0)
    if not isinstance(merge, bool):
        checks.fail(RULE, f"`merge` must be true or false, got {merge!r}")
    training.require_trainable(model, RULE)
    data = training.require_data(data, RULE)
    for name, layer in layers:
        checks.kinds(RULE, name, layer, ("Linear",))
        checks.float_weights(RULE, name, layer)
        checks.no_adapter(RULE, name, layer)
        checks.no_input_scale(RULE, name, layer)
        checks.not_tied(RULE, model, name, layer)
    if not layers:
        return model
    generator = torch.Generator().manual_seed(context.current().seed)
    wrappers: list[tuple[str, km.LoRALinear]] = []
    for name, layer in layers:
        # a Conv1D base becomes the equal nn.Linear: the adapter and the merge are [out, in]
        wrapper = km.LoRALinear(kl.as_linear(layer), rank, alpha / rank)
        bound = 1.0 / max(1, wrapper.in_features) ** 0.5
        with torch.no_grad():
            wrapper.lora_A.uniform_(-bound, bound, generator=generator)
        kl.set_module(model, name, wrapper)
        wrappers.append((name, wrapper))
    adapters = [p for _, w in wrappers for p in (w.lora_A, w.lora_B)]
    adapter_ids = {id(p) for p in adapters}
    before = {id(p): p.requires_grad for p in model.parameters() if id(p) not in adapter_ids}
    for p in model.parameters():
        p.requires_grad_(id(p) in adapter_ids)
    try:
        training.train(model, data, training.task_loss(data, rule=RULE), epochs, lr, batch_size, RULE, params=adapters,
                       optimizer=optimizer, momentum=momentum, weight_decay=weight_decay, schedule=schedule)
    finally:
        for p in model.parameters():
            if id(p) in before:
                p.requires_grad_(before[id(p)])
    for name, wrapper in wrappers:
        if merge:
            kl.set_module(model, name, _merged(wrapper))
        else:
            for p in wrapper.base.parameters():
                p.requires_grad_(False)
    return model


def _merged(wrapper: km.LoRALinear) -> nn.Module:
    base, delta = wrapper.base, wrapper.delta().detach()
    full = min(wrapper.in_features, wrapper.out_features)
    rank = state.layer_rank(base)
    if isinstance(base, km.FactorizedLinear) or rank < full:
        merged = lowrank.effective_weight(base) + delta.double()
        new = lowrank.truncate(base, rank, weight=merged)
        if not isinstance(new, km.FactorizedLinear):
            new.kmr_rank = rank
        return new
    mask = getattr(base, kl.MASK, None)
    if mask is not None:
        delta = delta * mask
    with torch.no_grad():
        base.weight.add_(delta.to(base.weight.dtype))
    return base
