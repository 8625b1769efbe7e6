"""The training loop shared by finetune, distill and lora.

Contract: `train(model, data, loss_fn, epochs, lr, batch_size, rule, params=None,
optimizer="adam", momentum=0.9, weight_decay=0.0, schedule="constant", before_epoch=None)`
runs the optimizer over `params` (default: every float parameter with requires_grad) for
`epochs` passes over `data` in a shuffled order drawn from a generator seeded with the
run context's seed (a trailing batch of a single example is skipped: BatchNorm cannot
train on it); `torch.manual_seed(seed)` is set first, so the same seed and thread
count give the same model. After every optimizer step the pruning masks are re-applied
(`layers.apply_masks`): zeroed weights stay zero. It reports `{"rule", "epoch",
"epochs", "loss"}` to the context's progress reporter after each epoch and leaves the
model in eval mode. A model that is not trainable, or data that does not fit it,
raises KmrError (KMR405 / KMR404). `before_epoch(epoch)` runs before each epoch (the
gradual pruning schedule uses it).

Optimizers (torch.optim's update arithmetic, written out: see `Adam`): `adam` (L2
weight decay added to the gradient, as torch.optim.Adam), `adamw` (decoupled decay,
as torch.optim.AdamW), `sgd` (momentum with dampening 0, L2 decay, as torch.optim.SGD).
`momentum` is SGD's momentum and Adam's beta1. Schedules set the learning rate before
every optimizer step t of T = epochs * ceil(len(data) / batch_size): `constant` lr,
`cosine` lr * (1 + cos(pi * t / T)) / 2, `step` lr * 0.1 ** floor(3 * t / T) (a tenth
after each third of training).

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
        if task == "span":
            return forward.span_loss(out, y)
        if task == "regression":
            return F.mse_loss(out, y.float().reshape(out.shape))
        ref = teacher_outputs(teacher, x, rule)
        return (1 - F.cosine_similarity(out.reshape(len(out), -1), ref.reshape(len(ref), -1), dim=1)).mean()
    return loss_fn


OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine", "step")


class Adam:
    """Adam (Kingma & Ba; torch.optim.Adam's single-tensor update); `weight_decay` is
    L2 added to the gradient (torch.optim.Adam) or, with `decoupled`, a shrink of the
    weights before the update (torch.optim.AdamW).

    Why not torch.optim.Adam: constructing any torch.optim optimizer imports
    torch._dynamo, which costs about 3.5 s on these machines, once per process, for
    every `kmr run` that trains. The update below is the same arithmetic.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled: bool = False):
        self.params = list(params)
        self.lr, (self.beta1, self.beta2), self.eps = float(lr), betas, eps
        self.weight_decay, self.decoupled = float(weight_decay), decoupled
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
            if self.weight_decay and self.decoupled:
                p.mul_(1 - self.lr * self.weight_decay)
            elif self.weight_decay:
                grad = grad.add(p, alpha=self.weight_decay)
            m.lerp_(grad, 1 - self.beta1)
            v.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
            denom = (v.sqrt() / correction2_sqrt).add_(self.eps)
            p.addcdiv_(m, denom, value=-self.lr / correction1)


class SGD:
    """SGD with momentum (dampening 0, not Nesterov) and L2 weight decay: torch.optim.SGD's
    update, written out for the same import-cost reason as `Adam`."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, weight_decay: float = 0.0):
        self.params = list(params)
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.buffers: list = [None] * len(self.params)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            grad = p.grad
            if self.weight_decay:
                grad = grad.add(p, alpha=self.weight_decay)
            if self.momentum:
                if self.buffers[i] is None:
                    self.buffers[i] = grad.detach().clone()
                else:
                    self.buffers[i].mul_(self.momentum).add_(grad)
                grad = self.buffers[i]
            p.add_(grad, alpha=-self.lr)


def make_optimizer(name: str, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0):
    if name == "sgd":
        return SGD(params, lr, momentum, weight_decay)
    if name in ("adam", "adamw"):
        return Adam(params, lr, betas=(momentum, 0.999), weight_decay=weight_decay, decoupled=name == "adamw")
    raise KmrError(error("KMR405", context.span(), f"unknown optimizer `{name}`", f"optimizers: {', '.join(OPTIMIZERS)}"))


def scheduled_lr(lr: float, schedule: str, t: int, total: int) -> float:
    """The learning rate of optimizer step t (0-based) of `total`."""
    if schedule == "constant" or total <= 0:
        return lr
    if schedule == "cosine":
        return lr * (1 + math.cos(math.pi * min(t, total) / total)) / 2
    if schedule == "step":
        return lr * 0.1 ** min(2, (3 * t) // total)
    raise KmrError(error("KMR405", context.span(), f"unknown schedule `{schedule}`", f"schedules: {', '.join(SCHEDULES)}"))


def _int(value, name: str, rule: str, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < lo:
        raise KmrError(error("KMR405", context.span(), f"{rule}: `{name}` must be an integer >= {lo}, got {value!r}"))
    return int(value)


def train(model: nn.Module, data: Dataset, loss_fn, epochs: int = 1, lr: float = 1e-3, batch_size: int = 64,
          rule: str = "finetune", params: list[torch.Tensor] | None = None, optimizer: str = "adam",
          momentum: float = 0.9, weight_decay: float = 0.0, schedule: str = "constant",
          before_epoch=None) -> nn.Module:
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
    for name, value, lo, hi in (("momentum", momentum, 0.0, 1.0), ("weight_decay", weight_decay, 0.0, 1.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise KmrError(error("KMR405", context.span(), f"{rule}: `{name}` must be in [{lo}, {hi}], got {value!r}"))
    opt = make_optimizer(str(optimizer), params, float(lr), float(momentum), float(weight_decay))
    scheduled_lr(float(lr), str(schedule), 0, 1)     # an unknown schedule fails before any training
    total = epochs * math.ceil(len(data) / batch_size)
    t = 0
    with fixed_threads(ctx.threads):
        first = next(iter(data.batches(1)))[0]
        model.eval()
        with torch.no_grad():
            forward.checked_output(model, first, ctx.span, f"`{data.name}`")
        model.train()
        try:
            for epoch in range(epochs):
                if before_epoch is not None:
                    before_epoch(epoch)
                seen, count = 0.0, 0
                for x, y in data.batches(batch_size, shuffle=True, generator=generator):
                    t += 1
                    if len(x) == 1 and len(data) > 1:
                        continue    # a trailing batch of one breaks BatchNorm in train mode
                    opt.lr = scheduled_lr(float(lr), str(schedule), t - 1, total)
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(model, x, y)
                    loss.backward()
                    opt.step()
                    kl.apply_masks(model)
                    seen, count = seen + loss.detach().item() * len(x), count + len(x)
                context.report(rule=rule, epoch=epoch + 1, epochs=epochs, loss=seen / max(1, count))
        finally:
            model.eval()
    return model


__all__ = ["Adam", "OPTIMIZERS", "SCHEDULES", "SGD", "make_optimizer", "require_data", "scheduled_lr", "require_trainable", "task_loss", "teacher_outputs", "train"]
