"""torchvision's ResNet naming (conv1, layerN.M.convK, layerN.0.downsample.0, fc) on a
few channels, for the SparseML ResNet recipes (torchvision itself does not load on this
CPU build)."""

from __future__ import annotations

import torch
import torch.nn as nn


class _Bottleneck(nn.Module):
    def __init__(self, cin, width, cout, downsample):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False)) if downsample else None

    def forward(self, x):
        y = self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x)))))
        return torch.relu(y + (self.downsample(x) if self.downsample is not None else x))


class _ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        for i in range(1, 5):
            setattr(self, f"layer{i}", nn.Sequential(_Bottleneck(8, 4, 8, True), _Bottleneck(8, 4, 8, False)))
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(x.mean(dim=(2, 3)))


def resnet():
    torch.manual_seed(0)
    return _ResNet().eval()


def example_input():
    return torch.zeros(1, 3, 8, 8)
