"""The standard meters, measured on a real model.

Contract (units: counts, bytes, seconds, ratios):
- `params(model)`: parameters of the result: every layer's `state.layer_params`
  (weights counted by elements whatever their storage: factorized layers both factors,
  unmerged LoRA its adapters) + parameters outside the layers.
- `nonzero(model)`: non-zero elements of the layers' weights + every other parameter.
- `trainable_params(model)`: float parameters that would receive gradients (0 when the
  model is not trainable, see `state.is_trainable`).
- `size(model, recipe=None)`: bytes of the artifact `artifact.save` writes.
- `macs(model, input_shape, input_dtype)`: dense MACs of one forward on the example
  input: FlopCounterMode FLOPs / 2, int8 dynamic Linears counted as float Linears,
  weight-only integer layers as the float layer they dequantize to, factorized layers
  and LoRA adapters as the matmuls they run. Sparsity does not reduce MACs.
- `latency(model, batch, input_shape, ...)`: median seconds of `repeats` forwards after
  `warmup`, with torch's thread count fixed (argument, else the run context's, else the
  current one) and restored afterwards. `latency_paired(model, baseline, ...)` (also
  `latency.paired`) times both in alternating rounds and returns both medians. Each model
  is timed as the artifact loader runs it: sibling int8 Linears on one input fused into
  one GEMM (`fusion.fused`, bit-identical outputs, nothing saved changes; the links are
  removed afterwards unless the model came with them). The other meters read the model
  as it is (fusion never changes an output).
- `accuracy(model, data)`: top-1 agreement with the targets (classification data).
- `loss(model, data)`: mean cross-entropy (classification) or mean squared error
  (regression); data without targets: KMR408.
- `fidelity(model, baseline, data)`: classification: the fraction of examples where
  the argmax equals the baseline's; otherwise the mean cosine similarity of outputs.
"""

from __future__ import annotations

import statistics
import time
from contextlib import ExitStack, contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from kmr_dsl.diagnostics import KmrError, Span, error
from kmr_dsl.runtime import context, forward, fusion, layers as kl, state
from kmr_dsl.runtime import int8_kernels as k8
from kmr_dsl.runtime.data import Dataset

EVAL_BATCH = 256


def _outside_layers_params(model: nn.Module) -> list[torch.Tensor]:
    layer_ids = set()
    for _, layer in kl.logical_layers(model):
        layer_ids.update(id(p) for p in layer.parameters())
    return [p for p in model.parameters() if id(p) not in layer_ids]


def params(model: nn.Module) -> int:
    total = sum(state.layer_params(n, m) for n, m in kl.logical_layers(model))
    return int(total + sum(p.numel() for p in _outside_layers_params(model)))


def nonzero(model: nn.Module) -> int:
    total = sum(state.layer_nonzero(n, m) for n, m in kl.logical_layers(model))
    return int(total + sum(p.numel() for p in _outside_layers_params(model)))


def trainable_params(model: nn.Module) -> int:
    return state.trainable_params(model)


def size(model: nn.Module, recipe: dict | None = None) -> int:
    """Bytes of the artifact `artifact.save(model, PATH, recipe)` writes (anywhere: the
    file's bytes do not depend on its location), measured by serializing the very same
    file in memory: no temporary file exists that a killed run could leave behind."""
    from kmr_dsl.runtime import artifact
    return artifact.nbytes(model, recipe or {})


def macs(model: nn.Module, input_shape, input_dtype: str = "float32") -> int:
    x = forward.example_input(input_shape, input_dtype, batch=tuple(input_shape)[0] if input_shape else 1)
    return count_macs(model, x)[0]


def count_macs(model: nn.Module, x: torch.Tensor, modules=()) -> tuple[int, dict[str, int]]:
    """(total MACs, MACs per logical layer) of one forward on `x`; the per-layer table
    also holds the (inclusive) MACs of the named `modules` (attention modules)."""
    from torch.utils.flop_counter import FlopCounterMode

    names = {id(m): n for n, m in kl.logical_layers(model)}
    extra: dict[str, int] = {}
    hooks = []
    for name, module in model.named_modules():
        # FlopCounterMode counts nothing for torch's int8 kernels: count them by shape
        if k8.is_int8_kernel(module):
            owner = next((n for n in sorted(names.values(), key=len, reverse=True)
                          if name == n or name.startswith(n + ".")), name)

            def hook(mod, inputs, out, owner=owner):
                if isinstance(mod, k8.StaticConv2d):
                    kh, kw = mod.kernel_size
                    macs = out.numel() * (mod.in_channels // mod.groups) * kh * kw
                else:
                    macs = inputs[0].numel() // mod.in_features * mod.in_features * mod.out_features
                extra[owner] = extra.get(owner, 0) + macs
            hooks.append(module.register_forward_hook(hook))
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            model(x)
    finally:
        for h in hooks:
            h.remove()
    root = type(model).__name__
    per_layer: dict[str, int] = {}
    for key, ops in counter.get_flop_counts().items():
        # keys are "RootClass.qualified.name"; a layer's count includes its children
        if not key.startswith(root + "."):
            continue
        name = key[len(root) + 1:]
        if name in names.values() or name in modules:
            per_layer[name] = sum(ops.values()) // 2
    for owner, count in extra.items():
        per_layer[owner] = per_layer.get(owner, 0) + count
    total = counter.get_total_flops() // 2 + sum(extra.values())
    return int(total), per_layer


@contextmanager
def fixed_threads(threads: int | None):
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def latency(model: nn.Module, batch: int = 1, input_shape=(1,), input_dtype: str = "float32",
            repeats: int = 20, warmup: int = 3, threads: int | None = None) -> float:
    return _timed([model], batch, input_shape, input_dtype, repeats, warmup, threads)[0]


def latency_paired(model: nn.Module, baseline: nn.Module, batch: int = 1, input_shape=(1,),
                   input_dtype: str = "float32", repeats: int = 20, warmup: int = 3,
                   threads: int | None = None) -> tuple[float, float]:
    """(model, baseline) latencies timed in alternating rounds, so that both medians see
    the same machine load: what a line comparing a result with `baseline.latency` needs
    on a shared machine. The session uses it for every `latency` reading of a result."""
    model_s, baseline_s = _timed([model, baseline], batch, input_shape, input_dtype, repeats, warmup, threads)
    return model_s, baseline_s


latency.paired = latency_paired     # how PipelineSession finds the paired form of a meter


def _timed(models, batch, input_shape, input_dtype, repeats, warmup, threads) -> list[float]:
    x = forward.example_input(input_shape, input_dtype, batch=batch)
    for m in models:
        m.eval()
    times = [[] for _ in models]
    with ExitStack() as linked, fixed_threads(threads or context.current().threads), torch.no_grad():
        for m in models:
            linked.enter_context(fusion.fused(m))     # the form the artifact runs in
        for _ in range(warmup):
            for m in models:
                m(x)
        for r in range(max(1, repeats)):
            order = range(len(models)) if r % 2 == 0 else reversed(range(len(models)))
            for i in order:                    # alternate who goes first: no drift favours one
                start = time.perf_counter()
                models[i](x)
                times[i].append(time.perf_counter() - start)
    return [float(statistics.median(t)) for t in times]


def _outputs(model: nn.Module, data: Dataset, span: Span | None = None):
    model.eval()
    outs = []
    with torch.no_grad():
        for i, (x, _) in enumerate(data.batches(EVAL_BATCH)):
            outs.append(forward.checked_output(model, x, span, f"`{data.name}`") if i == 0 else forward.output(model, x))
    return torch.cat(outs) if outs else torch.zeros(0)


def _need_targets(data: Dataset, meter: str, span: Span | None):
    if data.targets is None:
        raise KmrError(error("KMR408", span or Span.unknown(), f"{meter}({data.name}) needs data with targets",
                             hint="use labelled data, or fidelity() for data without targets"))


def accuracy(model: nn.Module, data: Dataset, span: Span | None = None) -> float:
    _need_targets(data, "accuracy", span)
    if data.task not in ("classification", "span"):
        raise KmrError(error("KMR408", span or Span.unknown(), f"accuracy({data.name}) needs class targets",
                             hint="use loss() for regression data"))
    out = _outputs(model, data, span)
    if len(data) == 0:
        return 0.0
    if data.task == "span":
        # question answering: exact match of the predicted (start, end) with the answer's
        return float(forward.span_match(_span_output(out, data, "accuracy", span), data.targets).float().mean())
    return float((out.argmax(dim=-1) == data.targets).float().mean())


def _span_output(out, data: Dataset, meter: str, span: Span | None):
    if not forward.is_span_output(out):
        raise KmrError(error("KMR408", span or Span.unknown(),
                             f"{meter}({data.name}) has (start, end) targets but the model does not answer spans",
                             f"its output has shape {tuple(out.shape)}, not (batch, 2, sequence): start and end "
                             "logits of a question-answering head",
                             hint="use a question-answering model (e.g. BertForQuestionAnswering), or class targets"))
    return out


def loss(model: nn.Module, data: Dataset, span: Span | None = None) -> float:
    _need_targets(data, "loss", span)
    out = _outputs(model, data, span)
    if data.task == "classification":
        return float(F.cross_entropy(out, data.targets))
    if data.task == "span":
        return float(forward.span_loss(_span_output(out, data, "loss", span), data.targets))
    return float(F.mse_loss(out, data.targets.float().reshape(out.shape)))


def fidelity(model: nn.Module, baseline: nn.Module, data: Dataset, span: Span | None = None) -> float:
    out = _outputs(model, data, span)
    ref = _outputs(baseline, data, span)
    if len(data) == 0:
        return 1.0
    if data.task == "classification":
        return float((out.argmax(dim=-1) == ref.argmax(dim=-1)).float().mean())
    if data.task == "span" and forward.is_span_output(out):
        return float(forward.span_match(out, ref.argmax(dim=-1)).float().mean())   # the same answer span
    return float(F.cosine_similarity(out.reshape(len(out), -1), ref.reshape(len(ref), -1), dim=1).mean())


__all__ = ["accuracy", "fidelity", "fixed_threads", "latency", "latency_paired", "loss", "macs", "nonzero", "params", "size",
           "trainable_params"]
