"""`prune`: magnitude, global, structured channel, attention-head and N:M pruning of Linear / Conv2d.

Contract (docs/design.md): requires `layer.bits >= 16` and `n <= m`.
- magnitude: in each layer, of its nnz non-zero weights keep the round_half_up(nnz *
  (1 - amount)) largest by |w|: density *= 1 - amount (up to one weight of rounding).
  A factorized layer ranks both factors' weights together.
- global: the same, with one ranking over all the selected layers: the total density
  of the selection is multiplied by 1 - amount; a layer's share varies.
- nm: along the input dimension (Linear: a row; Conv2d: in_channels x kh x kw
  flattened), in every group of m consecutive weights keep the n largest; the rows'
  shorter tail groups (when m does not divide the row) share what makes the layer's
  total round_half_up(numel * n / m) (`step.nm_tail_keeps`), so on a dense layer density
  = n / m exactly as the state settles it. On a sparse layer a group keeps at most its
  non-zeros: density is at most min(density, n / m), the effect (an upper bound). Stored dense: no CPU kernel runs 2:4
  (FACTS.md), so it is a sparsity pattern, not a speedup.
- channel: keep round_half_up(out * (1 - amount)) (at least 1) output channels of the
  layer's channel group (`depgraph.channel_links`, traced on the example input of the
  run's context; `layers.channel_links` without one) with the largest L2 norm summed
  over the group's members, in their original order, and physically remove the others
  from every member (weight rows and bias; a depthwise conv's filters, in channels and
  groups; both of a gated unit's gate and up projections, whose product feeds
  down_proj), every BatchNorm of the group and the matching input columns of its
  consumers: they really become smaller tensors. A group is pruned once per step, however
  many of its members are selected. A layer with no known consumer (the model's last
  layer, a stream that meets the model's input) is refused: removing its outputs would
  change the model's output or break its forward; `kmr check` refuses it first (KMR304).
- head: in each selected attention (`runtime.heads`: BERT/ViT or Llama layout) keep
  round_half_up(units * (1 - amount)) (at least 1) head units (grouped-query: a
  key/value head with its query heads) with the largest L2 norm summed over the query,
  key and value rows, and remove the others' rows and the output projection's matching
  columns; an attention is pruned once per step, however many projections are selected.
Unstructured pruning records a mask (`layers.set_mask`) that training keeps.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import torch
import torch.nn as nn

from kmr_dsl.core import step
from kmr_dsl.rules import checks
from kmr_dsl.runtime import context, depgraph, forward, heads, layers as kl
from kmr_dsl.runtime import int8_kernels as k8
from kmr_dsl.runtime import modules as km

N = step.NUMBERS     # exact: a knob value 0.3 is 3/10, as in the verifier
RULE = "prune"
METHODS = ("magnitude", "global", "channel", "nm", "head")
ACCEPTS = ("Linear", "Conv2d")


def apply(model: nn.Module, layers, amount: float = 0.5, method: str = "magnitude", n: int = 2, m: int = 4):
    amount = checks.number(RULE, "amount", amount, 0.0, 1.0, hi_open=True)
    method = checks.choice(RULE, "method", method, METHODS)
    n = checks.integer(RULE, "n", n, 1, 16)
    m = checks.integer(RULE, "m", m, 1, 16)
    if n > m:
        checks.fail(RULE, f"precondition `n <= m` fails (n = {n}, m = {m})")
    for name, layer in layers:
        checks.kinds(RULE, name, layer, ACCEPTS)
        checks.float_weights(RULE, name, layer)
    if method == "magnitude":
        for name, layer in layers:
            _keep_largest(kl.leaves(name, layer), amount)
    elif method == "global":
        _keep_largest([leaf for name, layer in layers for leaf in kl.leaves(name, layer)], amount)
    elif method == "nm":
        for name, layer in layers:
            for leaf_name, leaf in kl.leaves(name, layer):
                if kl.is_conv1d(leaf):      # groups run along the input: use the [out, in] form
                    leaf = kl.as_linear(leaf)
                    kl.set_module(model, leaf_name, leaf)
                _nm(leaf, n, m)
    elif method == "head":
        found = heads.by_projection(model)
        done_heads: set[str] = set()    # an attention's heads are pruned once per step
        for name, _ in layers:
            att = found.get(name)
            if att is None:
                checks.fail(RULE, f"`{name}` is not a query, key or value projection of an attention KMR "
                                  "recognises", "head pruning needs the layout of BERT/ViT (query, key, value, "
                                  "output.dense) or Llama (q_proj, k_proj, v_proj, o_proj)",
                            hint="select the attention's query/key/value layers, or use method = channel")
            if att.module not in done_heads:
                done_heads.add(att.module)
                _heads(model, att, amount)
    else:
        links, done = _links(model), set()
        for name, _ in layers:
            _channel(model, name, amount, links, done)
    return model


def _links(model: nn.Module) -> dict:
    """The channel links the checker saw: traced on the facts' example input (a run's
    context carries it); called without one, the nn.Sequential chains."""
    example = context.current().example
    if example is None:
        return kl.channel_links(model)
    shape, dtype = example
    return depgraph.channel_links(model, forward.example_input(shape, dtype, batch=shape[0] if shape else 1))


def _keep_largest(leaves, amount: float) -> None:
    nnz = sum(int(kl.current_mask(leaf).sum()) for _, leaf in leaves)
    keep_top(leaves, keep_count(nnz, amount))


def keep_count(nnz: int, amount) -> int:
    """How many of `nnz` weights pruning `amount` of them keeps (exact, as the verifier)."""
    return int(step.round_half_up(N.mul(nnz, N.sub(1, amount))))


def keep_top(leaves, keep: int) -> None:
    """Keep the `keep` largest |w| among the leaves' still-kept weights, one ranking."""
    masks = [kl.current_mask(leaf) for _, leaf in leaves]
    nnz = sum(int(mask.sum()) for mask in masks)
    if keep >= nnz or not leaves:
        return
    # one ranking over every weight; pruned positions score -1 so they are never kept
    scores = torch.cat([torch.where(mask, leaf.weight.detach().abs().float(), torch.tensor(-1.0)).reshape(-1)
                        for (_, leaf), mask in zip(leaves, masks)])
    chosen = torch.zeros(scores.numel(), dtype=torch.bool)
    if keep > 0:
        chosen[torch.topk(scores, keep, sorted=False).indices] = True
    start = 0
    for _, leaf in leaves:
        numel = leaf.weight.numel()
        kl.set_mask(leaf, chosen[start:start + numel])
        start += numel


def _nm(leaf: nn.Module, n: int, m: int) -> None:
    if n == m:
        return
    w = leaf.weight.detach()
    rows = w.shape[0]
    mask = kl.current_mask(leaf).reshape(rows, -1)
    scores = torch.where(mask, w.abs().float().reshape(rows, -1), torch.tensor(-1.0))
    cols = scores.shape[1]
    full = cols // m * m
    keep = torch.zeros_like(mask)
    if full:
        groups = scores[:, :full].reshape(rows, -1, m)
        idx = torch.topk(groups, n, dim=-1).indices
        keep[:, :full] = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, idx, True).reshape(rows, full)
    if cols > full:
        keep[:, full:] = kl.top_per_row(scores[:, full:], step.nm_tail_keeps(rows, cols, n, m))
    kl.set_mask(leaf, keep & mask)



# ---------------------------------------------------------------- structured channels

def _effective_weight(layer: nn.Module) -> torch.Tensor:
    """The (out, in...) float weight the layer applies, for ranking channels."""
    if isinstance(layer, km.FactorizedLinear):
        return _effective_weight(layer.second).float() @ _effective_weight(layer.first).float()
    if isinstance(layer, km.LoRALinear):
        return _effective_weight(layer.base).float() + layer.delta().detach()
    if isinstance(layer, km.ScaledLinear):
        # the weight it applies to its own input: columns times the vector
        return _effective_weight(layer.linear).float() * layer.input_scale[None, :]
    return kl.leaf_weight(layer).float()


def _set_features(mod: nn.Module, dim: int, size: int) -> None:
    if hasattr(mod, "in_channels"):
        setattr(mod, "out_channels" if dim == 0 else "in_channels", size)
    else:
        setattr(mod, "out_features" if dim == 0 else "in_features", size)


def _slice_leaf(leaf: nn.Module, dim: int, idx: torch.Tensor, depthwise: bool = False) -> nn.Module:
    if isinstance(leaf, km.QuantWeight) and leaf.group_size and dim == 1:
        # removed inputs shift the groups: quantize the remaining weights again, in
        # groups of the same size (zeros stay zero, so density is kept)
        bias = None if leaf.bias is None else leaf.bias.detach()
        new = km.quantized_leaf(leaf, leaf.dequantized().index_select(1, idx), leaf.bits, leaf.group_size,
                                symmetric=leaf.symmetric)
        if bias is not None:
            new.bias = bias.clone()
        return new
    if k8.is_int8_kernel(leaf) or isinstance(leaf, km.QuantWeight):
        q, scale, bias = (k8.dynamic_parts(leaf) if k8.is_int8_kernel(leaf)
                          else (leaf.int_weight(), leaf.scale, leaf.bias))
        zero = k8.int8_zero_points(leaf) if k8.is_int8_kernel(leaf) else leaf.zero_point
        # per-row scales (and zero points): slicing columns keeps every integer value exact
        q = q.index_select(dim, idx)
        if dim == 0:
            scale = scale[idx]
            zero = None if zero is None else zero[idx]
            bias = None if bias is None else bias[idx]
        if k8.is_dynamic(leaf):
            return k8.dynamic_linear(q, scale, bias, zero)
        if k8.is_int8_kernel(leaf):
            return k8.static_int8(leaf, q, scale, bias, (leaf.input_scale, leaf.input_zero_point),
                                  leaf.output_qparams, zero)
        new = copy.deepcopy(leaf)
        new.set_int_weight(q, scale, zero)
        if bias is not None:
            new.bias = bias.clone()
        return new
    if getattr(leaf, "groups", 1) != 1 and not depthwise:
        checks.fail(RULE, "channel pruning of grouped convolutions is not supported")
    new = copy.deepcopy(leaf)
    weight = leaf.weight.detach().index_select(dim, idx).clone()
    new.weight = nn.Parameter(weight, requires_grad=leaf.weight.requires_grad)
    if dim == 0 and leaf.bias is not None:
        new.bias = nn.Parameter(leaf.bias.detach()[idx].clone(), requires_grad=leaf.bias.requires_grad)
    mask = getattr(leaf, kl.MASK, None)
    if mask is not None:
        new._buffers[kl.MASK] = mask.index_select(dim, idx)
    _set_features(new, dim, weight.shape[dim])
    return new


def _slice(layer: nn.Module, dim: int, idx: torch.Tensor) -> nn.Module:
    """`layer` with output (dim 0) or input (dim 1) channels `idx` only."""
    if isinstance(layer, km.FactorizedLinear):
        if dim == 0:
            layer.second = _slice(layer.second, 0, idx)
        else:
            layer.first = _slice(layer.first, 1, idx)
        return layer
    if isinstance(layer, km.ScaledLinear):
        # removed inputs take their entries of the explicit input scale with them
        layer.linear = _slice(layer.linear, dim, idx)
        if dim == 1:
            layer.input_scale = layer.input_scale[idx].clone()
        return layer
    if isinstance(layer, km.LoRALinear):
        layer.base = _slice(layer.base, dim, idx)
        if dim == 0:
            layer.lora_B = nn.Parameter(layer.lora_B.detach()[idx].clone(), requires_grad=layer.lora_B.requires_grad)
        else:
            layer.lora_A = nn.Parameter(layer.lora_A.detach()[:, idx].clone(), requires_grad=layer.lora_A.requires_grad)
        return layer
    return _slice_leaf(kl.as_linear(layer), dim, idx)


def _slice_norm(norm: nn.Module, idx: torch.Tensor) -> nn.Module:
    new = copy.deepcopy(norm)
    for pname, p in list(norm._parameters.items()):
        if p is not None:
            new._parameters[pname] = nn.Parameter(p.detach()[idx].clone(), requires_grad=p.requires_grad)
    for bname, b in list(norm._buffers.items()):
        if b is not None and b.dim() == 1 and b.shape[0] == norm.num_features:
            new._buffers[bname] = b[idx].clone()
    new.num_features = int(idx.numel())
    return new


def _channel(model: nn.Module, name: str, amount: float, links: dict, done: set) -> None:
    """Prune the channel group `name` belongs to (once per step: a member already pruned
    with its group is skipped)."""
    if name in done:
        return
    layer = kl.get_module(model, name)
    out = kl.layer_features(layer)[1]
    keep = int(step.settle("out_features", N.mul(out, N.sub(1, amount))))
    link = links.get(name)
    if keep >= out:
        return
    if link is None or not link.consumers:
        checks.fail(RULE, f"`{name}` has no consumer layer that KMR can shrink with it",
                    "channel pruning needs the layer's output to feed only Linear/Conv layers (through "
                    "activations, pooling, BatchNorm, residual additions), not the model's output",
                    hint="select hidden layers only (not the output layer), or use method = magnitude")
    members = [name, *link.coupled]
    idx = _group_channels(model, members, keep)
    for member in members:
        mod = kl.get_module(model, member)
        if member in link.depthwise:
            kl.set_module(model, member, _slice_depthwise(member, mod, idx))
        else:
            kl.set_module(model, member, _slice(mod, 0, idx))
    for norm_name in link.norms:
        kl.set_module(model, norm_name, _slice_norm(kl.get_module(model, norm_name), idx))
    for consumer, block in link.consumers:
        cols = (idx[:, None] * block + torch.arange(block)[None, :]).reshape(-1)
        kl.set_module(model, consumer, _slice(kl.get_module(model, consumer), 1, cols))
    done.update(members)


def _group_channels(model: nn.Module, members: list[str], keep: int) -> torch.Tensor:
    """The `keep` channels of a group with the largest importance, in their original
    order: the L2 norm of each channel's filter, summed over the group's members (every
    producer of a residual stream, its depthwise convolutions)."""
    score = None
    for member in members:
        w = _effective_weight(kl.get_module(model, member))
        norms = w.reshape(w.shape[0], -1).norm(dim=1)
        score = norms if score is None else score + norms
    return torch.sort(torch.topk(score, keep, sorted=False).indices).values


def _slice_depthwise(name: str, conv: nn.Module, idx: torch.Tensor) -> nn.Module:
    """A depthwise conv keeping channels `idx`: its filters (float or integer, with their
    per-row scales), in and out channels and groups."""
    keep = int(idx.numel())
    if isinstance(conv, k8.StaticConv2d):
        q, scale, bias = k8.dynamic_parts(conv)
        # the static kernel is rebuilt with the new groups (static_int8 reads them off the leaf)
        shape = SimpleNamespace(groups=keep, stride=conv.stride, padding=conv.padding, dilation=conv.dilation)
        return k8.static_int8(shape, q.index_select(0, idx), scale[idx], None if bias is None else bias[idx],
                              (conv.input_scale, conv.input_zero_point), conv.output_qparams)
    if isinstance(conv, km.QuantConv2d):
        new = _slice_leaf(conv, 0, idx, depthwise=True)
        new.groups = keep
        return new
    if not isinstance(conv, (nn.Conv1d, nn.Conv2d)):    # float, bfloat16 (HalfConv2d), masked
        checks.fail(RULE, f"`{name}` is a depthwise convolution in a form channel pruning cannot slice "
                          f"({type(conv).__name__})",
                    hint="prune the channels before transforming the convolution")
    new = _slice_leaf(conv, 0, idx, depthwise=True)
    new.in_channels = new.groups = keep
    return new


# ---------------------------------------------------------------- attention heads

def _heads(model: nn.Module, att, amount: float) -> None:
    """Keep round_half_up(units * (1 - amount)) head units of one attention (at least one:
    the rule requires it), those whose rows in the query, key and value projections
    have the largest summed L2 norm, in order; slice the projections' rows and the output
    projection's columns, and update the module's head counts."""
    keep = int(step.settle("heads", N.mul(att.units, N.sub(1, amount))))
    if keep < 1:
        checks.fail(RULE, f"pruning {amount} of the {att.units} heads of `{att.module}` keeps none",
                    hint="use a smaller amount: head pruning keeps at least one head")
    if keep >= att.units:
        return
    score = sum(_effective_weight(kl.get_module(model, p)).reshape(att.units, -1).norm(dim=1)
                for p in att.projections)
    idx = torch.sort(torch.topk(score, keep, sorted=False).indices).values
    for p, width in zip(att.projections, att.widths):
        kl.set_module(model, p, _slice(kl.get_module(model, p), 0, heads.rows(idx, width)))
    kl.set_module(model, att.output, _slice(kl.get_module(model, att.output), 1, heads.rows(idx, att.widths[0])))
    heads.set_head_counts(model.get_submodule(att.module), att, keep)
