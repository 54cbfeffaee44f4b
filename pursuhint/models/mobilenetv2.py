"""MobileNetV2 for CIFAR as the CRD benchmark's ``mobile_half`` (expansion 6, width 0.5).

Names and computation match RepDistiller's ``models/mobilenetv2.py``: a stride-2 stem ``conv1``,
seven stages of inverted residuals in ``blocks``, a 1×1 ``conv2`` to 1280 channels and
``classifier.0`` (a linear layer inside a Sequential).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .registry import MODELS

# expansion t (None = the model's T), output channels c, units n, first stride s
_SETTING: list[tuple[int | None, int, int, int]] = [
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
]
# The benchmark taps features after blocks 1, 2, 4 and 6: these are its four stages (one resolution each).
_STAGES: list[list[int]] = [[0, 1], [2], [3, 4], [5, 6]]


def _conv_bn_relu(inp: int, oup: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, oup, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(oup), nn.ReLU()
    )


class InvertedResidual(nn.Module):
    """1×1 expand, 3×3 depthwise, 1×1 linear projection; identity shortcut when shape is kept."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(nn.Module):
    """MobileNetV2 with expansion ``T`` and width multiplier ``width_mult`` for 32-px inputs."""

    classifier_path = "classifier.0"

    def __init__(self, T: int, width_mult: float, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        channels = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(in_channels, channels, 3, 2)
        self.blocks = nn.ModuleList()
        for t, c, n, s in _SETTING:
            out = int(c * width_mult)
            units = []
            for i in range(n):
                units.append(InvertedResidual(channels, out, s if i == 0 else 1, T if t is None else t))
                channels = out
            self.blocks.append(nn.Sequential(*units))
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(channels, self.last_channel, 1, 1)
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, num_classes))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def block_stages(self) -> list[list[str]]:
        """Every inverted-residual unit, grouped into the benchmark's four feature stages."""
        return [[f"blocks.{b}.{i}" for b in group for i in range(len(self.blocks[b]))] for group in _STAGES]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        for stage in self.blocks:
            out = stage(out)
        out = torch.flatten(self.avgpool(self.conv2(out)), 1)
        return self.classifier(out)


@MODELS.register("mobilenetv2")
def mobilenetv2(num_classes: int, in_channels: int = 3) -> MobileNetV2:
    """The CRD benchmark's ``mobile_half``: MobileNetV2 with T = 6 and width 0.5."""
    return MobileNetV2(6, 0.5, num_classes, in_channels)
