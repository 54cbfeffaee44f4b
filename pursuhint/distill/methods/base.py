"""The distillation-method interface the trainer uses, and the shape helpers every method shares."""

from __future__ import annotations

from typing import Any, ClassVar, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import PursuhintError
from ..crd import CRDHead

Shape = tuple[int, ...]


class DistillMethod(nn.Module):
    """A hint-based distillation loss over K (student, teacher) feature pairs, optionally plus CRD.

    ``hint = Σ_k pair_loss(*adapt(k, f_s_k, f_t_k), k)``. ``adapt`` applies the method's learnable
    parts for pair k (connector, embeddings, pooling before a regressor); ``pair_loss`` is the
    formula itself and, for parameter-free methods, a pure function of its two tensors.
    Teacher features are detached before anything touches them. Losses are computed in at least
    float32 with autocast off (connectors inside ``adapt`` still run under the caller's autocast).
    """

    name: str = ""
    #: Relational methods compare samples with each other and need at least two per batch.
    min_batch: int = 1
    #: β, the hint loss's weight when ``distill.hint_weight`` is null (the CRD benchmark's, for its methods).
    #: Every registered method must set it (``METHODS`` refuses one that does not): no silent 1.0.
    default_weight: ClassVar[Optional[float]] = None
    #: Whether the method learns through hint pairs; without, the trainer taps no hint layers.
    uses_hints: ClassVar[bool] = True
    #: Whether the method is CRD itself: its CRD head is always built (other methods add it with ``+crd``).
    includes_crd: ClassVar[bool] = False
    #: Whether the method reads the logits (DKD): the trainer adds ``logit_loss`` to every step's loss.
    uses_logits: ClassVar[bool] = False

    def __init__(self, student_shapes: Sequence[Sequence[int]], teacher_shapes: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.student_shapes, self.teacher_shapes = check_shapes(student_shapes, teacher_shapes)
        self.crd: CRDHead | None = None
        self.crd_weight = 0.0  # the CRD term's weight in the trainer's loss, set with ``crd`` by ``create_method``

    @property
    def num_pairs(self) -> int:
        return len(self.student_shapes)

    @property
    def uses_crd(self) -> bool:
        return self.crd is not None

    @classmethod
    def select_layers(cls, teacher: list[Any], student: list[Any], hints: Optional[list[Any]],
                      params: dict[str, Any]) -> Optional[tuple[list[Any], list[Any]]]:
        """The (teacher, student) candidate layers the method learns from, when it chooses them itself (ReviewKD:
        the stage ends; SemCKD: the student's stage ends against teacher candidates); None: the hint set's
        layers, each paired with a student layer by ``distill.mapping``. ``hints`` are the hint set's teacher
        layers (None without a hint set), ``params`` the method's own ``distill.params``."""
        return None

    @classmethod
    def reads_hint_set(cls, params: dict[str, Any]) -> bool:
        """Whether the method learns from the hint set's layers (with ``params``, its own ``distill.params``);
        selection keys are ignored for one that does not."""
        return cls.uses_hints

    def set_schedule(self, steps_per_epoch: int, epochs: int) -> None:
        """The run's length, told by the trainer before training (a warm-up reads it); ignored by default."""

    def logit_loss(self, logits_s: Tensor, logits_t: Tensor, labels: Tensor) -> Tensor:
        """The method's loss on the student's and teacher's logits (``uses_logits`` methods only)."""
        raise NotImplementedError

    def adapt(self, k: int, f_s: Tensor, f_t: Tensor) -> tuple[Tensor, Tensor]:
        """Learnable/structural preprocessing of pair k before ``pair_loss``; identity by default."""
        return f_s, f_t

    def pair_loss(self, f_s: Tensor, f_t: Tensor, k: int = 0) -> Tensor:
        """The loss of one (student, teacher) pair as a scalar tensor."""
        raise NotImplementedError

    def hint_loss(self, feats_s: Sequence[Tensor], feats_t: Sequence[Tensor]) -> Tensor:
        """Σ_k pair_loss(adapt_k(f_s_k), f_t_k) over the K hint pairs."""
        if len(feats_s) != self.num_pairs or len(feats_t) != self.num_pairs:
            raise PursuhintError(
                f"distillation method {self.name!r} was built for {self.num_pairs} hint pairs but got "
                f"{len(feats_s)} student and {len(feats_t)} teacher features; pass one of each per pair."
            )
        total = zero_like(*feats_s)
        for k, (f_s, f_t) in enumerate(zip(feats_s, feats_t)):
            if f_s.shape[0] != f_t.shape[0] or f_s.shape[0] < self.min_batch:
                raise PursuhintError(
                    f"hint pair {k} has batch sizes {f_s.shape[0]} (student) and {f_t.shape[0]} (teacher); "
                    f"method {self.name!r} needs equal batch sizes of at least {self.min_batch}."
                )
            a_s, a_t = self.adapt(k, f_s, f_t.detach())
            with torch.autocast(device_type=a_s.device.type, enabled=False):
                total = total + self.pair_loss(upcast(a_s), upcast(a_t), k)
        return total

    def crd_loss(self, emb_s: Tensor, emb_t: Tensor, index: Tensor, contrast_idx: Tensor | None = None) -> Tensor:
        """CRD loss on the penultimate embeddings (``+crd`` methods only); ``index``: dataset indices."""
        if self.crd is None:
            raise PursuhintError(f"distillation method {self.name!r} has no CRD term; use {self.name}+crd or crd.")
        return self.crd(emb_s, emb_t, index, contrast_idx)

    def forward_pairs(
        self,
        feats_s: Sequence[Tensor],
        feats_t: Sequence[Tensor],
        emb_s: Tensor | None = None,
        emb_t: Tensor | None = None,
        index: Tensor | None = None,
        contrast_idx: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Named loss terms: ``{"hint": ...}``, plus ``"crd"`` for ``+crd`` methods (needs emb_s, emb_t, index)."""
        terms = {"hint": self.hint_loss(feats_s, feats_t)}
        if self.crd is not None:
            if emb_s is None or emb_t is None or index is None:
                raise PursuhintError(
                    f"distillation method {self.name!r} includes CRD; pass emb_s, emb_t (penultimate "
                    f"embeddings) and index (dataset indices) to forward_pairs."
                )
            terms["crd"] = self.crd_loss(emb_s, emb_t, index, contrast_idx)
        if not feats_s and emb_s is not None:  # no hint pairs: put the 0 where the CRD term lives
            terms["hint"] = terms["hint"].to(emb_s.device)
        return terms

    forward = forward_pairs


def check_shapes(student_shapes: Sequence[Sequence[int]],
                 teacher_shapes: Sequence[Sequence[int]]) -> tuple[list[Shape], list[Shape]]:
    """Per-pair shapes without the batch dim, as tuples; one student and one teacher shape per pair."""
    s = [tuple(int(d) for d in shape) for shape in student_shapes]
    t = [tuple(int(d) for d in shape) for shape in teacher_shapes]
    if len(s) != len(t):
        raise PursuhintError(
            f"{len(s)} student shapes and {len(t)} teacher shapes were given; give one of each per hint pair."
        )
    for shape in s + t:
        if len(shape) not in (1, 3) or min(shape) < 1:
            raise PursuhintError(f"feature shape {shape} is invalid; use (C, H, W) or (D,) without the batch dim.")
    return s, t


def require_maps(name: str, student_shapes: Sequence[Shape], teacher_shapes: Sequence[Shape]) -> None:
    """Raise unless every hint feature is a (C, H, W) map, as spatial methods need."""
    for shape in list(student_shapes) + list(teacher_shapes):
        if len(shape) != 3:
            raise PursuhintError(
                f"distillation method {name!r} needs (C, H, W) feature maps but got shape {shape}; "
                f"use a vector method (sp, pkt, rkd, cc) for vectors."
            )


def pool_to_common(f_s: Tensor, f_t: Tensor) -> tuple[Tensor, Tensor]:
    """Adaptive-average-pool the larger of two (B, C, H, W) maps to the smaller one's H × W."""
    size = (min(f_s.shape[2], f_t.shape[2]), min(f_s.shape[3], f_t.shape[3]))
    if tuple(f_s.shape[2:]) != size:
        f_s = F.adaptive_avg_pool2d(f_s, size)
    if tuple(f_t.shape[2:]) != size:
        f_t = F.adaptive_avg_pool2d(f_t, size)
    return f_s, f_t


def flatten(f: Tensor) -> Tensor:
    """(B, C, H, W) → (B, C·H·W); a (B, D) vector stays as it is."""
    return f.reshape(f.shape[0], -1)


def upcast(f: Tensor) -> Tensor:
    """Half-precision tensors to float32; float32/float64 unchanged."""
    return f.float() if f.dtype in (torch.float16, torch.bfloat16) else f


def zero_like(*tensors: Tensor) -> Tensor:
    """A scalar 0 on the device of the first tensor given (CPU if none)."""
    device = tensors[0].device if tensors else None
    return torch.zeros((), device=device)
