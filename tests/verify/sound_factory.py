"""Small models and data for the end-to-end soundness suite (tests/verify/soundness.py).

The suite copies this file beside each generated program, whose `model` and `data`
declarations call it as a factory:

    model m = factory("sound_factory:make", family = "mlp", sizes = "8,16,4", bias = "10", seed = 3)
    data train = factory("sound_factory:data", family = "mlp", sizes = "8,16,4", n = 16)

Families (sizes are comma-separated integers, bias one 0/1 flag per weight layer):
- `mlp`: sizes (in, hidden..., out): Linear layers with ReLU between, each read through
  a LayerNorm when `norm` = 1 (a pre-norm MLP: what smoothquant and awq fold into);
- `cnn`: sizes (c_in, c1, c2, out, spatial): Conv2d (3x3, same padding) -> [BatchNorm2d
  when `norm` = 1] -> ReLU -> Conv2d -> ReLU -> Flatten -> Linear;
- `embed`: sizes (vocab, dim, seq, out): Embedding -> Flatten -> Linear;
- `residual`: sizes (in, d, h, out): Linear(in, d) -> a block x + fc2(relu(fc1(x))) with
  fc1 d -> h, fc2 h -> d -> Linear(d, out) (fc2's outputs are added to the skip path, so
  pruning its channels alone cannot keep the shapes);
- `tied`: sizes (vocab, dim, seq): Embedding(vocab, dim) -> Linear(dim, dim) -> ReLU ->
  a head Linear(dim, vocab) whose weight IS the embedding's (tied), logits averaged over
  the seq tokens: a classifier over `vocab` classes.
The model carries its example input as the attribute `example_input` (zeros of shape
(1, ...), token ids for the families that start with an Embedding). Weights are torch's default initialisation under `torch.manual_seed(seed)`, the global
RNG restored after. `data` draws n labelled examples of the model's input (seeded).
"""

from __future__ import annotations

import torch
import torch.nn as nn


def _ints(text: str) -> list[int]:
    return [int(t) for t in str(text).split(",") if t.strip()]


def _flags(text: str, n: int) -> list[bool]:
    text = str(text or "")
    return [(text[i] == "1") if i < len(text) else True for i in range(n)]


class Residual(nn.Module):
    def __init__(self, d: int, h: int, bias: bool):
        super().__init__()
        self.fc1 = nn.Linear(d, h, bias=bias)
        self.fc2 = nn.Linear(h, d, bias=bias)

    def forward(self, x):
        return x + self.fc2(torch.relu(self.fc1(x)))


class Tied(nn.Module):
    def __init__(self, vocab: int, dim: int, bias: bool):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.hidden = nn.Linear(dim, dim, bias=bias)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, x):
        return self.head(torch.relu(self.hidden(self.emb(x)))).mean(dim=1)


def _modules(family: str, s: list[int], b: list[bool], norm: bool) -> nn.Module:
    if family == "mlp":
        mods: list[nn.Module] = []
        for i, (a, c) in enumerate(zip(s[:-1], s[1:])):
            if i:
                mods.append(nn.ReLU())
            if norm:
                mods.append(nn.LayerNorm(a))
            mods.append(nn.Linear(a, c, bias=b[i]))
        return nn.Sequential(*mods)
    if family == "cnn":
        c_in, c1, c2, out, spatial = s
        mods = [nn.Conv2d(c_in, c1, 3, padding=1, bias=b[0])]
        if norm:
            mods.append(nn.BatchNorm2d(c1))
        mods += [nn.ReLU(), nn.Conv2d(c1, c2, 3, padding=1, bias=b[1]), nn.ReLU(), nn.Flatten(),
                 nn.Linear(c2 * spatial * spatial, out, bias=b[2])]
        return nn.Sequential(*mods)
    if family == "embed":
        vocab, dim, seq, out = s
        return nn.Sequential(nn.Embedding(vocab, dim), nn.Flatten(), nn.Linear(seq * dim, out, bias=b[0]))
    if family == "residual":
        fin, d, h, out = s
        return nn.Sequential(nn.Linear(fin, d, bias=b[0]), nn.ReLU(), Residual(d, h, b[1]), nn.Linear(d, out, bias=b[2]))
    if family == "tied":
        vocab, dim, _seq = s
        return Tied(vocab, dim, b[0])
    raise ValueError(f"unknown family {family!r}")


def make(family: str, sizes: str, bias: str = "", norm: int = 0, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = _modules(family, _ints(sizes), _flags(bias, 3), bool(norm))
        if norm:
            for mod in model.modules():
                if isinstance(mod, nn.BatchNorm2d):
                    mod.running_mean.normal_(0.0, 0.1)
                    mod.running_var.uniform_(0.5, 1.5)
    # the example input the facts are measured on (introspect reads this attribute)
    tokens = family in ("embed", "tied")
    model.example_input = torch.zeros(input_shape(family, sizes), dtype=torch.int64 if tokens else torch.float32)
    return model.eval()


def input_shape(family: str, sizes: str) -> list[int]:
    s = _ints(sizes)
    if family == "cnn":
        return [1, s[0], s[4], s[4]]
    if family in ("embed", "tied"):
        return [1, s[2]]
    return [1, s[0]]


def data(family: str, sizes: str, n: int = 16, seed: int = 0):
    s = _ints(sizes)
    gen = torch.Generator().manual_seed(int(seed))
    shape = [int(n)] + input_shape(family, sizes)[1:]
    if family in ("embed", "tied"):
        x = torch.randint(0, s[0], shape, generator=gen)
    else:
        x = torch.randn(shape, generator=gen)
    classes = s[0] if family == "tied" else s[3] if family == "cnn" else s[-1]
    return x, torch.randint(0, classes, (int(n),), generator=gen)
