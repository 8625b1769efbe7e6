"""`finetune`: train the whole model on data, keeping pruned weights at zero.

The optimizer (`adam`, `adamw`, `sgd`), `momentum`, `weight_decay` and the learning-rate
`schedule` are those of `training.train`.

Contract (docs/design.md): requires `model.trainable`; no effect on the state
(masks are re-applied after every step, so density is unchanged; frozen layers stay
frozen because only parameters with requires_grad are trained). The loss follows the
data (`training.task_loss`): cross-entropy on class targets, MSE on float targets,
1 - cosine similarity to the baseline's outputs for data without targets.
Deterministic for a fixed run-context seed.
"""

from __future__ import annotations

import torch.nn as nn

from kmr_dsl.runtime import training

RULE = "finetune"


def apply(model: nn.Module, layers, data, epochs: int = 1, lr: float = 1e-3, batch_size: int = 64,
          optimizer: str = "adam", momentum: float = 0.9, weight_decay: float = 0.0, schedule: str = "constant"):
    training.require_trainable(model, RULE)
    data = training.require_data(data, RULE)
    return training.train(model, data, training.task_loss(data, rule=RULE), epochs, lr, batch_size, RULE,
                          optimizer=optimizer, momentum=momentum, weight_decay=weight_decay, schedule=schedule)
