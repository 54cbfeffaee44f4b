"""The methods without hint pairs: ``kd_only``/``none`` (KD and CE alone) and ``crd`` (CRD alone)."""

from __future__ import annotations

from typing import Sequence

from torch import Tensor

from .base import DistillMethod, check_shapes, zero_like
from .registry import METHODS


@METHODS.register("none")
@METHODS.register("kd_only")
class NoHint(DistillMethod):
    """No hint loss (``kd_only``/``none``): zero pairs whatever shapes are given; ``hint_loss`` is 0."""

    default_weight = 0.0
    uses_hints = False

    def __init__(self, student_shapes: Sequence[Sequence[int]] = (), teacher_shapes: Sequence[Sequence[int]] = ()) -> None:
        check_shapes(student_shapes, teacher_shapes)
        super().__init__([], [])

    def hint_loss(self, feats_s: Sequence[Tensor], feats_t: Sequence[Tensor]) -> Tensor:
        return zero_like(*feats_s)

    def pair_loss(self, f_s: Tensor, f_t: Tensor, k: int = 0) -> Tensor:
        return zero_like(f_s)


@METHODS.register("crd")
class CRD(NoHint):
    """CRD alone (``crd``, Tian et al., ICLR 2020): no hint pairs; the CRD head that ``create_method``
    always adds to this method is the whole distillation loss (weighted by the trainer's CRD β)."""

    includes_crd = True
