"""Channel dependencies read off one traced forward, as torch-pruning's DepGraph does.

Contract: `channel_links(model, x)` runs `model(x)` once under a TorchFunctionMode and
forward hooks on the logical layers, follows which layer's output channels every
intermediate tensor carries, and returns the `layers.ChannelLink` of every layer whose
output channels can be removed: {member: link(norms, consumers, coupled members)}.

What a tensor carries is a *group* of coupled channels (union-find). Each coupling kind
has its own function below (`_weight_layer`, `_depthwise_layer`, `_norm_layer`,
`_couple`, ...):
- a Linear/Conv1d/Conv2d layer (ungrouped) opens a new group for its output (channel
  dim 1 for a conv, the last dim for a Linear) and is a *consumer* of the group its
  input carries (on the same dim; a Linear after a channel-major flatten of a conv
  output consumes blocks of inputs per channel);
- a depthwise convolution (groups == in == out channels) maps channel c to channel c:
  its output carries its input's group and it is a *member* of it (its filters, in and
  out channels go with the group's channels);
- BatchNorm1d/2d on the channel dim joins the group as a norm (sliced with it);
- activations (hardswish and hardsigmoid included), dropout, pooling, spatial padding,
  `contiguous`/`clone`/dtype casts keep the group;
- an elementwise addition, product or quotient of two tensors carrying groups (a
  residual connection; a squeeze-and-excitation gate times the depthwise output it was
  pooled from, the gate broadcast over the spatial dims) *couples* the two groups into
  one: the stream's producers (a ResNet stage's stem or block outputs and its
  projection shortcut; an inverted residual's expansion and the SE's second conv) are
  all members, and the SE's first conv is a consumer (it reads the pooled channels);
- anything else a carried tensor meets (concatenation, slicing, reshapes other than a
  flatten, grouped convolutions that are not depthwise, LayerNorm/GroupNorm, a layer
  called twice, attention's matmuls) and the model's output *escape* the group: its
  channels cannot be removed, because something KMR does not rewrite depends on them
  (`refusals` says which, for the diagnostics).
Every member of a group that is not escaped and has a consumer is linked; its link
names the group's consumers, norms and other members, and `prune(method = channel)`
removes the same channels from all of them at once (importance summed over the
members). That is what the checker gets as `LayerFact.consumers` / `coupled`, so the
check predicts exactly what the run removes and refuses the rest (KMR304). If the
trace meets something it cannot read (an error in this reader), no group is linked:
refusing is sound, linking wrongly is not.
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
_PAD = {"pad"}
_BINARY = {"add", "add_", "__add__", "__iadd__", "__radd__", "mul", "mul_", "__mul__", "__imul__", "__rmul__",
           "sub", "sub_", "__sub__", "__isub__", "__rsub__", "div", "div_", "true_divide", "__truediv__",
           "__itruediv__", "__rtruediv__"}
_FLATTEN = {"flatten", "view", "reshape"}


class _Group:
    __slots__ = ("parent", "channels", "dim", "producers", "consumers", "norms", "depthwise", "escaped", "why")

    def __init__(self, channels: int, dim: int):
        self.parent = self
        self.channels, self.dim = channels, dim
        self.producers: list[str] = []
        self.consumers: list[tuple[str, int]] = []
        self.norms: list[str] = []
        self.depthwise: list[str] = []
        self.escaped = False
        self.why = ""

    def root(self) -> "_Group":
        g = self
        while g.parent is not g:
            g.parent = g.parent.parent
            g = g.parent
        return g

    @property
    def members(self) -> list[str]:
        """The layers whose output channels are this group's channels."""
        return self.producers + self.depthwise


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

    def escape(self, *found, why: str = "something KMR does not rewrite reads them") -> None:
        for f in found:
            if f is not None:
                g = f[0].root()
                if not g.escaped:
                    g.escaped, g.why = True, why

    def union(self, a: _Group, b: _Group) -> _Group:
        a, b = a.root(), b.root()
        if a is b:
            return a
        b.parent = a
        a.producers += b.producers
        a.consumers += b.consumers
        a.norms += b.norms
        a.depthwise += b.depthwise
        if a.channels != b.channels and not (a.escaped or b.escaped):
            a.why = "they are added to channels of another size"
        a.why = a.why or b.why
        a.escaped = a.escaped or b.escaped or a.channels != b.channels
        return a

    # layers
    def layer(self, name: str, module: nn.Module, inputs, output) -> None:
        kind = kl.kind_of(module)
        x = next((t for t in inputs if isinstance(t, torch.Tensor)), None)
        found = self.label(x)
        self.calls[name] = self.calls.get(name, 0) + 1
        if not isinstance(output, torch.Tensor):
            self.escape(found, why=f"`{name}` returns something other than a tensor")
            return
        if kind in _WEIGHTS and is_depthwise(module):
            self._depthwise_layer(name, x, found, output)
        elif kind in _WEIGHTS:
            self._weight_layer(name, module, kind, x, found, output)
        elif kind in _NORMS and found is not None:
            self._norm_layer(name, x, found, output)
        else:
            self.escape(found, why=f"`{name}` ({kind or type(module).__name__}) reads them")

    def _weight_layer(self, name, module, kind, x, found, output) -> None:
        """A Linear / conv: consumes the input's group, opens its output's group."""
        grouped = getattr(module, "groups", 1) != 1
        conv = kind != "Linear"
        if found is not None:
            group, block = found
            fits = (not grouped and not block and x.dim() >= 2 and group.dim == (1 if conv else -1)
                    and x.shape[group.dim] == group.channels) or (block and kind == "Linear" and not grouped)
            if fits:
                group.consumers.append((name, block or 1))
            else:
                self.escape(found, why=f"`{name}` reads them grouped or reshaped")
        out = _Group(int(output.shape[1 if conv else -1]), 1 if conv else -1) if output.dim() >= 2 else None
        if out is None:
            return
        out.producers.append(name)
        if grouped or self.calls[name] > 1:
            out.escaped, out.why = True, (f"`{name}` is a grouped convolution" if grouped
                                          else f"`{name}` is called more than once")
            self.escape(found, why=out.why)
        self.groups.append(out)
        self.set(output, out)

    def _depthwise_layer(self, name, x, found, output) -> None:
        """A depthwise conv maps each channel to itself: its output carries its input's
        group, and its filters (out and in channels) belong to the group."""
        if found is not None and not found[1] and found[0].dim == 1 and x.dim() >= 3 \
                and x.shape[1] == found[0].channels == output.shape[1] and self.calls[name] == 1:
            group = found[0]
            group.depthwise.append(name)
            self.set(output, group)
            return
        self.escape(found, why=f"`{name}` (a depthwise convolution) reads them")
        out = _Group(int(output.shape[1]), 1)
        out.depthwise.append(name)
        out.escaped, out.why = True, (f"`{name}` is a depthwise convolution of the model's input" if found is None
                                      else f"`{name}` is a depthwise convolution KMR cannot follow")
        self.groups.append(out)
        self.set(output, out)

    def _norm_layer(self, name, x, found, output) -> None:
        """A BatchNorm on the channel dim: sliced with the group."""
        group, block = found
        if not block and (group.dim == 1 or x.dim() == 2) and x.shape[1] == group.channels:
            if name not in group.norms:
                group.norms.append(name)
            self.set(output, group)
        else:
            self.escape(found, why=f"`{name}` normalizes them along another dimension")

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
        if name in _BINARY and len(outs) == 1 and self._couple(flat, carried, outs[0]):
            return
        if name in _PAD and lab is not None and len(carried) == 1 and len(outs) == 1 \
                and self._pad(args, kwargs, lab, first, outs[0]):
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
        why = (f"`{name}` combines them with a tensor whose channels KMR does not follow (the model's input, "
               "a position table, a stream that is itself refused)") if name in _BINARY else f"`{name}` reads them"
        self.escape(*(f for _, f in carried), why=why)

    def _couple(self, flat, carried, o) -> bool:
        """An elementwise sum, difference, product or quotient: two groups (a residual
        connection; a squeeze-and-excitation gate, [N, C, 1, 1], times the feature map it
        was pooled from) become one, since channel c of the result reads channel c of
        both; one group with a value broadcast along its channels (bias, scale) stays
        itself."""
        if len(carried) == 2 and len(flat) == 2 and _aligned(carried[0], carried[1], o):
            self.set(o, self.union(carried[0][1][0], carried[1][1][0]))
            return True
        if len(carried) == 1 and not carried[0][1][1] and o.shape == carried[0][0].shape:
            t, (group, _) = carried[0]
            if all(_no_channel_extent(a, o.dim(), group.dim) for a in flat if a is not t):
                self.set(o, group)    # a bias, a scale, a scalar: broadcast along the channels
                return True
        return False

    def _pad(self, args, kwargs, lab, first, o) -> bool:
        """Padding of the spatial dims only (MobileNet's TF-style "same" padding) keeps the group."""
        group, block = lab
        pad = args[1] if len(args) > 1 else kwargs.get("pad")
        if block or group.dim != 1 or not isinstance(pad, (tuple, list)) or not isinstance(first, torch.Tensor):
            return False
        if len(pad) > 2 * (first.dim() - 2) or o.shape[1] != first.shape[1]:
            return False
        self.set(o, group)
        return True


def is_depthwise(module: nn.Module) -> bool:
    """A conv whose every channel has its own filter (channel multiplier 1)."""
    groups = getattr(module, "groups", 1)
    return groups > 1 and groups == getattr(module, "in_channels", 0) == getattr(module, "out_channels", 0)


def _aligned(a, b, o: torch.Tensor) -> bool:
    """Two carried tensors (unflattened, same rank, channels on the same dim) of the
    same channel count as their elementwise result, at most one of them broadcast along
    other dims: the result's channel c reads channel c of each."""
    (ta, (ga, block_a)), (tb, (gb, block_b)) = a, b
    if block_a or block_b or not ta.dim() == tb.dim() == o.dim() or ga.dim % o.dim() != gb.dim % o.dim():
        return False
    dim = ga.dim
    return ta.shape[dim] == tb.shape[dim] == o.shape[dim] and (ta.shape == o.shape or tb.shape == o.shape)


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
        tracer.escape(*(tracer.label(t) for t in _tensors(out)), why="they are an output of the model")
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    if tracer.failed:
        for g in tracer.groups:
            r = g.root()
            r.escaped, r.why = True, r.why or "the dependency trace met an operation it cannot read"
    roots = []
    for g in tracer.groups:
        r = g.root()
        if r not in roots:
            roots.append(r)
    return roots


def channel_links(model: nn.Module, x: torch.Tensor) -> dict[str, kl.ChannelLink]:
    """{member: its link} for every member of a group whose channels can be removed."""
    return links_and_refusals(model, x)[0]


def refusals(model: nn.Module, x: torch.Tensor) -> dict[str, str]:
    """{member: why its output channels cannot be removed} for every unlinked member."""
    return links_and_refusals(model, x)[1]


def links_and_refusals(model: nn.Module, x: torch.Tensor) -> tuple[dict[str, kl.ChannelLink], dict[str, str]]:
    """`channel_links` and `refusals` of one trace."""
    links: dict[str, kl.ChannelLink] = {}
    refused: dict[str, str] = {}
    for group in trace(model, x):
        members = list(dict.fromkeys(group.members))
        if group.escaped or not group.consumers or not group.producers:
            for m in members:
                refused[m] = group.why if group.escaped else "no Linear or convolution reads them"
            continue
        consumers = list(dict.fromkeys(group.consumers))
        for member in members:
            links[member] = kl.ChannelLink(member, consumers, list(group.norms),
                                           [m for m in members if m != member], list(group.depthwise))
    return links, refused


def coupled(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[str, ...]]:
    """{member: the other members its output channels are coupled with}."""
    out = {}
    for group in trace(model, x):
        for p in group.members:
            out[p] = tuple(q for q in group.members if q != p)
    return out


__all__ = ["channel_links", "coupled", "is_depthwise", "links_and_refusals", "refusals", "trace"]
