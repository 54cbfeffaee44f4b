"""The architecture registry and ``create_model``: zoo names, or ``torchvision:<name>``."""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..errors import ModelError
from ..infra.registry import Registry
from .torchvision_adapter import PREFIX, build_torchvision

ModelFactory = Callable[[int, int], nn.Module]

MODELS: Registry[ModelFactory] = Registry("architecture", error=ModelError)


def available_models() -> list[str]:
    """The zoo's architecture names; any torchvision classifier is also available as ``torchvision:<name>``."""
    return MODELS.names()


def create_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """A freshly initialised ``name`` (zoo name or ``torchvision:<name>``) with ``num_classes`` outputs."""
    for label, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelError(f"{label} must be a positive integer, got {value!r}")
    if isinstance(name, str) and name.startswith(PREFIX):
        return build_torchvision(name[len(PREFIX):], num_classes, in_channels)
    return MODELS.get(name)(num_classes, in_channels)
