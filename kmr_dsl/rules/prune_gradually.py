"""`prune_gradually`: gradual magnitude pruning during training (the SparseML GMP /
NNCF schedule; Zhu & Gupta 2017).

Contract (stdlib/rules.kmr): requires `layer.bits >= 16`, `initial <= final` and
`model.trainable`; effect `layer.density *= 1 - final`, exactly as `prune(amount =
final)` with the same `method`: at the end, of the N0 weights each layer (magnitude)
or the whole selection (global) had non-zero when the step began, the
round_half_up(N0 * (1 - final)) largest by |w| are kept — the same count `prune` keeps.

Schedule: `epochs` epochs of training on `data` (the task loss of finetune, the
optimizer options of `training.train`). Before epoch e (0-based) the target sparsity is
s(e) = initial + (final - initial) * c(t), t = e / (epochs - 1) (t = 1 for one epoch),
with c(t) = 1 - (1 - t)^3 (`cubic`: fast early, gentle late) or c(t) = t (`linear`);
the weights kept then are the largest among those still kept, so the masks only
shrink. The last epoch trains at the final sparsity, recovering from the last cut. The
masks are the ones `prune` records (`layers.set_mask`): training steps later in the
pipeline keep them.
"""

from __future__ import annotations

import torch.nn as nn

from kmr_dsl.rules import checks
from kmr_dsl.rules.prune import ACCEPTS, keep_count, keep_top
from kmr_dsl.runtime import layers as kl
from kmr_dsl.runtime import training

RULE = "prune_gradually"
CURVES = ("cubic", "linear")


def sparsity_at(epoch: int, epochs: int, initial: float, final: float, curve: str) -> float:
    """The target sparsity before `epoch` (0-based) of `epochs`."""
    t = 1.0 if epochs <= 1 else epoch / (epochs - 1)
    c = 1 - (1 - t) ** 3 if curve == "cubic" else t
    return final if t >= 1 else initial + (final - initial) * c   # the last cut is `final` itself


def apply(model: nn.Module, layers, final: float, data, initial: float = 0.0, epochs: int = 4,
          curve: str = "cubic", method: str = "magnitude", lr: float = 1e-3, batch_size: int = 64,
          optimizer: str = "adam", momentum: float = 0.9, weight_decay: float = 0.0, schedule: str = "constant"):
    final = checks.number(RULE, "final", final, 0.0, 1.0, hi_open=True)
    initial = checks.number(RULE, "initial", initial, 0.0, 1.0, hi_open=True)
    if initial > final:
        checks.fail(RULE, f"precondition `initial <= final` fails (initial = {initial}, final = {final})")
    curve = checks.choice(RULE, "curve", curve, CURVES)
    method = checks.choice(RULE, "method", method, ("magnitude", "global"))
    training.require_trainable(model, RULE)
    data = training.require_data(data, RULE)
    for name, layer in layers:
        checks.kinds(RULE, name, layer, ACCEPTS)
        checks.float_weights(RULE, name, layer)
    groups = ([[leaf for leaf in kl.leaves(name, layer)] for name, layer in layers] if method == "magnitude"
              else [[leaf for name, layer in layers for leaf in kl.leaves(name, layer)]])
    start = [sum(int(kl.current_mask(leaf).sum()) for _, leaf in group) for group in groups]

    def before_epoch(epoch: int) -> None:
        s = sparsity_at(epoch, int(epochs), initial, final, curve)
        for group, n0 in zip(groups, start):
            keep_top(group, keep_count(n0, s))

    return training.train(model, data, training.task_loss(data, rule=RULE), epochs, lr, batch_size, RULE,
                          optimizer=optimizer, momentum=momentum, weight_decay=weight_decay, schedule=schedule,
                          before_epoch=before_epoch)
