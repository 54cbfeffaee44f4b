"""``METHODS``, the distillation-method registry: every method module registers its classes with
``@METHODS.register("name")`` at their definition, as a plugin does."""

from __future__ import annotations

import math
from typing import Any

from ...errors import PursuhintError
from ...infra.registry import Registry
from .base import DistillMethod

def check_method(name: str, cls: Any) -> None:
    """Refuse to register what the trainer and the sweep could not use: a non-``DistillMethod``, or a
    method that does not say its ``default_weight`` (a new method must not silently get some β)."""
    if not (isinstance(cls, type) and issubclass(cls, DistillMethod)):
        raise TypeError(f"distillation method {name!r} must be a DistillMethod subclass, not {cls!r}")
    weight = cls.default_weight
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise TypeError(f"distillation method {name!r} ({cls.__name__}) must set the class attribute "
                        f"default_weight: its hint-loss weight β when distill.hint_weight is null, a number "
                        f">= 0 (0 for a method without hints); it is {weight!r}")


METHODS: Registry[type[DistillMethod]] = Registry("distillation method", error=PursuhintError, check=check_method)
