"""Translations torch's TorchScript ONNX exporter lacks, for `kmr export --format onnx`.

Contract: `onnx_ops.register(opset)` before `torch.onnx.export(..., dynamo=False)` puts
these symbolic functions in torch's registry (once per process; `register` says why they
stay). `quiet_stdout()` keeps the exporter's C++ graph dump off stdout.

Why: transformers 5 builds every decoder's causal mask through `masking_utils`, which
looks for packed sequences in the position ids with `torch.diff` and then
`(diff != 1).cumsum(-1)`. Traced, both reach the exporter: `aten::diff` has no
symbolic at all (GPT-2, Llama and every other decoder failed with KMR521), and the
built-in `aten::cumsum` passes a bool tensor to ONNX `CumSum`, which accepts only
numbers (onnxruntime then refuses the file). torch's eager `cumsum` of a bool tensor
counts in int64, so that is what the translation casts to.

The translations are the operators' definitions, not approximations:
- `diff(x, n, dim, prepend, append)`: concatenate prepend, x, append along `dim`, then n
  times `y[1:] - y[:-1]` along `dim` (bool tensors: `y[1:] != y[:-1]`, as torch does).
- `cumsum(x, dim, dtype)`: ONNX `CumSum`, with x cast to `dtype` when given, and a bool
  x cast to int64.
Feeding them the transformers mask (rather than, say, giving the model an attention
mask so that path is skipped) keeps the model's own forward as the thing exported, for
every architecture and any forward signature.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

import torch
from torch.onnx import JitScalarType, symbolic_helper as sh

_LONG = torch.iinfo(torch.int64).max


def _const(g, values):
    return g.op("Constant", value_t=torch.tensor(values, dtype=torch.int64))


def _is_bool(value) -> bool:
    return JitScalarType.from_value(value, JitScalarType.UNDEFINED) == JitScalarType.BOOL


@sh.parse_args("v", "i", "i", "v", "v")
def _diff(g, x, n, dim, prepend, append):
    parts = [p for p in (prepend, x, append) if not sh._is_none(p)]
    y = g.op("Concat", *parts, axis_i=dim) if len(parts) > 1 else x
    boolean = _is_bool(x)
    for _ in range(n):
        later = g.op("Slice", y, _const(g, [1]), _const(g, [_LONG]), _const(g, [dim]))
        earlier = g.op("Slice", y, _const(g, [0]), _const(g, [-1]), _const(g, [dim]))
        y = g.op("Xor", later, earlier) if boolean else g.op("Sub", later, earlier)
    return y


@sh.parse_args("v", "i", "none")
def _cumsum(g, x, dim, dtype=None):
    target = None
    if dtype is not None and not sh._is_none(dtype):
        target = JitScalarType(sh._get_const(dtype, "i", "dtype"))
    elif _is_bool(x):
        target = JitScalarType.INT64
    if target is not None:
        x = g.op("Cast", x, to_i=target.onnx_type())
    return g.op("CumSum", x, g.op("Constant", value_t=torch.tensor(dim, dtype=torch.int64)))


SYMBOLICS = {"aten::diff": _diff, "aten::cumsum": _cumsum}


@contextmanager
def quiet_stdout():
    """Silence file descriptor 1 while exporting: when an operator fails, torch's C++ side
    prints the whole traced graph (thousands of lines for a transformer) to stdout, where
    it would bury the diagnostic and break `--json`; the exception keeps the message."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:     # no file descriptor 1 (an embedding host): nothing to silence
        yield
        return
    with open(os.devnull, "wb") as null:
        os.dup2(null.fileno(), 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


_DONE: set[int] = set()


def register(opset: int) -> None:
    """Register the translations for `opset`, once per process. They stay registered:
    torch cannot take back a symbolic for an operator it has none of (after
    `unregister_custom_op_symbolic("aten::diff")` its exporter fails with "min() arg is
    an empty sequence" instead of naming the operator), and being the operators'
    definitions they are right for any export in the process."""
    if opset in _DONE:
        return
    for name, fn in SYMBOLICS.items():
        torch.onnx.register_custom_op_symbolic(name, fn, opset)
    _DONE.add(opset)


__all__ = ["SYMBOLICS", "quiet_stdout", "register"]
