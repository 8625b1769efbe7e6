"""Small generated models and datasets for the rule-contract tests.

Contract: an `Arch` is a tiny architecture, drawn by `arch_strategy(kinds)` and built by
`build(arch)` into an `nn.Sequential` with deterministic weights (torch's default
initialisation under `torch.manual_seed(arch.seed)`, the global RNG restored after):
- `mlp`: 2 or 3 Linear layers of 4-32 features, ReLU between, each with or without bias,
  with or without a LayerNorm before each (a pre-norm MLP: what smoothquant and awq fold
  into);
- `cnn`: Conv2d -> [BatchNorm2d] -> ReLU -> Conv2d -> ReLU -> Flatten -> Linear on a
  1-3 channel, 3-6 pixel square input, kernels 1 or 3 (same padding), 2-8 channels;
- `embed`: Embedding (5-32 tokens, 2-16 dims) -> Flatten -> Linear on 1-4 token ids.
Each is built from Sequentials only, so channel links (`layers.channel_links`) exist
between its layers. Models start dense, as the spec's state does ("density normally
1"); `arch_strategy(kinds, pruned_start=True)` also draws starts where 25% or 50% of
each weight layer is already pruned (masked as `prune` leaves it), which tests how
effects on `density` compose with earlier pruning. The simplest draw (what Hypothesis shrinks towards) is the first
family that has a layer of an accepted kind, with the smallest sizes and biases on.
`layer_names(arch)` lists (name, kind) of the logical layers without building the
model; `dataset(arch, n, seed)` is n labelled examples of the model's input shape
(class targets in [0, outputs)); `describe(arch)` prints the architecture for a report.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn
from hypothesis import strategies as st

from kmr_dsl.runtime import layers as kl
from kmr_dsl.runtime.data import Dataset

FAMILY_KINDS = {
    "mlp": ("Linear", "LayerNorm"),
    "cnn": ("Conv2d", "BatchNorm2d", "Linear"),
    "embed": ("Embedding", "Linear"),
}
FEATURES = (4, 32)


@dataclass(frozen=True)
class Arch:
    family: str                  # mlp | cnn | embed
    sizes: tuple[int, ...]       # mlp: (in, h..., out); cnn: (c_in, c1, c2, out); embed: (vocab, dim, seq, out)
    bias: tuple[bool, ...]       # per weight layer
    kernel: int = 3              # cnn
    spatial: int = 4             # cnn: input height = width
    batchnorm: bool = False      # cnn
    layernorm: bool = False      # mlp: a LayerNorm before every Linear (a pre-norm MLP)
    seed: int = 0
    pruned: float = 0.0          # fraction of every weight layer masked at build (a pruned start)

    @property
    def input_shape(self) -> tuple[int, ...]:
        if self.family == "mlp":
            return (1, self.sizes[0])
        if self.family == "cnn":
            return (1, self.sizes[0], self.spatial, self.spatial)
        return (1, self.sizes[2])

    @property
    def input_dtype(self) -> str:
        return "int64" if self.family == "embed" else "float32"

    @property
    def outputs(self) -> int:
        return self.sizes[-1]


def families_for(kinds: tuple[str, ...] | None) -> list[str]:
    """The families that have a layer of one of `kinds` (every family for a whole-model rule)."""
    if kinds is None:
        return ["mlp", "cnn"]
    return [f for f, have in FAMILY_KINDS.items() if set(have) & set(kinds)]


def _modules(arch: Arch) -> list[nn.Module]:
    s, b = arch.sizes, arch.bias
    if arch.family == "mlp":
        mods: list[nn.Module] = []
        for i, (a, c) in enumerate(zip(s[:-1], s[1:])):
            if i:
                mods.append(nn.ReLU())
            if arch.layernorm:
                mods.append(nn.LayerNorm(a))
            mods.append(nn.Linear(a, c, bias=b[i]))
        return mods
    if arch.family == "cnn":
        c_in, c1, c2, out = s
        pad = arch.kernel // 2
        mods = [nn.Conv2d(c_in, c1, arch.kernel, padding=pad, bias=b[0])]
        if arch.batchnorm:
            mods.append(nn.BatchNorm2d(c1))
        mods += [nn.ReLU(), nn.Conv2d(c1, c2, arch.kernel, padding=pad, bias=b[1]), nn.ReLU(), nn.Flatten(),
                 nn.Linear(c2 * arch.spatial * arch.spatial, out, bias=b[2])]
        return mods
    vocab, dim, seq, out = s
    return [nn.Embedding(vocab, dim), nn.Flatten(), nn.Linear(seq * dim, out, bias=b[0])]


def layer_names(arch: Arch) -> list[tuple[str, str]]:
    """(qualified name, kind) of every logical layer, in module order."""
    kinds = {kind for have in FAMILY_KINDS.values() for kind in have}
    return [(str(i), type(m).__name__) for i, m in enumerate(_skeleton(arch)) if type(m).__name__ in kinds]


def _skeleton(arch: Arch) -> list[nn.Module]:
    # the modules on the meta device: shapes without allocating or initialising weights
    with torch.device("meta"):
        return _modules(arch)


def build(arch: Arch) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(arch.seed)
        model = nn.Sequential(*_modules(arch))
        if arch.batchnorm:
            for mod in model.modules():
                if isinstance(mod, nn.BatchNorm2d):
                    # non-trivial statistics, so a sliced norm is visibly sliced
                    mod.running_mean.normal_(0.0, 0.1)
                    mod.running_var.uniform_(0.5, 1.5)
        if arch.pruned:
            # a pruned start, as `prune` leaves it: weights zeroed under a recorded mask
            for mod in model.modules():
                if kl.is_leaf(mod):
                    kl.set_mask(mod, torch.rand(mod.weight.shape) >= arch.pruned)
    return model.eval()


def dataset(arch: Arch, n: int, seed: int) -> Dataset:
    gen = torch.Generator().manual_seed(seed)
    shape = (n,) + tuple(arch.input_shape[1:])
    if arch.family == "embed":
        x = torch.randint(0, arch.sizes[0], shape, generator=gen)
    else:
        x = torch.randn(shape, generator=gen)
    y = torch.randint(0, arch.outputs, (n,), generator=gen)
    return Dataset(x, y, f"generated({n})")


def describe(arch: Arch) -> str:
    """`Sequential([0] Linear(8, 16), [1] ReLU, [2] Linear(16, 4, bias=False))`, input shape."""
    parts = []
    for i, mod in enumerate(_skeleton(arch)):
        name = type(mod).__name__
        if isinstance(mod, nn.Linear):
            name = f"Linear({mod.in_features}, {mod.out_features}{'' if mod.bias is not None else ', bias=False'})"
        elif isinstance(mod, nn.Conv2d):
            name = (f"Conv2d({mod.in_channels}, {mod.out_channels}, kernel={mod.kernel_size[0]}"
                    f"{'' if mod.bias is not None else ', bias=False'})")
        elif isinstance(mod, nn.BatchNorm2d):
            name = f"BatchNorm2d({mod.num_features})"
        elif isinstance(mod, nn.Embedding):
            name = f"Embedding({mod.num_embeddings}, {mod.embedding_dim})"
        parts.append(f"[{i}] {name}")
    pruned = f", {arch.pruned:.0%} of each weight layer pruned" if arch.pruned else ""
    return f"Sequential({', '.join(parts)}) on input {list(arch.input_shape)} (seed {arch.seed}{pruned})"


# ---------------------------------------------------------------- strategies

_SIZE = st.integers(*FEATURES)
_BIAS = st.sampled_from((True, False))
_SEED = st.integers(0, 2 ** 16)


@st.composite
def _mlp(draw) -> Arch:
    depth = draw(st.sampled_from((2, 3)))
    sizes = tuple(draw(_SIZE) for _ in range(depth + 1))
    return Arch("mlp", sizes, tuple(draw(_BIAS) for _ in range(depth)), seed=draw(_SEED),
                layernorm=draw(st.sampled_from((False, True))))


@st.composite
def _cnn(draw) -> Arch:
    sizes = (draw(st.integers(1, 3)), draw(st.integers(2, 8)), draw(st.integers(2, 8)), draw(st.integers(2, 6)))
    return Arch("cnn", sizes, tuple(draw(_BIAS) for _ in range(3)), kernel=draw(st.sampled_from((3, 1))),
                spatial=draw(st.integers(3, 6)), batchnorm=draw(st.sampled_from((True, False))), seed=draw(_SEED))


@st.composite
def _embed(draw) -> Arch:
    sizes = (draw(st.integers(5, 32)), draw(st.integers(2, 16)), draw(st.integers(1, 4)), draw(st.integers(2, 8)))
    return Arch("embed", sizes, (draw(_BIAS),), seed=draw(_SEED))


_FAMILIES = {"mlp": _mlp, "cnn": _cnn, "embed": _embed}


PRUNED_STARTS = (0.0, 0.25, 0.5)


def arch_strategy(kinds: tuple[str, ...] | None, pruned_start: bool = False) -> st.SearchStrategy:
    """Architectures with a layer of one of `kinds` (any for a whole-model rule); with
    `pruned_start`, a quarter or half of each weight layer may start pruned (dense first)."""
    families = families_for(kinds)
    if not families:
        raise ValueError(f"no generated model has a layer of kind {', '.join(kinds or ())}")
    archs = st.sampled_from(families).flatmap(lambda f: _FAMILIES[f]())
    if not pruned_start:
        return archs
    return st.tuples(archs, st.sampled_from(PRUNED_STARTS)).map(lambda t: replace(t[0], pruned=t[1]))


__all__ = ["Arch", "FAMILY_KINDS", "PRUNED_STARTS", "arch_strategy", "build", "dataset", "describe", "families_for", "layer_names"]
