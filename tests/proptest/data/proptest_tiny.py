"""Tiny models and data for tests/proptest, built by `factory(...)` (no weight files).

Every factory is deterministic: weights and data come from fixed seeds, drawn without
disturbing torch's global random state.
"""

import torch
import torch.nn as nn


def make_mlp(hidden: int = 16) -> nn.Sequential:
    """An 8 -> hidden -> 4 ReLU MLP."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Linear(hidden, 4))


def make_data(n: int = 48):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 8, generator=gen)
    w = torch.randn(8, 4, generator=gen)
    return x, (x @ w).argmax(dim=1)


def example_input() -> torch.Tensor:
    return torch.zeros(1, 8)
