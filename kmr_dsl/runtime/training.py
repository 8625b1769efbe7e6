"""The training loop shared by finetune, distill and lora.

Contract: `train(model, data, loss_fn, epochs, lr, batch_size, rule, params=None)`
runs Adam over `params` (default: every float parameter with requires_grad) for
`epochs` passes over `data` in a shuffled order drawn from a generator seeded with the
run context's seed (a trailing batch of a single example is skipped: BatchNorm cannot
train on it); `torch.manual_seed(seed)` is set first, so the same seed and thread
count give the same model. After every optimizer step the pruning masks are re-applied
(`layers.apply_masks`): zeroed weights stay zero. It reports `{"rule", "epoch",
"epochs", "loss"}` to the context's progress reporter after each epoch and leaves the
model in eval mode. A model that is not trainable, or data that does not fit it,
raises KmrError (KMR405 / KMR404).

`task_loss(data, teacher)` is the loss of plain fine-tuning: cross-entropy on class
targets, MSE on float targets and, for data without targets, 1 - cosine similarity to
the teacher's outputs (label-free fine-tuning recovers the baseline's behaviour; the
teacher defaults to the run context's baseline).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from kmr_dsl.diagnostics import KmrError, error
from kmr_dsl.runtime import context, forward, layers as kl, state
from kmr_dsl.runtime.data import Dataset
from kmr_dsl.runtime.meters import fixed_threads


def require_trainable(model: nn.Module, rule: str) -> None:
    if not state.is_trainable(model):
        why = ("it holds integer-quantized layers" if state.has_integer_layer(model)
               else "no float parameter requires gradients")
        raise KmrError(error("KMR405", context.span(), f"{rule}: the model is not trainable: {why}",
                             hint="run training steps before integer quantization"))


def require_data(data, rule: str) -> Dataset:
    if not isinstance(data, Dataset):
        raise KmrError(error("KMR405", context.span(), f"{rule}: `data` must be a dataset, got {type(data).__name__}",
                             hint="pass a `data` declaration"))
    if len(data) == 0:
        raise KmrError(error("KMR403", context.span(), f"{rule}: the dataset `{data.name}` is empty"))
    return data


def teacher_outputs(teacher: nn.Module | None, x: torch.Tensor, rule: str) -> torch.Tensor:
    if teacher is None:
        raise KmrError(error("KMR405", context.span(), f"{rule}: data without targets needs a teacher (the baseline)",
                             hint="run inside `kmr run`, which provides the baseline, or pass teacher ="))
    teacher.eval()
    with torch.no_grad():
        return forward.output(teacher, x)


def task_loss(data: Dataset, teacher: nn.Module | None = None, rule: str = "finetune"):
    teacher = teacher if teacher is not None else context.current().baseline
    task = data.task

    def loss_fn(model, x, y):
        out = forward.output(model, x)
        if task == "classification":
            return F.cross_entropy(out, y)
        if task == "regression":
            return F.mse_loss(out, y.float().reshape(out.shape))
        ref = teacher_outputs(teacher, x, rule)
        return (1 - F.cosine_similarity(out.reshape(len(out), -1), ref.reshape(len(ref), -1), dim=1)).mean()
    return loss_fn


class Adam:
    """Adam (Kingma & Ba; torch.optim.Adam's single-tensor update, no weight decay).

    Why not torch.optim.Adam: constructing any torch.optim optimizer imports
    torch._dynamo, which costs about 3.5 s on these machines, once per process, for
    every `kmr run` that trains. The update below is the same arithmetic.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.lr, (self.beta1, self.beta2), self.eps = float(lr), betas, eps
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        correction1 = 1 - self.beta1 ** self.steps
        correction2_sqrt = math.sqrt(1 - self.beta2 ** self.steps)
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            if p.grad is None:
                continue
            grad = p.grad
            m.lerp_(grad, 1 - self.beta1)
            v.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
            denom = (v.sqrt() / correction2_sqrt).add_(self.eps)
            p.addcdiv_(m, denom, value=-self.lr / correction1)


def _int(value, name: str, rule: str, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < lo:
        raise KmrError(error("KMR405", context.span(), f"{rule}: `{name}` must be an integer >= {lo}, got {value!r}"))
    return int(value)


def train(model: nn.Module, data: Dataset, loss_fn, epochs: int = 1, lr: float = 1e-3, batch_size: int = 64,
          rule: str = "finetune", params: list[torch.Tensor] | None = None) -> nn.Module:
    ctx = context.current()
    epochs = _int(epochs, "epochs", rule)
    batch_size = _int(batch_size, "batch_size", rule)
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise KmrError(error("KMR405", ctx.span or context.span(), f"{rule}: `lr` must be a positive number, got {lr!r}"))
    if params is None:
        params = [p for p in model.parameters() if p.requires_grad and p.is_floating_point()]
    if not params:
        raise KmrError(error("KMR405", context.span(), f"{rule}: nothing to train (no parameter requires gradients)"))
    torch.manual_seed(ctx.seed)
    generator = torch.Generator().manual_seed(ctx.seed)
    optimizer = Adam(params, lr=float(lr))
    with fixed_threads(ctx.threads):
        first = next(iter(data.batches(1)))[0]
        model.eval()
        with torch.no_grad():
            forward.checked_output(model, first, ctx.span, f"`{data.name}`")
        model.train()
        try:
            for epoch in range(epochs):
                total, count = 0.0, 0
                for x, y in data.batches(batch_size, shuffle=True, generator=generator):
                    if len(x) == 1 and len(data) > 1:
                        continue    # a trailing batch of one breaks BatchNorm in train mode
                    optimizer.zero_grad(set_to_none=True)
                    loss = loss_fn(model, x, y)
                    loss.backward()
                    optimizer.step()
                    kl.apply_masks(model)
                    total, count = total + loss.detach().item() * len(x), count + len(x)
                context.report(rule=rule, epoch=epoch + 1, epochs=epochs, loss=total / max(1, count))
        finally:
            model.eval()
    return model


__all__ = ["Adam", "require_data", "require_trainable", "task_loss", "teacher_outputs", "train"]
