"""`distill`: train the model to match a teacher (knowledge distillation).

Contract (docs/design.md): requires `model.trainable`; no effect on the state (masks
kept, as in finetune). The teacher is the `teacher` argument (an nn.Module, resolved
by the runner) or, by default, the run context's baseline. Loss per batch:
- class targets, `loss = kl` (the default): alpha * CE(student, y) + (1 - alpha) * T^2 *
  KL(softmax(teacher / T) || softmax(student / T)) (Hinton et al.; KL averaged over the
  batch); `loss = mse`: alpha * CE(student, y) + (1 - alpha) * MSE(student logits,
  teacher logits) (logit matching, Ba & Caruana; no temperature);
- float targets: alpha * MSE(student, y) + (1 - alpha) * MSE(student, teacher);
- no targets: 1 - cosine similarity between student and teacher outputs (embeddings).
The teacher runs in eval mode without gradients. Optimizer options as in finetune.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from kmr_dsl.rules import checks
from kmr_dsl.runtime import context, forward, training

RULE = "distill"


def apply(model: nn.Module, layers, data, teacher=None, temperature: float = 4.0, alpha: float = 0.5,
          epochs: int = 1, lr: float = 1e-3, batch_size: int = 64, loss: str = "kl", optimizer: str = "adam",
          momentum: float = 0.9, weight_decay: float = 0.0, schedule: str = "constant"):
    training.require_trainable(model, RULE)
    data = training.require_data(data, RULE)
    temperature = checks.number(RULE, "temperature", temperature, 1.0, 20.0)
    alpha = checks.number(RULE, "alpha", alpha, 0.0, 1.0)
    kind = checks.choice(RULE, "loss", loss, ("kl", "mse"))
    teacher = teacher if teacher is not None else context.current().baseline
    if not isinstance(teacher, nn.Module):
        checks.fail(RULE, "no teacher model", hint="pass teacher = a model, or run inside `kmr run` (baseline)")
    task = data.task

    def loss_fn(student, x, y):
        out = forward.output(student, x)
        ref = training.teacher_outputs(teacher, x, RULE)
        if task == "span":      # start and end: two classifications over the positions
            out, ref, y = out.reshape(-1, out.shape[-1]), ref.reshape(-1, ref.shape[-1]), y.reshape(-1)
        if task in ("classification", "span") and kind == "mse":
            return alpha * F.cross_entropy(out, y) + (1 - alpha) * F.mse_loss(out, ref)
        if task in ("classification", "span"):
            soft = F.kl_div(F.log_softmax(out / temperature, dim=-1), F.log_softmax(ref / temperature, dim=-1),
                            reduction="batchmean", log_target=True)
            return alpha * F.cross_entropy(out, y) + (1 - alpha) * temperature ** 2 * soft
        if task == "regression":
            return alpha * F.mse_loss(out, y.float().reshape(out.shape)) + (1 - alpha) * F.mse_loss(out, ref)
        return (1 - F.cosine_similarity(out.reshape(len(out), -1), ref.reshape(len(ref), -1), dim=1)).mean()

    return training.train(model, data, loss_fn, epochs, lr, batch_size, RULE, optimizer=optimizer,
                          momentum=momentum, weight_decay=weight_decay, schedule=schedule)
