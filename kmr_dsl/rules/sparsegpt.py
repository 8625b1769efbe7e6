"""`sparsegpt`: one-shot pruning of Linear layers with SparseGPT's weight updates.

Contract (stdlib/rules.kmr): requires `layer.bits >= 16` and `n <= m`; effect, as
`prune`'s: unstructured (n = m = 0) `layer.density *= 1 - amount`, the layer keeping
round_half_up(nnz * (1 - amount)) of its nnz non-zero weights (a factorized layer's
prune count is shared between its factors in proportion to their non-zeros); N:M (n, m
> 0) `layer.density *= n / m`, in every group of m consecutive inputs of a row at most n
kept (a shorter tail group keeps round_half_up(len * n / m)), exact on a dense layer whose
input width is a multiple of m. The kept weights are updated to compensate
(`kmr_dsl.runtime.sparsegpt`) using Hessians of the inputs the layers receive from the
first `samples` examples of `calibration` (one pass over the float model). The zeros
are recorded as a pruning mask, so they survive later training.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from kmr_dsl.core import step
from kmr_dsl.rules import calibration as calibration_
from kmr_dsl.rules import checks
from kmr_dsl.runtime import layers as kl
from kmr_dsl.runtime import sparsegpt as algorithm
from kmr_dsl.runtime import training
from kmr_dsl.runtime.gptq import NotPositiveDefinite

RULE = "sparsegpt"


def apply(model: nn.Module, layers, amount: float = 0.5, n: int = 0, m: int = 0, calibration=None,
          samples: int = 128, dampening: float = 0.01):
    amount = checks.number(RULE, "amount", amount, 0.0, 1.0, hi_open=True)
    n = checks.integer(RULE, "n", n, 0, 16)
    m = checks.integer(RULE, "m", m, 0, 16)
    samples = checks.integer(RULE, "samples", samples, 1, 1 << 20)
    dampening = checks.number(RULE, "dampening", dampening, 0.0, 1.0, lo_open=True)
    if n > m:
        checks.fail(RULE, f"precondition `n <= m` fails (n = {n}, m = {m})")
    data = training.require_data(calibration, RULE)
    groups = calibration_.linear_leaves(model, layers, RULE)
    targets = [leaf for leaves in groups for leaf in leaves]
    if not targets or (n == m and n > 0) or (n == 0 and amount == 0):
        return model
    stats = calibration_.observe(model, data.inputs[:samples], targets,
                                 lambda leaf: calibration_.Hessian(leaf.in_features), RULE)
    for leaves in groups:
        alive = [int(kl.current_mask(leaf).sum()) for _, leaf in leaves]
        # the count `prune` keeps, in the same exact arithmetic (a knob's 0.35 is 7/20)
        keep = int(step.round_half_up(step.NUMBERS.mul(sum(alive), step.NUMBERS.sub(1, amount))))
        drops = step.shares(sum(alive) - keep, alive)
        for (leaf_name, leaf), nnz, drop in zip(leaves, alive, drops):
            # in the layer's own dtype: the kept count is exact there (a float32 1e-30
            # would be a float16 zero)
            weight = leaf.weight.detach()
            weight = torch.where(kl.current_mask(leaf), weight, torch.zeros_like(weight))
            try:
                new = algorithm.prune(weight, stats[leaf_name].value(), keep=nnz - drop, n=n, m=m,
                                      dampening=dampening)
            except NotPositiveDefinite as exc:
                checks.fail(RULE, f"`{leaf_name}`: {exc}", hint="raise `dampening` or give more calibration samples")
            with torch.no_grad():
                leaf.weight.copy_(new)
            kl.set_mask(leaf, leaf.weight.detach() != 0)
    return model
