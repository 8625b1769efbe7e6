"""Sibling int8 Linears that read one input run as one GEMM: an execution detail.

Contract:
- `install(model) -> int` finds, under each module, the int8 dynamic Linears
  (`int8_kernels.DynamicLinear`) that models name as readers of one input — BERT's
  `query`/`key`/`value`, Llama's and most decoders' `q_proj`/`k_proj`/`v_proj` and
  `gate_proj`/`up_proj` (`SIBLINGS`) — and, where at least two of one set share the
  format (input width, weight grid, activation range, bias or none), links them into a
  `SiblingGroup`. It returns how many Linears were linked. Nothing the model saves or
  measures changes: every member keeps its own weights, state_dict entries and name;
  the group holds only a derived, runtime-only copy of their weights side by side.
  `uninstall(model)` unlinks them. `groups(model)` lists the groups installed.
  `fused(model)`: a context in which the model runs as `artifact.load` runs it (linked as
  `install` links; a model already linked keeps its groups, one that was not is unlinked
  on exit): what the latency meter times, so that `kmr run` times the form its artifact
  runs in, not the unfused in-memory model.
- A linked member's forward on input `x`: if a sibling already ran on this very tensor
  (the same object, unmodified since: its version counter), it returns its own columns
  of the result that call computed; otherwise it runs one `quantized::linear_dynamic`
  over the concatenated weights (one activation quantization and one larger GEMM
  instead of one per sibling), keeps the other members' columns for them, and returns
  its own. torch's dynamic int8 GEMM quantizes `x` once per call from its min/max, and
  each output column depends on that and its own weight row only, so each member's
  columns are bit-identical to its separate call (tests compare them with
  `torch.equal`).
- The outputs are column slices of the one result (views with the fused width as row
  stride, as models with a fused q/k/v projection get from `split`), not contiguous
  tensors: the attention code of these models only splits the last dimension.
- It never changes a result, only how it is computed: a member whose weights were
  replaced (`int8_kernels.set_dynamic`) is fused again from its new weights, or, once the
  members no longer share one format, the group stops fusing; a call while tracing or
  compiling, an input without a version counter (an inference-mode tensor, whose
  in-place changes cannot be seen) or of another width runs the member alone.
  Siblings that turn out not to read one input (a cross-attention's key and value read
  the encoder's states) leave columns nobody asked for; after `MISS_LIMIT` such calls
  the group stops fusing and every member runs alone, so the guess costs a few calls
  at most. Pending columns are kept per thread, so threads sharing a model do not see
  each other's inputs.
"""

from __future__ import annotations

import threading
import warnings
from contextlib import contextmanager

import torch
import torch.nn as nn

from kmr_dsl.runtime import int8_kernels as k8

# names of sibling Linears that models call on one tensor, one after the other
SIBLINGS: tuple[tuple[str, ...], ...] = (
    ("query", "key", "value"),
    ("q_proj", "k_proj", "v_proj"),
    ("gate_proj", "up_proj"),
)
MISS_LIMIT = 4


def _tracing() -> bool:
    """jit tracing/scripting, torch.compile or torch.export (fx symbolic tracing passes
    proxies, not tensors, and is refused where the input is checked)."""
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling()


def _format(mod: nn.Module) -> tuple:
    """What members must share to run as one GEMM."""
    return (mod.in_features, bool(mod.symmetric), bool(mod.full_range), mod.bias() is not None)


class SiblingGroup:
    """Int8 dynamic Linears reading one input, computed by one GEMM (module docstring)."""

    def __init__(self, members: list[nn.Module]):
        self.members = list(members)
        self._setup()

    def _setup(self) -> None:
        self.misses = 0
        # (the members' own packed weights it was built from, their packed weights side by
        # side, each member's columns), built on first use
        self.fused = None
        self._local = threading.local()

    # deepcopy / pickle: the derived state is rebuilt, the thread-local is not copyable
    def __getstate__(self):
        return {"members": self.members}

    def __setstate__(self, state):
        self.members = state["members"]
        self._setup()

    def _packed(self):
        """The fused weight, rebuilt whenever a member's weights were replaced; None (and
        the group stops fusing) once the members no longer share one format."""
        current = tuple(m._packed_params._packed_params for m in self.members)
        fused = self.fused
        if fused is not None and all(a is b for a, b in zip(current, fused[0])):
            return fused[1:]
        if len({_format(m) for m in self.members}) != 1:
            self.misses = MISS_LIMIT
            return None
        parts = [k8.dynamic_parts(m) for m in self.members]
        q = torch.cat([p[0] for p in parts])
        scale = torch.cat([p[1] for p in parts])
        bias = None if parts[0][2] is None else torch.cat([p[2] for p in parts])
        zeros = [k8.int8_zero_points(m) for m in self.members]
        zero = None if zeros[0] is None else torch.cat(zeros)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = k8.dynamic_linear(q, scale, bias, zero)
        ends = torch.tensor([p[0].shape[0] for p in parts]).cumsum(0).tolist()
        # one tuple, assigned at once: a thread reads sources, weight and columns of one build
        built = (current, module._packed_params._packed_params, tuple(zip([0] + ends[:-1], ends)))
        self.fused = built
        return built[1:]

    def forward(self, member: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.misses >= MISS_LIMIT or _tracing() or not isinstance(x, torch.Tensor) or x.is_inference():
            return member.forward_alone(x)
        local = self._local
        pending = getattr(local, "pending", None)
        if pending and local.input is x and local.version == x._version and member in pending:
            out = pending.pop(member)
            if not pending:
                local.input = local.pending = None
            return out
        if pending:
            self.misses += 1        # columns computed that nobody asked for
        local.input = local.pending = None
        fused = self._packed()
        if fused is None or x.dim() == 0 or x.shape[-1] != member.in_features:
            return member.forward_alone(x)
        packed, bounds = fused
        y = torch.ops.quantized.linear_dynamic(x.float(), packed, reduce_range=not member.full_range)
        if x.dtype.is_floating_point:
            y = y.to(x.dtype)
        outs = {m: y[..., a:b] for m, (a, b) in zip(self.members, bounds)}
        mine = outs.pop(member)
        local.input, local.version, local.pending = x, x._version, outs
        return mine


def groups(model: nn.Module) -> list[SiblingGroup]:
    found = {id(g): g for m in model.modules() if (g := getattr(m, "siblings", None)) is not None}
    return list(found.values())


def uninstall(model: nn.Module) -> None:
    for m in model.modules():
        if getattr(m, "siblings", None) is not None:
            m.siblings = None


def install(model: nn.Module) -> int:
    """Link sibling int8 Linears that read one input (module docstring); how many were linked."""
    uninstall(model)
    linked = 0
    for parent in model.modules():
        children = dict(parent.named_children())
        for names in SIBLINGS:
            found = [children[n] for n in names if isinstance(children.get(n), k8.DynamicLinear)]
            by_format: dict[tuple, list[nn.Module]] = {}
            for mod in found:
                by_format.setdefault(_format(mod), []).append(mod)
            for members in by_format.values():
                if len(members) >= 2:
                    group = SiblingGroup(members)
                    for mod in members:
                        mod.siblings = group
                    linked += len(members)
    return linked


@contextmanager
def fused(model: nn.Module):
    """The model linked as the artifact loader links it, for the duration (module docstring)."""
    if groups(model):
        yield model
        return
    install(model)
    try:
        yield model
    finally:
        uninstall(model)


__all__ = ["MISS_LIMIT", "SIBLINGS", "SiblingGroup", "fused", "groups", "install", "uninstall"]
