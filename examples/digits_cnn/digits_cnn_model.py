"""The digits CNN example's model: a small convolutional net for scikit-learn's 8x8 digits.

Contract: `make_cnn(width = 16)` builds the architecture (random weights;
`train_baseline.py` writes the trained ones to `cnn.safetensors`). Input is what
KMR's `sklearn("digits")` loader serves, a (batch, 64) float tensor of pixels in
[0, 1]; the first module reshapes it to (batch, 1, 8, 8). Three 3x3 conv blocks
(width, 2 x width, 4 x width channels, BatchNorm + ReLU, two 2x2 max-pools) and a
two-Linear head, all in one `nn.Sequential`, so KMR's structured channel pruning can find
every producer/consumer pair (conv -> BatchNorm -> conv, conv -> Flatten -> Linear) and
physically remove filters. `example_input()` is one input, (1, 64): the MACs meter
measures on it, the latency meter on `batch` copies of its shape.
"""

from collections import OrderedDict

import torch
from torch import nn


def make_cnn(width: int = 16) -> nn.Sequential:
    w1, w2, w3 = width, 2 * width, 4 * width
    return nn.Sequential(OrderedDict([
        ("unflatten", nn.Unflatten(1, (1, 8, 8))),
        ("conv1", nn.Conv2d(1, w1, 3, padding=1)), ("bn1", nn.BatchNorm2d(w1)), ("relu1", nn.ReLU()),   # 8x8
        ("conv2", nn.Conv2d(w1, w2, 3, padding=1)), ("bn2", nn.BatchNorm2d(w2)), ("relu2", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),                                                                   # 4x4
        ("conv3", nn.Conv2d(w2, w3, 3, padding=1)), ("bn3", nn.BatchNorm2d(w3)), ("relu3", nn.ReLU()),
        ("pool2", nn.MaxPool2d(2)),                                                                   # 2x2
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(w3 * 4, 64)), ("relu4", nn.ReLU()),
        ("fc2", nn.Linear(64, 10)),
    ]))


def example_input() -> torch.Tensor:
    return torch.zeros(1, 64)
