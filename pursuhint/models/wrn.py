"""Wide ResNets (wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2) with the CRD benchmark's layout.

Pre-activation blocks exactly as RepDistiller's ``models/wrn.py`` (same names, same shortcut on
the activated input when the width changes); a block's output is its residual sum.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .registry import MODELS


class WideBasic(nn.Module):
    """bn-relu-conv-bn-relu-conv plus shortcut; a 1×1 ``convShortcut`` when in and out widths differ."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = (
            None
            if self.equal_in_out
            else nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(act))))
        # Same width: identity on the raw input; new width: the projection sees the activated input.
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return shortcut + out


class NetworkBlock(nn.Module):
    """One stage: ``nb_layers`` wide blocks in ``self.layer`` (the benchmark's module path)."""

    def __init__(self, nb_layers: int, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[
                WideBasic(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1)
                for i in range(nb_layers)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-k for CIFAR: stem conv, three stages, final bn-relu, pooled features into ``fc``."""

    classifier_path = "fc"

    def __init__(self, depth: int, widen_factor: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU()
        self.fc = nn.Linear(widths[3], num_classes)
        self.nChannels = widths[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def block_stages(self) -> list[list[str]]:
        """Every wide block, grouped by stage (``block1.layer.*`` … ``block3.layer.*``)."""
        stages = ("block1", "block2", "block3")
        return [[f"{s}.layer.{i}" for i in range(len(getattr(self, s).layer))] for s in stages]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        out = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return self.fc(out)


@MODELS.register("wrn_16_1")
def wrn_16_1(num_classes: int, in_channels: int = 3) -> WideResNet:
    """CRD-benchmark WRN-16-1."""
    return WideResNet(16, 1, num_classes, in_channels)


@MODELS.register("wrn_16_2")
def wrn_16_2(num_classes: int, in_channels: int = 3) -> WideResNet:
    """CRD-benchmark WRN-16-2."""
    return WideResNet(16, 2, num_classes, in_channels)


@MODELS.register("wrn_40_1")
def wrn_40_1(num_classes: int, in_channels: int = 3) -> WideResNet:
    """CRD-benchmark WRN-40-1."""
    return WideResNet(40, 1, num_classes, in_channels)


@MODELS.register("wrn_40_2")
def wrn_40_2(num_classes: int, in_channels: int = 3) -> WideResNet:
    """CRD-benchmark WRN-40-2."""
    return WideResNet(40, 2, num_classes, in_channels)
