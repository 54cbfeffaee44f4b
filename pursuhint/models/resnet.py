"""CIFAR ResNets (resnet8 … resnet110, resnet8x4, resnet32x4) with the CRD benchmark's layout.

Module names, shapes and computation match RepDistiller's ``models/resnet.py``, so its published
teachers load with ``strict=True``; the forward returns logits only and pools adaptively.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import MODELS


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn, plus the (projected) shortcut, then ReLU: the block output.

    ``self.relu`` runs last on the pre-activation sum, so a pre-hook on it taps ``preact``.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class CifarResNet(nn.Module):
    """Three stages of basic blocks on 16/32/64 (or 4× wider) channels; ``fc`` takes the pooled features."""

    classifier_path = "fc"

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.layer1 = self._make_layer(widths[1], n, stride=1)
        self.layer2 = self._make_layer(widths[2], n, stride=2)
        self.layer3 = self._make_layer(widths[3], n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3] * BasicBlock.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * BasicBlock.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * BasicBlock.expansion),
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * BasicBlock.expansion
        layers += [BasicBlock(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def block_stages(self) -> list[list[str]]:
        """Every residual block, grouped by stage (``layer1`` … ``layer3``)."""
        return [[f"{s}.{i}" for i in range(len(getattr(self, s)))] for s in ("layer1", "layer2", "layer3")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


_NARROW = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)


@MODELS.register("resnet8")
def resnet8(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """CRD-benchmark resnet8: depth 8, widths (16, 16, 32, 64)."""
    return CifarResNet(8, _NARROW, num_classes, in_channels)


@MODELS.register("resnet14")
def resnet14(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """CRD-benchmark resnet14: depth 14, widths (16, 16, 32, 64)."""
    return CifarResNet(14, _NARROW, num_classes, in_channels)


@MODELS.register("resnet20")
def resnet20(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """CRD-benchmark resnet20: depth 20, widths (16, 16, 32, 64)."""
    return CifarResNet(20, _NARROW, num_classes, in_channels)


@MODELS.register("resnet32")
def resnet32(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """CRD-benchmark resnet32: depth 32, widths (16, 16, 32, 64)."""
    return CifarResNet(32, _NARROW, num_classes, in_channels)


@MODELS.register("resnet44")
def resnet44(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """CRD-benchmark resnet44: depth 44, widths (16, 16, 32, 64)."""
    return CifarResNet(44, _NARROW, num_classes, in_channels)


@MODELS.register("resnet56")
def resnet56(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """CRD-benchmark resnet56: depth 56, widths (16, 16, 32, 64)."""
    return CifarResNet(56, _NARROW, num_classes, in_channels)


@MODELS.register("resnet110")
def resnet110(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """CRD-benchmark resnet110: depth 110, widths (16, 16, 32, 64)."""
    return CifarResNet(110, _NARROW, num_classes, in_channels)


@MODELS.register("resnet8x4")
def resnet8x4(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """CRD-benchmark resnet8x4: depth 8, widths (32, 64, 128, 256)."""
    return CifarResNet(8, _WIDE, num_classes, in_channels)


@MODELS.register("resnet32x4")
def resnet32x4(num_classes: int, in_channels: int = 3) -> CifarResNet:
    """CRD-benchmark resnet32x4: depth 32, widths (32, 64, 128, 256)."""
    return CifarResNet(32, _WIDE, num_classes, in_channels)
