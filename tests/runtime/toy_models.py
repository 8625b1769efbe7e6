"""Small models for the runtime tests, loaded through `factory("toy_models:...")`.

Every factory is deterministic (seeded), so a test can rebuild the same weights.
"""

import torch
import torch.nn as nn


def make_mlp(sizes=(16, 32, 24, 10), seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    mods = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        mods.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)


def make_cnn(seed: int = 0) -> nn.Sequential:
    """conv -> BN -> ReLU -> conv -> ReLU -> Flatten -> Linear -> ReLU -> Linear; input (1, 3, 8, 8)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(12 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 5),
    )


class Tagger(nn.Module):
    """An embedding model that is not a Sequential: no channel links."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(50, 16)
        self.norm = nn.LayerNorm(16)
        self.proj = nn.Linear(16, 8)
        self.scale = nn.Parameter(torch.ones(8))

    def forward(self, ids):
        return self.proj(self.norm(self.embed(ids)).mean(dim=1)) * self.scale


def make_tagger() -> Tagger:
    return Tagger()


def example_input():
    return torch.zeros(1, 16)


def make_data(n: int = 96, features: int = 16, classes: int = 10, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=gen)
    w = torch.randn(features, classes, generator=gen)
    return x, (x @ w).argmax(dim=1)
