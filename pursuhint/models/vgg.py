"""BN VGGs for CIFAR (vgg8, vgg11, vgg13, vgg16, vgg19) with the CRD benchmark's layout.

Parameters and names match RepDistiller's ``models/vgg.py`` (``vgg*_bn``): five conv blocks
``block0`` … ``block4`` and a single ``classifier`` linear layer. Each block ends in its ReLU here
(a parameter-free module, so checkpoints are unaffected) so a hook on ``blockN`` sees the
post-activation output, which the reference applies functionally.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .registry import MODELS

_CFG: dict[str, list[list[int]]] = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def _conv_block(widths: list[int], in_channels: int) -> nn.Sequential:
    """conv(bias)-bn-relu per width; indices 0,1,2, 3,4,5, … as in the reference."""
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(in_channels, w, kernel_size=3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
        in_channels = w
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """Five BN conv blocks separated by max-pools, adaptive average pool, one linear ``classifier``."""

    classifier_path = "classifier"

    def __init__(self, cfg: list[list[int]], num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.block0 = _conv_block(cfg[0], in_channels)
        self.block1 = _conv_block(cfg[1], cfg[0][-1])
        self.block2 = _conv_block(cfg[2], cfg[1][-1])
        self.block3 = _conv_block(cfg[3], cfg[2][-1])
        self.block4 = _conv_block(cfg[4], cfg[3][-1])
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool4 = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(cfg[4][-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def block_stages(self) -> list[list[str]]:
        """``block1`` … ``block4``, each its own stage (``block0`` is the stem)."""
        return [["block1"], ["block2"], ["block3"], ["block4"]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height = x.shape[2]
        x = self.pool0(self.block0(x))
        x = self.pool1(self.block1(x))
        x = self.pool2(self.block2(x))
        x = self.block3(x)
        if height == 64:  # the benchmark pools once more for 64-px inputs (Tiny-ImageNet)
            x = self.pool3(x)
        x = self.block4(x)
        x = torch.flatten(self.pool4(x), 1)
        return self.classifier(x)


@MODELS.register("vgg8")
def vgg8(num_classes: int, in_channels: int = 3) -> VGG:
    """CRD-benchmark vgg8 with batch norm."""
    return VGG(_CFG["vgg8"], num_classes, in_channels)


@MODELS.register("vgg11")
def vgg11(num_classes: int, in_channels: int = 3) -> VGG:
    """CRD-benchmark vgg11 with batch norm."""
    return VGG(_CFG["vgg11"], num_classes, in_channels)


@MODELS.register("vgg13")
def vgg13(num_classes: int, in_channels: int = 3) -> VGG:
    """CRD-benchmark vgg13 with batch norm."""
    return VGG(_CFG["vgg13"], num_classes, in_channels)


@MODELS.register("vgg16")
def vgg16(num_classes: int, in_channels: int = 3) -> VGG:
    """CRD-benchmark vgg16 with batch norm."""
    return VGG(_CFG["vgg16"], num_classes, in_channels)


@MODELS.register("vgg19")
def vgg19(num_classes: int, in_channels: int = 3) -> VGG:
    """CRD-benchmark vgg19 with batch norm."""
    return VGG(_CFG["vgg19"], num_classes, in_channels)
