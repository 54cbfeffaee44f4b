"""Registry of hint-based distillation methods and the factory the trainer calls.

``create_method("at", student_shapes, teacher_shapes)``; ``"at+crd"`` adds a CRD term (needs
``n_data``, ``s_dim``, ``t_dim``); ``"crd"`` is CRD alone; ``"kd_only"``/``"none"`` have no hint loss.
Users add a method with ``@METHODS.register("mine")`` on a ``DistillMethod`` subclass whose
``__init__(student_shapes, teacher_shapes, **own_params)`` builds its learnable parts.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

from torch import Tensor

from ...errors import PursuhintError
from ...registry import Registry, unknown_name_message
from ..crd import CRDHead
from .base import DistillMethod, check_shapes, flatten, pool_to_common, zero_like
from .feature_maps import AT, NST, VID, ConvReg, FitNet
from .relations import CC, PKT, RKD, SP

CRD_SUFFIX = "+crd"
CRD_REQUIRED = ("n_data", "s_dim", "t_dim")
CRD_OPTIONAL = ("feat_dim", "nce_k", "nce_t", "nce_m")


class NoHint(DistillMethod):
    """No hint loss (``kd_only``/``none``): zero pairs whatever shapes are given; ``hint_loss`` is 0."""

    def __init__(self, student_shapes: Sequence[Sequence[int]] = (), teacher_shapes: Sequence[Sequence[int]] = ()) -> None:
        check_shapes(student_shapes, teacher_shapes)
        super().__init__([], [])

    def hint_loss(self, feats_s: Sequence[Tensor], feats_t: Sequence[Tensor]) -> Tensor:
        return zero_like(*feats_s)

    def pair_loss(self, f_s: Tensor, f_t: Tensor, k: int = 0) -> Tensor:
        return zero_like(f_s)


METHODS: Registry[type[DistillMethod]] = Registry("distillation method", error=PursuhintError)
for _name, _cls in (("fitnet", FitNet), ("at", AT), ("sp", SP), ("nst", NST), ("vid", VID), ("pkt", PKT),
                    ("rkd", RKD), ("cc", CC), ("kd_only", NoHint), ("none", NoHint), ("crd", NoHint)):
    METHODS.register(_name, _cls)


def method_names() -> list[str]:
    """Every name ``create_method`` accepts: the registered methods and each with ``+crd``."""
    names = METHODS.names()
    return names + [f"{n}{CRD_SUFFIX}" for n in names if n != "crd"]


def method_params(name: str) -> list[str]:
    """The keyword parameters ``create_method(name, ...)`` accepts."""
    base, uses_crd = _split(name)
    own = [p for p in inspect.signature(METHODS.get(base).__init__).parameters
           if p not in ("self", "student_shapes", "teacher_shapes")]
    return own + (list(CRD_REQUIRED + CRD_OPTIONAL) if uses_crd else [])


def create_method(
    name: str,
    student_shapes: Sequence[Sequence[int]],
    teacher_shapes: Sequence[Sequence[int]],
    **params: Any,
) -> DistillMethod:
    """Build method ``name`` for K hint pairs of the given per-sample shapes ((C, H, W) or (D,)).

    Learnable parts (connectors, VID variances, CC/CRD embeddings) are created here, one per pair.
    """
    base, uses_crd = _split(name)
    valid = method_params(name)
    unknown = [p for p in params if p not in valid]
    if unknown:
        raise PursuhintError(
            f"parameter {unknown[0]!r} is not valid for distillation method {name!r}; "
            f"valid: {', '.join(valid) or 'none'}."
        )
    crd_params = {k: params.pop(k) for k in CRD_REQUIRED + CRD_OPTIONAL if k in params}
    if uses_crd:
        missing = [k for k in CRD_REQUIRED if k not in crd_params]
        if missing:
            raise PursuhintError(
                f"distillation method {name!r} needs parameter {missing[0]!r}; CRD needs n_data (training-set "
                f"size), s_dim and t_dim (student and teacher embedding widths)."
            )
    method = METHODS.get(base)(student_shapes, teacher_shapes, **params)
    if uses_crd:
        method.crd = CRDHead(**crd_params)
    method.name = name
    return method


def _split(name: str) -> tuple[str, bool]:
    """``"at+crd"`` → ("at", True); ``"crd"`` → ("crd", True); ``"at"`` → ("at", False)."""
    if not isinstance(name, str) or name not in method_names():
        raise PursuhintError(unknown_name_message("distillation method", name, method_names()))
    if name.endswith(CRD_SUFFIX):
        return name[: -len(CRD_SUFFIX)], True
    return name, name == "crd"


__all__ = [
    "AT", "CC", "METHODS", "NST", "PKT", "RKD", "SP", "VID", "ConvReg", "DistillMethod", "FitNet",
    "NoHint", "create_method", "flatten", "method_names", "method_params", "pool_to_common",
]
