"""torchvision architectures as ``torchvision:<name>``, built untrained.

Weights are never downloaded (``weights=None``). torchvision ResNets get ``block_stages`` and
``classifier_path`` like the zoo models (``contract.HintModel``); any other model has no stages
(``model_block_stages`` → []).

torchvision is imported when a ``torchvision:`` model is first asked for, not with this module: its import
(torchvision.ops pulls in torch._dynamo) costs about 1.5 s, paid otherwise by every trial worker and command.
"""

from __future__ import annotations

import difflib
import functools
from typing import Any

from torch import nn

from ..errors import ModelError

PREFIX = "torchvision:"


def _block_stages(self: nn.Module) -> list[list[str]]:
    """Every residual block, grouped by stage (``layer1`` … ``layer4``)."""
    stages = ("layer1", "layer2", "layer3", "layer4")
    return [[f"{s}.{i}" for i in range(len(getattr(self, s)))] for s in stages]


@functools.cache
def resnet_class() -> type:
    """``TorchvisionResNet``: torchvision's ResNet with the zoo's hint-point API (``block_stages``,
    ``classifier_path``); instances are re-classed, never built directly. Made once, on first use; picklable
    under its module-level name (see ``__getattr__``)."""
    from torchvision.models import ResNet  # torchvision: deferred (≈1.5 s to import)

    return type("TorchvisionResNet", (ResNet,), {"classifier_path": "fc", "block_stages": _block_stages,
                                                  "__module__": __name__, "__doc__": resnet_class.__doc__})


def __getattr__(name: str) -> Any:
    """``TorchvisionResNet`` on demand, so that pickle finds the class of a re-classed model by its name."""
    if name == "TorchvisionResNet":
        return resnet_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def torchvision_names() -> list[str]:
    """Names of torchvision's image-classification builders."""
    import torchvision  # torchvision: deferred (≈1.5 s to import)

    return sorted(torchvision.models.list_models(module=torchvision.models))


def build_torchvision(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """``torchvision.models.<name>(weights=None, num_classes=...)``, first conv adapted to ``in_channels``."""
    valid = torchvision_names()
    if name not in valid:
        close = difflib.get_close_matches(name, valid, n=3)  # several: the torchvision zoo is large
        common = ("resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0", "vit_b_16")
        some = close or [n for n in common if n in valid]
        raise ModelError(
            f"unknown torchvision architecture {name!r}; valid names include "
            f"{', '.join(PREFIX + n for n in some)} (see torchvision.models.list_models())"
        )
    import torchvision  # torchvision: deferred (≈1.5 s to import)

    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    except (TypeError, ValueError) as exc:
        raise ModelError(
            f"torchvision architecture {name!r} cannot be built with num_classes={num_classes}: {exc}"
        ) from None
    if in_channels != 3:
        _replace_first_conv(model, name, in_channels)
    if type(model) is torchvision.models.ResNet:
        model.__class__ = resnet_class()
    return model


def _replace_first_conv(model: nn.Module, name: str, in_channels: int) -> None:
    """Swap the first 3-channel ``Conv2d`` for a fresh one reading ``in_channels`` channels."""
    for path, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            try:
                new = nn.Conv2d(
                    in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                    module.dilation, module.groups, module.bias is not None, module.padding_mode,
                )
            except ValueError as exc:
                raise ModelError(f"cannot give torchvision:{name} in_channels={in_channels}: {exc}") from None
            parent_path, _, child = path.rpartition(".")
            setattr(model.get_submodule(parent_path), child, new)
            return
    raise ModelError(
        f"torchvision:{name} has no 3-channel first convolution, so in_channels={in_channels} is unsupported; use 3"
    )
