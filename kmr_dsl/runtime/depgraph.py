"""Channel dependencies read off one traced forward, as torch-pruning's DepGraph does.

Contract: `channel_links(model, x)` runs `model(x)` once under a TorchFunctionMode and
forward hooks on the logical layers, follows which layer's output channels every
intermediate tensor carries, and returns the `layers.ChannelLink` of every layer whose
output channels can be removed on their own: {producer: link(norms, consumers)}.

What a tensor carries is a *group* of coupled channels (union-find):
- a Linear/Conv1d/Conv2d layer (ungrouped) opens a new group for its output (channel
  dim 1 for a conv, the last dim for a Linear) and is a *consumer* of the group its
  input carries (on the same dim; a Linear after a channel-major flatten of a conv
  output consumes blocks of inputs per channel);
- BatchNorm1d/2d on the channel dim joins the group as a norm (sliced with it);
- activations, dropout, pooling, `contiguous`/`clone`/dtype casts keep the group;
- an elementwise addition or product of two tensors carrying groups *couples* the two
  groups into one; the group remembers the *kind* of each coupling (`sum`: a residual
  connection; `product`: a gated unit such as Llama's SwiGLU, `act(gate(x)) * up(x)`);
- anything else a carried tensor meets (concatenation, slicing, reshapes other than a
  flatten, grouped or depthwise convolution, LayerNorm/GroupNorm, a layer called twice,
  attention's matmuls) and the model's output *escape* the group: its channels cannot
  be removed, because something KMR does not rewrite depends on them.
A group is linked when it is not escaped, has a consumer, and either has one producer
or only couplings of a kind in `LINKED_COUPLINGS` (`product`: the producers of a gated
unit are sliced together, their consumer's inputs with them; `prune` ranks the group's
channels by the sum of its producers' row norms). Every producer of a linked group gets
a link naming the others (`ChannelLink.coupled`): pruning any of them prunes the group.
A residual stream (`sum`) is not linked here. The
result is what the checker gets as `LayerFact.consumers` and what `prune(method =
channel)` shrinks, so the check predicts exactly what the run removes and refuses
the rest (KMR304). `coupled(model, x)` gives, for the diagnostics, the producers that
share a group. If the trace meets something it cannot read (an error in this reader),
no group is linked: refusing is sound, linking wrongly is not.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from kmr_dsl.runtime import layers as kl

_WEIGHTS = ("Linear", "Conv1d", "Conv2d")
_NORMS = ("BatchNorm1d", "BatchNorm2d")
_KEEP = {
    "relu", "relu_", "relu6", "gelu", "silu", "silu_", "sigmoid", "tanh", "hardtanh", "hardtanh_", "hardswish",
    "hardsigmoid", "leaky_relu", "leaky_relu_", "elu", "softplus", "mish", "dropout", "dropout1d", "dropout2d",
    "alpha_dropout", "feature_alpha_dropout", "max_pool1d", "max_pool2d", "avg_pool1d", "avg_pool2d",
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool1d", "adaptive_max_pool2d",
    "_max_pool2d", "max_pool2d_with_indices", "boolean_dispatch", "contiguous", "clone", "float", "to", "detach",
    "type_as", "identity",
    # elementwise functions of one tensor (GELU's tanh form, SiLU written out...)
    "pow", "__pow__", "exp", "erf", "neg", "__neg__", "abs", "square", "sqrt", "rsqrt", "reciprocal",
    "sigmoid_", "tanh_", "gelu_", "clamp", "clamp_", "clip",
}
_BINARY = {"add", "add_", "__add__", "__iadd__", "__radd__", "mul", "mul_", "__mul__", "__imul__", "__rmul__",
           "sub", "sub_", "__sub__", "__isub__", "__rsub__"}
_FLATTEN = {"flatten", "view", "reshape"}


class _Group:
    __slots__ = ("parent", "channels", "dim", "producers", "consumers", "norms", "escaped", "couplings")

    def __init__(self, channels: int, dim: int):
        self.parent = self
        self.channels, self.dim = channels, dim
        self.producers: list[str] = []
        self.consumers: list[tuple[str, int]] = []
        self.norms: list[str] = []
        self.escaped = False
        self.couplings: set[str] = set()    # kinds of the couplings that joined groups into this one

    def root(self) -> "_Group":
        g = self
        while g.parent is not g:
            g.parent = g.parent.parent
            g = g.parent
        return g


class _Tracer:
    def __init__(self):
        self.labels: dict[int, tuple[_Group, int]] = {}   # id(tensor) -> (group, block: 0 = unflattened)
        self.keep: list[torch.Tensor] = []                # keeps ids unique while tracing
        self.groups: list[_Group] = []
        self.depth = 0
        self.calls: dict[str, int] = {}
        self.failed = False     # the trace met something it could not read: no group is trusted

    # labels
    def label(self, t) -> tuple[_Group, int] | None:
        found = self.labels.get(id(t)) if isinstance(t, torch.Tensor) else None
        return None if found is None else (found[0].root(), found[1])

    def set(self, t: torch.Tensor, group: _Group, block: int = 0) -> None:
        self.keep.append(t)
        self.labels[id(t)] = (group, block)

    def escape(self, *found) -> None:
        for f in found:
            if f is not None:
                f[0].root().escaped = True

    def union(self, a: _Group, b: _Group, kind: str) -> _Group:
        a, b = a.root(), b.root()
        a.couplings.add(kind)
        if a is b:
            return a
        b.parent = a
        a.couplings |= b.couplings
        a.producers += b.producers
        a.consumers += b.consumers
        a.norms += b.norms
        a.escaped = a.escaped or b.escaped or a.channels != b.channels
        return a

    # layers
    def layer(self, name: str, module: nn.Module, inputs, output) -> None:
        kind = kl.kind_of(module)
        x = next((t for t in inputs if isinstance(t, torch.Tensor)), None)
        found = self.label(x)
        self.calls[name] = self.calls.get(name, 0) + 1
        if not isinstance(output, torch.Tensor):
            self.escape(found)
            return
        if kind in _WEIGHTS:
            grouped = getattr(module, "groups", 1) != 1
            conv = kind != "Linear"
            if found is not None:
                group, block = found
                fits = (not grouped and not block and x.dim() >= 2 and group.dim == (1 if conv else -1)
                        and x.shape[group.dim] == group.channels) or (block and kind == "Linear" and not grouped)
                if fits:
                    group.consumers.append((name, block or 1))
                else:
                    self.escape(found)
            out = _Group(int(output.shape[1 if conv else -1]), 1 if conv else -1) if output.dim() >= 2 else None
            if out is None:
                return
            out.producers.append(name)
            if grouped or self.calls[name] > 1:
                out.escaped = True
                self.escape(found)
            self.groups.append(out)
            self.set(output, out)
        elif kind in _NORMS and found is not None:
            group, block = found
            if not block and (group.dim == 1 or x.dim() == 2) and x.shape[1] == group.channels:
                if name not in group.norms:
                    group.norms.append(name)
                self.set(output, group)
            else:
                self.escape(found)
        else:
            self.escape(found)

    # functions between layers
    def op(self, func, args, kwargs, out) -> None:
        flat = [a for a in args if isinstance(a, torch.Tensor)]
        for a in args:
            if isinstance(a, (list, tuple)):
                flat += [t for t in a if isinstance(t, torch.Tensor)]
        flat += [v for v in kwargs.values() if isinstance(v, torch.Tensor)]
        found = [(t, self.label(t)) for t in flat]
        carried = [(t, f) for t, f in found if f is not None]
        if not carried:
            return
        outs = [out] if isinstance(out, torch.Tensor) else [o for o in out if isinstance(o, torch.Tensor)] \
            if isinstance(out, (tuple, list)) else []
        if not outs:
            return      # sizes, shapes, flags: nothing flows on
        name = getattr(func, "__name__", "")
        first = args[0] if args else None
        lab = self.label(first)
        if name in _KEEP and len(carried) == 1 and lab is not None and len(outs) >= 1:
            group, block = lab
            o = outs[0]
            same = o.dim() == first.dim() and o.shape[group.dim] == first.shape[group.dim] if not block else \
                o.shape == first.shape
            if same:
                self.set(o, group, block)
                return
        if name in _BINARY and len(outs) == 1:
            o = outs[0]
            if len(carried) == 2 and not carried[0][1][1] and not carried[1][1][1] \
                    and carried[0][0].shape == carried[1][0].shape == o.shape:
                self.set(o, self.union(carried[0][1][0], carried[1][1][0], _coupling(name)))
                return
            if len(carried) == 1 and not carried[0][1][1] and o.shape == carried[0][0].shape:
                t, (group, _) = carried[0]
                if all(_no_channel_extent(a, o.dim(), group.dim) for a in flat if a is not t):
                    self.set(o, group)    # a bias, a scale, a scalar: broadcast along the channels
                    return
        if name in _FLATTEN and lab is not None and len(carried) == 1 and len(outs) == 1:
            group, block = lab
            o = outs[0]
            if not block and group.dim == 1 and first.dim() >= 3 and o.dim() == 2 and o.shape[0] == first.shape[0]:
                rest = first[0, 0].numel()
                if o.shape[1] == first.shape[1] * rest:
                    self.set(o, group, rest)
                    return
            if o.shape == first.shape:
                self.set(o, group, block)
                return
        self.escape(*(f for _, f in carried))


# how two carried tensors combined elementwise couple their channels
_PRODUCTS = {"mul", "mul_", "__mul__", "__imul__", "__rmul__"}
# the couplings whose groups are linked with several producers (see the module docstring)
LINKED_COUPLINGS = frozenset({"product"})


def _coupling(name: str) -> str:
    return "product" if name in _PRODUCTS else "sum"


def _linked(group: _Group) -> bool:
    """Can the group's channels be removed: by its one producer, or by all its producers
    together when every coupling that joined them is a linked kind?"""
    if group.escaped or not group.consumers or not group.producers:
        return False
    if len(group.producers) == 1:
        return True
    return len(set(group.producers)) == len(group.producers) and group.couplings <= LINKED_COUPLINGS


def _no_channel_extent(a: torch.Tensor, ndim: int, dim: int) -> bool:
    """Does `a`, broadcast against an `ndim`-dimensional tensor, hold one value across
    the channel dim `dim` (1 or -1)?"""
    at = a.dim() - 1 if dim == -1 else a.dim() - (ndim - 1)
    return at < 0 or a.shape[at] == 1


class _Mode(TorchFunctionMode):
    def __init__(self, tracer: _Tracer):
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.tracer.depth == 0 and not self.tracer.failed:
            try:
                self.tracer.op(func, args, kwargs, out)
            except Exception:  # noqa: BLE001 - an op this reader does not understand: link nothing
                self.tracer.failed = True
        return out


def _tensors(out):
    if isinstance(out, torch.Tensor):
        yield out
    elif isinstance(out, dict):
        for v in out.values():
            yield from _tensors(v)
    elif isinstance(out, (tuple, list)):
        for v in out:
            yield from _tensors(v)


def trace(model: nn.Module, x: torch.Tensor) -> list[_Group]:
    """The channel groups of one forward of `model` on `x` (roots only)."""
    tracer = _Tracer()
    hooks = []
    for name, layer in kl.logical_layers(model):
        def pre(mod, inputs):
            tracer.depth += 1

        def post(mod, inputs, output, name=name):
            tracer.depth -= 1
            if not tracer.failed:
                try:
                    tracer.layer(name, mod, inputs, output)
                except Exception:  # noqa: BLE001 - see _Mode
                    tracer.failed = True
        hooks.append(layer.register_forward_pre_hook(pre))
        hooks.append(layer.register_forward_hook(post))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _Mode(tracer):
            out = model(x)
        tracer.escape(*(tracer.label(t) for t in _tensors(out)))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    if tracer.failed:
        for g in tracer.groups:
            g.root().escaped = True
    roots = []
    for g in tracer.groups:
        r = g.root()
        if r not in roots:
            roots.append(r)
    return roots


def channel_links(model: nn.Module, x: torch.Tensor) -> dict[str, kl.ChannelLink]:
    links: dict[str, kl.ChannelLink] = {}
    for group in trace(model, x):
        if not _linked(group):
            continue
        consumers = list(dict.fromkeys(group.consumers))
        for producer in group.producers:
            links[producer] = kl.ChannelLink(producer, consumers, list(group.norms),
                                             [p for p in group.producers if p != producer])
    return links


def coupled(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[str, ...]]:
    """{producer: the other producers its output channels are coupled with}."""
    out = {}
    for group in trace(model, x):
        for p in group.producers:
            out[p] = tuple(q for q in group.producers if q != p)
    return out


__all__ = ["LINKED_COUPLINGS", "channel_links", "coupled", "trace"]
