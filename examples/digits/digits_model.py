"""The digits example's model: a 64-128-64-10 ReLU MLP for scikit-learn's 8x8 digits.

Contract: `make_mlp()` builds the architecture (random weights; `train_baseline.py`
writes the trained ones to `mlp.safetensors`); `example_input()` is one input of the
shape the model expects, (1, 64): the MACs meter measures on it.
"""

import torch
import torch.nn as nn


def make_mlp(hidden: int = 128, hidden2: int = 64) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(64, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden2),
        nn.ReLU(),
        nn.Linear(hidden2, 10),
    )


def example_input() -> torch.Tensor:
    return torch.zeros(1, 64)
