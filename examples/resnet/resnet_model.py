"""A ResNet from transformers (basic blocks, four stages, random weights: no download)
and 8x8 scikit-learn digits upsampled to 3x64x64 images, for resnet.kmr."""

import torch
import torch.nn.functional as F

SIZE = 64


def make_resnet():
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    config = ResNetConfig(embedding_size=32, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1],
                          layer_type="basic", num_labels=10)
    return ResNetForImageClassification(config).eval()


def example_input():
    return torch.zeros(1, 3, SIZE, SIZE)


def make_images(split: str = "test", count: int = 128):
    """Digits (pixels 0..16 scaled to 0..1), bilinearly upsampled, three channels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data[:count] if split == "train" else digits.data[-count:], dtype=torch.float32) / 16
    y = torch.tensor(digits.target[:count] if split == "train" else digits.target[-count:], dtype=torch.long)
    images = F.interpolate(x.reshape(-1, 1, 8, 8), size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return images.repeat(1, 3, 1, 1), y
