"""Calling a model: inputs in, one output tensor out, shape errors as diagnostics.

Contract: `output(model, x)` runs the model and returns a tensor (`as_tensor`): a
tensor output as is; a Hugging Face output (a `ModelOutput` or a dict), by the first of
- `logits` of a task head: (batch, classes) as is (sequence and image classification);
  a (batch, sequence, vocabulary) causal-LM output gives its last position, the
  next-token distribution (batch, vocabulary);
- `start_logits` / `end_logits` (question answering): stacked to (batch, 2, sequence),
  so an argmax reads (start, end) and fidelity compares both;
- `last_hidden_state` of a (batch, sequence, hidden) encoder: mean-pooled over the
  sequence (the sentence embedding of sentence-transformers' mean pooling, padding
  included);
- `pooler_output` flattened to (batch, features) (a vision backbone's pooled
  features; also what a 4-D `last_hidden_state` falls back to);
- `last_hidden_state` of any other rank as is;
and a tuple's first element. `span_loss` / `span_match` read a question-answering output
(batch, 2, sequence) against (start, end) targets (the data's task "span"): the mean
cross-entropy of start and end (transformers' QA loss), and exact match (both right).
`checked_output` does the same but turns a shape error (the data does
not fit the model) into KmrError KMR404. `example_input(shape, dtype, batch)` is the
deterministic input that MACs and latency are measured on: zeros for integer inputs
(token ids), seeded normal values for float ones. `shape_of(value)` reads an example
input written as a tensor, a shape or a function returning either: (shape, dtype) or
None; `model_example(model)` is the model's own: its `example_input` attribute, else
token ids (1, HF_SEQUENCE or its position table's length) for a Hugging Face text
model, else (1, in_features) float of a first Linear or (1, HF_SEQUENCE) token ids of a
first Embedding (None when a conv comes first: only the loader's `input_shape` tells).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from kmr_dsl.diagnostics import KmrError, Span, error
from kmr_dsl.runtime import layers as kl

HF_SEQUENCE = 128


def _field(out, name: str):
    value = getattr(out, name, None)
    if value is None and isinstance(out, dict):
        value = out.get(name)
    return value if isinstance(value, torch.Tensor) else None


def as_tensor(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    logits = _field(out, "logits")
    if logits is not None:
        return logits[:, -1] if logits.dim() == 3 else logits
    start, end = _field(out, "start_logits"), _field(out, "end_logits")
    if start is not None and end is not None:
        return torch.stack([start, end], dim=1)
    hidden, pooled = _field(out, "last_hidden_state"), _field(out, "pooler_output")
    if hidden is not None and hidden.dim() == 3:
        return hidden.mean(dim=1)
    if pooled is not None:
        return pooled.flatten(1)
    if hidden is not None:
        return hidden
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(f"cannot read a tensor from a {type(out).__name__} output")


def is_span_output(out: torch.Tensor) -> bool:
    return out.dim() == 3 and out.shape[1] == 2


def span_loss(out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the start and end positions."""
    return torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), targets.reshape(-1))


def span_match(out: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per example: are both the predicted start and end the target's (exact match)?"""
    return (out.argmax(dim=-1) == targets).all(dim=-1)


def output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return as_tensor(model(x)).float()


def checked_output(model: nn.Module, x: torch.Tensor, span: Span | None = None, what: str = "data") -> torch.Tensor:
    try:
        return output(model, x)
    except (RuntimeError, IndexError, ValueError, TypeError) as exc:
        text = str(exc)
        shapeish = any(s in text for s in ("shape", "size", "dimension", "mat1", "out of range", "expected input"))
        code = "KMR404" if shapeish else "KMR405"
        raise KmrError(error(code, span or Span.unknown(),
                             f"the model cannot run on {what} of shape {tuple(x.shape)}", text.strip()[:400],
                             hint="make the data's feature size match the model's input" if shapeish else None)) from exc


def example_input(shape, dtype: str = "float32", batch: int = 1) -> torch.Tensor:
    shape = (int(batch),) + tuple(int(s) for s in tuple(shape)[1:])
    if dtype in ("int64", "long", "int32"):
        return torch.zeros(shape, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    return torch.randn(shape, generator=gen)


def shape_of(value) -> tuple[tuple[int, ...], str] | None:
    if callable(value) and not isinstance(value, (torch.Tensor, nn.Module)):
        value = value()
    if isinstance(value, torch.Tensor):
        return tuple(value.shape), ("int64" if not value.is_floating_point() else "float32")
    if isinstance(value, (tuple, list)) and value and all(isinstance(s, int) for s in value):
        return tuple(value), "float32"
    return None


def first_layer_example(model: nn.Module) -> tuple[tuple[int, ...], str] | None:
    for _, layer in kl.logical_layers(model):
        kind = kl.kind_of(layer)
        if kind == "Linear":
            return (1, kl.layer_features(layer)[0]), "float32"
        if kind == "Embedding":
            return (1, HF_SEQUENCE), "int64"
        if kind in ("Conv1d", "Conv2d"):
            break
    return None


def model_example(model: nn.Module) -> tuple[tuple[int, ...], str] | None:
    source = getattr(model, "example_input", None)
    found = shape_of(source) if source is not None else None
    if found is None and getattr(model, "main_input_name", None) == "input_ids":
        # a Hugging Face text model: token ids, no more than its position table holds
        config = getattr(model, "config", None)
        positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        found = (1, min(HF_SEQUENCE, int(positions or HF_SEQUENCE))), "int64"
    return found or first_layer_example(model)


__all__ = ["HF_SEQUENCE", "as_tensor", "checked_output", "example_input", "first_layer_example", "is_span_output",
           "model_example", "output", "shape_of", "span_loss", "span_match"]
