"""Tied parameters as one logical layer: an embedding whose table is a Linear's weight.

Contract: language models tie their input embedding to their output projection
(`lm_head.weight is embed_tokens.weight`). KMR treats the pair as ONE logical layer,
the Linear (the `owner`: kind Linear, accepted by every rule), and the embedding as
its alias:
- `link(model)` (every loader calls it) finds each logical Embedding whose weight is
  the very Parameter of a logical Linear's weight, and replaces the embedding by a
  `TiedEmbedding` that holds no tensor of its own and looks its rows up in the owner's
  current weight. The forward is unchanged: the table is the same tensor (and training
  still updates it through both uses).
- So the weight is counted once (params, nonzero, size are the owner's), transformed
  once (a rule on the owner changes the table the alias reads: pruning, quantization,
  low rank, adapters), and stored once (the alias has no tensor; the loader that
  rebuilds an artifact's base links it again, and `layers.set_module` points the alias
  at whatever replaces its owner).
- The alias is not a selectable layer; `tied_names(model)` says which names are tied to
  which owner, for the facts (`LayerFact.tied`) and the layer listings.
Ties between two layers of the same kind (two Linears, two embeddings) are left as they
are.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from kmr_dsl.runtime import layers as kl
from kmr_dsl.runtime import modules as km

OWNER = kl.TIED_OWNER


def table(owner: nn.Module) -> torch.Tensor:
    """The [rows, dim] matrix a Linear-kind layer applies, with gradients where it has them."""
    if isinstance(owner, km.FactorizedLinear):
        return table(owner.second).float() @ table(owner.first).float()
    if isinstance(owner, km.LoRALinear):
        return table(owner.base).float() + owner.delta()
    if kl.is_leaf(owner) and kl.leaf_is_float(owner):
        return owner.weight.t() if kl.is_conv1d(owner) else owner.weight
    return kl.leaf_weight(owner)


class TiedEmbedding(nn.Module):
    """An embedding that reads its table from `owner` (not a submodule: the owner is
    counted, transformed and stored once, under its own name)."""

    def __init__(self, owner: nn.Module, owner_name: str, embedding: nn.Embedding):
        super().__init__()
        self.__dict__[OWNER] = owner
        self.owner_name = owner_name
        self.padding_idx = embedding.padding_idx
        self.num_embeddings, self.embedding_dim = embedding.num_embeddings, embedding.embedding_dim
        self.out_dtype = embedding.weight.dtype

    @property
    def owner(self) -> nn.Module:
        return self.__dict__[OWNER]

    @property
    def weight(self) -> torch.Tensor:
        return table(self.owner)

    def forward(self, x):
        return F.embedding(x, table(self.owner), self.padding_idx).to(self.out_dtype)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, tied to {self.owner_name}"


def link(model: nn.Module) -> nn.Module:
    linears: dict[int, tuple[str, nn.Module]] = {}
    embeddings = []
    for name, layer in kl.logical_layers(model):
        kind = kl.kind_of(layer)
        weight = getattr(layer, "weight", None)
        if not isinstance(weight, nn.Parameter):
            continue
        if kind == "Linear" and kl.is_leaf(layer) and not kl.is_conv1d(layer):
            linears.setdefault(id(weight), (name, layer))
        elif type(layer) is nn.Embedding and layer.max_norm is None and not layer.sparse:
            embeddings.append((name, layer))
    for name, emb in embeddings:
        owner = linears.get(id(emb.weight))
        if owner is not None and tuple(owner[1].weight.shape) == tuple(emb.weight.shape):
            kl.set_module(model, name, TiedEmbedding(owner[1], owner[0], emb))
    return model


def tied_names(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """{owner name: (alias names...)} of the model's tied layers."""
    out: dict[str, list[str]] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, TiedEmbedding):
            out.setdefault(mod.owner_name, []).append(name)
    return {k: tuple(v) for k, v in out.items()}


__all__ = ["TiedEmbedding", "link", "table", "tied_names"]
