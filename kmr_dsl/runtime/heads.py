"""Attention heads as channel groups: which layers an attention module's heads span.

Contract: `attentions(model)` finds every self-attention module whose layout KMR knows
and returns, per module, an `Attention`: its projections (query, key, value: the layers
whose output rows are the heads), its output projection (whose input columns are the
heads), the number of prunable *units* and the rows each unit takes in each projection.
A unit is one attention head; with grouped-query attention (Llama's
`num_key_value_heads` < `num_attention_heads`) it is one key/value head together with
the query heads that read it, so removing units keeps every query head's key/value head.
`units_of(model)` gives each projection's unit count (the state field `heads`; 0 for
every other layer); `rows(keep, width)` the rows of kept units and
`set_head_counts(module, attention, kept)` the module's head attributes after pruning
(`prune(method = head)` slices the layers: kmr_dsl/rules/prune.py).

Recognised layouts (how transformers writes them):
- `bert`: a module with child layers `query`, `key`, `value` and the attributes
  `num_attention_heads`, `attention_head_size` (BERT, RoBERTa, ViT, DeiT...); its output
  projection is the sibling `output.dense` of the module's parent.
- `llama`: a module with child layers `q_proj`, `k_proj`, `v_proj`, `o_proj` and
  `head_dim` (Llama, Mistral, Qwen2...); key/value heads = k_proj's rows / head_dim.
Anything else (GPT-2's fused `c_attn`, a layout whose sizes do not add up) is not an
attention here: its projections have 0 heads and `prune(method = head)` is refused.
The forward of these modules reshapes with `-1` heads, so sliced projections run as
they are; the head-count attributes are updated so the module describes itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from kmr_dsl.runtime import layers as kl


@dataclass(frozen=True)
class Attention:
    module: str                       # qualified name of the attention module
    layout: str                       # "bert" | "llama"
    projections: tuple[str, ...]      # query, key, value layers (rows = heads)
    output: str                       # output projection (columns = heads)
    units: int                        # prunable units (key/value heads)
    widths: tuple[int, ...]           # rows per unit of each projection (the output's columns: widths[0])


def _features(model: nn.Module, name: str) -> tuple[int, int] | None:
    try:
        layer = kl.get_module(model, name)
    except (AttributeError, KeyError):
        return None
    if kl.kind_of(layer) != "Linear":
        return None
    return kl.layer_features(layer)


def _bert(model: nn.Module, name: str, mod: nn.Module, layers: set[str]) -> Attention | None:
    if not all(hasattr(mod, a) for a in ("query", "key", "value", "num_attention_heads", "attention_head_size")):
        return None
    parent = name.rpartition(".")[0]
    output = f"{parent}.output.dense" if parent else "output.dense"
    projections = tuple(f"{name}.{p}" for p in ("query", "key", "value"))
    if not all(p in layers for p in projections) or output not in layers:
        return None
    d = int(mod.attention_head_size)
    sizes = [_features(model, p) for p in projections]
    out = _features(model, output)
    if None in sizes or out is None or d <= 0:
        return None
    rows = {s[1] for s in sizes}
    if len(rows) != 1 or out[0] != sizes[0][1] or sizes[0][1] % d:
        return None
    return Attention(name, "bert", projections, output, sizes[0][1] // d, (d, d, d))


def _llama(model: nn.Module, name: str, mod: nn.Module, layers: set[str]) -> Attention | None:
    if not all(hasattr(mod, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim")):
        return None
    projections = tuple(f"{name}.{p}" for p in ("q_proj", "k_proj", "v_proj"))
    output = f"{name}.o_proj"
    if not all(p in layers for p in projections) or output not in layers:
        return None
    d = int(mod.head_dim)
    q, k, v = (_features(model, p) for p in projections)
    out = _features(model, output)
    if None in (q, k, v, out) or d <= 0 or k[1] != v[1] or k[1] % d or out[0] != q[1]:
        return None
    units = k[1] // d
    if not units or q[1] % (units * d):
        return None
    group = q[1] // (units * d)        # query heads per key/value head
    return Attention(name, "llama", projections, output, units, (group * d, d, d))


_LAYOUTS = (_bert, _llama)


def attentions(model: nn.Module) -> dict[str, Attention]:
    """{attention module name: Attention} for every recognised self-attention."""
    layers = {n for n, _ in kl.logical_layers(model)}
    found: dict[str, Attention] = {}
    for name, mod in model.named_modules():
        if not name or name in layers:
            continue
        for layout in _LAYOUTS:
            att = layout(model, name, mod, layers)
            if att is not None:
                found[name] = att
                break
    return found


def by_projection(model: nn.Module) -> dict[str, Attention]:
    """{query/key/value layer name: its Attention}."""
    return {p: att for att in attentions(model).values() for p in att.projections}


def units_of(model: nn.Module) -> dict[str, int]:
    """{projection layer: its prunable head units} (absent: 0)."""
    return {p: att.units for p, att in by_projection(model).items()}


def rows(keep, width: int):
    """The row (or column) indices of the kept units, `width` rows each, in order."""
    return (keep[:, None] * width + torch.arange(width)[None, :]).reshape(-1)


def set_head_counts(mod: nn.Module, att: Attention, kept: int) -> None:
    """The module's own description of its heads after keeping `kept` units."""
    if att.layout == "bert":
        mod.num_attention_heads = kept
        mod.all_head_size = kept * int(mod.attention_head_size)
    else:
        group = att.widths[0] // att.widths[1]
        for attr, value in (("num_heads", kept * group), ("num_attention_heads", kept * group),
                            ("num_key_value_heads", kept)):
            if hasattr(mod, attr):
                setattr(mod, attr, value)


__all__ = ["Attention", "attentions", "by_projection", "rows", "set_head_counts", "units_of"]
