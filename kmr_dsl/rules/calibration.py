"""Calibration: statistics of the activations that reach chosen layers on sample data.

Contract: `observe(model, inputs, modules, make)` runs the model once over `inputs` (in
batches of BATCH, eval mode, no gradients; the model's training flag is restored) with a
forward hook on each `(name, module)`; `make(module)` builds the accumulator the hook
feeds with the module's input (the first positional argument) and output. It returns
{name: accumulator}. With `stop_early` (one module) each batch's pass ends right after
that module ran: what comes after it is not computed. A module no input reached fails with KMR405 naming it. The accumulators:
- `Hessian`: H = 2/n X^T X over every row x of the inputs (float64), GPTQ's and
  SparseGPT's second-order statistic;
- `ChannelStats`: per input channel (the last dimension) the largest |x| and the mean
  |x| over every row (for a convolution the last dimension is a spatial one: read only
  the ranges there), what SmoothQuant and AWQ scale by; also the observed min and max of
  the whole input and of the output, a static quantizer's ranges; and, if asked, the
  first `keep_rows` input rows themselves (AWQ's search reproduces outputs on them).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from kmr_dsl.rules import checks
from kmr_dsl.runtime import forward
from kmr_dsl.runtime import layers as kl

BATCH = 16


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.detach().reshape(-1, x.shape[-1]).double()


class Hessian:
    def __init__(self, cols: int):
        self.sum = torch.zeros(cols, cols, dtype=torch.float64)
        self.rows = 0

    def add(self, x: torch.Tensor, out=None) -> None:
        x = _rows(x)
        self.sum += x.T @ x
        self.rows += x.shape[0]

    def value(self) -> torch.Tensor:
        return (2.0 / self.rows) * self.sum


class ChannelStats:
    def __init__(self, keep_rows: int = 0):
        self.keep_rows = keep_rows      # the first rows of input kept as `sample`
        self.sample = None
        self.absmax = self.abssum = None
        self.low = self.out_low = float("inf")
        self.high = self.out_high = float("-inf")
        self.rows = 0

    def add(self, x: torch.Tensor, out: torch.Tensor | None = None) -> None:
        rows = _rows(x)
        absmax, abssum = rows.abs().amax(dim=0), rows.abs().sum(dim=0)
        self.absmax = absmax if self.absmax is None else torch.maximum(self.absmax, absmax)
        self.abssum = abssum if self.abssum is None else self.abssum + abssum
        self.low, self.high = min(self.low, float(x.min())), max(self.high, float(x.max()))
        if isinstance(out, torch.Tensor):
            self.out_low, self.out_high = min(self.out_low, float(out.min())), max(self.out_high, float(out.max()))
        if self.keep_rows:
            taken = 0 if self.sample is None else self.sample.shape[0]
            if taken < self.keep_rows:
                part = rows[: self.keep_rows - taken]
                self.sample = part if self.sample is None else torch.cat([self.sample, part])
        self.rows += rows.shape[0]

    @property
    def absmean(self) -> torch.Tensor:
        return self.abssum / max(1, self.rows)


def linear_leaves(model: nn.Module, layers, rule: str) -> list[list[tuple[str, nn.Module]]]:
    """Each selected layer's float Linear leaves (a factorized layer has two), GPT-2's
    Conv1D turned into the equal nn.Linear in the model first: what GPTQ and SparseGPT
    calibrate and change."""
    groups = []
    for name, layer in layers:
        checks.kinds(rule, name, layer, ("Linear",))
        checks.float_weights(rule, name, layer)
        for leaf_name, leaf in kl.leaves(name, layer):
            if kl.is_conv1d(leaf):          # GPT-2's Conv1D: the equal nn.Linear, [out, in]
                kl.set_module(model, leaf_name, kl.as_linear(leaf))
        leaves = kl.leaves(name, kl.get_module(model, name))
        for leaf_name, leaf in leaves:
            if not isinstance(leaf, nn.Linear):
                checks.fail(rule, f"`{leaf_name}` is a {type(leaf).__name__}, not a float Linear")
        groups.append(leaves)
    return groups


class _Stop(Exception):
    """Raised by the hook of the one observed module to end a pass there."""


def observe(model: nn.Module, inputs: torch.Tensor, modules, make, rule: str, stop_early: bool = False) -> dict:
    accumulators = {name: make(module) for name, module in modules}

    def hook(mod, args, out, acc):
        acc.add(args[0], out)
        if stop_early:
            raise _Stop

    handles = [module.register_forward_hook(lambda mod, args, out, acc=accumulators[name]: hook(mod, args, out, acc))
               for name, module in modules]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(inputs), BATCH):
                try:
                    forward.checked_output(model, inputs[start:start + BATCH], what="the calibration data")
                except _Stop:
                    pass
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    for name, acc in accumulators.items():
        if acc.rows == 0:
            checks.fail(rule, f"no calibration data reached `{name}`",
                        hint="select layers the model's forward pass uses")
    return accumulators


__all__ = ["BATCH", "ChannelStats", "Hessian", "observe"]
