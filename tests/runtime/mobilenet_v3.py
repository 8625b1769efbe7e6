"""MobileNetV3-Small ("Searching for MobileNetV3", Howard et al. 2019, Table 2), written
out in torch: transformers has no MobileNetV3 and torchvision's operators do not load
with the CPU torch these tests run on. Loaded through `factory("mobilenet_v3:...")`.

The architecture is the paper's (and torchvision's layout of it): a 3x3 stride-2 stem
(hardswish), eleven inverted-residual blocks ("bneck": 1x1 expansion, k x k depthwise
convolution, optional squeeze-and-excitation, linear 1x1 projection; a residual
addition where stride is 1 and the width is kept), a 1x1 conv to 6 x 96 channels, global
average pooling, and a two-layer classifier (1024 hidden units, hardswish). The SE block
pools the depthwise output, squeezes it to a quarter of its channels (ReLU), expands it
back and gates the depthwise output with a hardsigmoid: the channels of the expansion,
the depthwise conv, the SE's second conv and the projection's input are one coupled
group. Widths are multiplied by `width` and rounded to multiples of 8, as in the paper.
At width 1 with 1000 classes: 2,542,856 parameters and 56.5M multiply-adds at 224 x 224
(the paper: 2.5M, 56M).
"""

from collections import OrderedDict

import torch
from torch import nn

# kernel, expanded, out, squeeze-and-excitation, activation (RE: ReLU, HS: hardswish), stride
SMALL = (
    (3, 16, 16, True, "RE", 2),
    (3, 72, 24, False, "RE", 2),
    (3, 88, 24, False, "RE", 1),
    (5, 96, 40, True, "HS", 2),
    (5, 240, 40, True, "HS", 1),
    (5, 240, 40, True, "HS", 1),
    (5, 120, 48, True, "HS", 1),
    (5, 144, 48, True, "HS", 1),
    (5, 288, 96, True, "HS", 2),
    (5, 576, 96, True, "HS", 1),
    (5, 576, 96, True, "HS", 1),
)


def divisible(value: float, divisor: int = 8) -> int:
    """The paper's channel rounding: the nearest multiple of `divisor` (at least one),
    never more than 10% below `value`."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def _act(name: str) -> nn.Module:
    return nn.Hardswish() if name == "HS" else nn.ReLU()


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: str | None = None):
        layers = [("conv", nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)),
                  ("bn", nn.BatchNorm2d(cout, eps=0.001, momentum=0.01))]
        if act is not None:
            layers.append(("act", _act(act)))
        super().__init__(OrderedDict(layers))


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))
        return scale * x


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, kernel: int, expanded: int, cout: int, se: bool, act: str, stride: int):
        super().__init__()
        layers = []
        if expanded != cin:
            layers.append(("expand", ConvBNAct(cin, expanded, 1, act=act)))
        layers.append(("depthwise", ConvBNAct(expanded, expanded, kernel, stride, groups=expanded, act=act)))
        if se:
            layers.append(("se", SqueezeExcitation(expanded, divisible(expanded // 4))))
        layers.append(("project", ConvBNAct(expanded, cout, 1)))
        self.block = nn.Sequential(OrderedDict(layers))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return y + x if self.residual else y


class MobileNetV3(nn.Module):
    def __init__(self, config=SMALL, width: float = 1.0, last: int = 1024, classes: int = 1000):
        super().__init__()
        cin = divisible(16 * width)
        blocks = [ConvBNAct(3, cin, 3, 2, act="HS")]
        for kernel, expanded, out, se, act, stride in config:
            cout = divisible(out * width)
            blocks.append(InvertedResidual(cin, kernel, divisible(expanded * width), cout, se, act, stride))
            cin = cout
        head = 6 * cin
        blocks.append(ConvBNAct(cin, head, 1, act="HS"))
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        hidden = divisible(last * width)
        self.classifier = nn.Sequential(nn.Linear(head, hidden), nn.Hardswish(), nn.Dropout(0.2),
                                        nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def make_mobilenet_v3(width: float = 0.25, classes: int = 5, seed: int = 0) -> MobileNetV3:
    """MobileNetV3-Small at `width` (0.25: 8 to 144 channels; 52 convolutions, 2 Linears,
    34 BatchNorms: 88 layers) for 3 x 32 x 32 inputs (any size works: the pooling is
    global). He-initialised convolutions and BatchNorm statistics of a trained network's
    order, so the function is far from zero (transformers-style small initialisations
    shrink it towards 0 over 11 blocks)."""
    torch.manual_seed(seed)
    model = MobileNetV3(width=width, classes=classes).eval()
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out")
                if mod.bias is not None:
                    mod.bias.uniform_(-0.1, 0.1)
            elif isinstance(mod, nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.1, 0.1)
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 2.0)
    return model


def example_input() -> torch.Tensor:
    return torch.zeros(1, 3, 32, 32)
