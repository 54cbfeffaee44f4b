"""Semantic calibration for cross-layer distillation, ``semckd`` (Chen et al., AAAI 2021): each student stage end
attends over a set of teacher candidate layers and learns, per sample, a soft assignment to them: the very
thing PURSUhInT selects by clustering.

For a batch of B, each feature map's B × B Gram matrix of the flattened samples gives each sample a similarity
row; a query embedding per student layer and a key embedding per teacher layer (MLP B → B/2 → B/4, ReLU between,
L2-normed) give per-sample attention weights α_ij = softmax_j(q_i · k_j / temperature). Every
(student i, teacher j) pair has a projector (1×1 conv to 2·C_t, BN, ReLU, 3×3 conv, BN, ReLU, 1×1 conv to C_t)
after the larger of the two maps is pooled to the smaller's size. The loss is

    Σ_b Σ_ij α_ij(b) · mse_b(proj_ij(f_s_i), f_t_j) / (B · #student layers)

(mse_b: the mean over the sample's elements). Published defaults (the SemCKD repository's CIFAR-100 runs): β =
400 beside KD, the embeddings' factor 4, temperature 1. The candidates are the teacher's stage ends, or with
``candidates: hints`` the hint set's layers: SemCKD over PURSUhInT's clustered candidates. The embeddings take
the training batch size (``batch_size``, set from ``train.batch_size``); a smaller batch pads its Gram rows
with zeros.

.. code-block:: yaml

    distill: {method: semckd, params: {candidates: hints, factor: 4, temperature: 1.0}}
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import PursuhintError
from ...hints.layers import CandidateLayer
from ..mapping import stage_ends
from .base import DistillMethod, Shape, check_shapes, require_maps, upcast
from .registry import METHODS

CANDIDATES = ("stage_ends", "hints")


class Embed(nn.Module):
    """A Gram row → a query or key: linear (B → 2d), ReLU, linear (2d → d), L2-normed."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(dim_in, 2 * dim_out), nn.Linear(2 * dim_out, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.second(F.relu(self.first(x))), dim=1)


def projector(c_in: int, c_out: int) -> nn.Sequential:
    """SemCKD's per-pair projector: 1×1 → 2·c_out, BN, ReLU, 3×3, BN, ReLU, 1×1 → c_out."""
    mid = 2 * c_out
    return nn.Sequential(nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
                         nn.Conv2d(mid, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
                         nn.Conv2d(mid, c_out, 1, bias=False))


def gram_rows(f: Tensor, width: int) -> Tensor:
    """Each sample's similarity to the batch: the B × B Gram matrix of the flattened maps, zero-padded to
    ``width`` columns."""
    flat = f.reshape(f.shape[0], -1)
    gram = flat @ flat.t()
    return F.pad(gram, (0, width - gram.shape[1])) if gram.shape[1] < width else gram


@METHODS.register("semckd")
class SemCKD(DistillMethod):
    """``semckd``: attention-weighted MSE between every student stage end and every teacher candidate."""

    name = "semckd"
    default_weight = 400.0

    def __init__(self, student_shapes: Sequence[Sequence[int]], teacher_shapes: Sequence[Sequence[int]],
                 batch_size: int = 64, factor: int = 4, temperature: float = 1.0,
                 candidates: str = "stage_ends") -> None:
        nn.Module.__init__(self)
        self.student_shapes, self.teacher_shapes = _shapes(student_shapes, teacher_shapes)
        self.crd = None
        require_maps(self.name, self.student_shapes, self.teacher_shapes)
        if candidates not in CANDIDATES:
            raise ValueError(f"semckd's candidates must be one of {', '.join(CANDIDATES)}, got {candidates!r}")
        if int(batch_size) < 2 or int(factor) < 1 or not float(temperature) > 0:
            raise ValueError(f"semckd needs batch_size >= 2, factor >= 1 and temperature > 0, got {batch_size!r}, "
                             f"{factor!r} and {temperature!r}")
        self.batch_size, self.temperature = int(batch_size), float(temperature)
        dim = max(1, self.batch_size // int(factor))
        self.queries = nn.ModuleList(Embed(self.batch_size, dim) for _ in self.student_shapes)
        self.keys = nn.ModuleList(Embed(self.batch_size, dim) for _ in self.teacher_shapes)
        self.projectors = nn.ModuleList(nn.ModuleList(projector(s[0], t[0]) for t in self.teacher_shapes)
                                        for s in self.student_shapes)

    @property
    def num_pairs(self) -> int:
        return len(self.student_shapes) * len(self.teacher_shapes)

    @classmethod
    def reads_hint_set(cls, params: dict) -> bool:
        return params.get("candidates", "stage_ends") == "hints"

    @classmethod
    def select_layers(cls, teacher: list[CandidateLayer], student: list[CandidateLayer],
                      hints: Optional[list[CandidateLayer]], params: dict) -> tuple[list[CandidateLayer],
                                                                                list[CandidateLayer]]:
        """The teacher candidates (stage ends, or the hint set's layers) and the student's stage ends."""
        if params.get("candidates", "stage_ends") == "hints":
            if not hints:
                raise PursuhintError("semckd with candidates: hints needs a hint set (a searched trial's or "
                                     "--hints); without one use candidates: stage_ends")
            return list(hints), stage_ends(student)
        return stage_ends(teacher), stage_ends(student)

    def attention(self, feats_s: Sequence[Tensor], feats_t: Sequence[Tensor]) -> Tensor:
        """(B, #student, #teacher) attention weights, each row a softmax over the teacher candidates."""
        q = torch.stack([e(gram_rows(f, self.batch_size)) for e, f in zip(self.queries, feats_s)], dim=1)
        k = torch.stack([e(gram_rows(f, self.batch_size)) for e, f in zip(self.keys, feats_t)], dim=2)
        return F.softmax(torch.bmm(q, k) / self.temperature, dim=-1)

    def hint_loss(self, feats_s: Sequence[Tensor], feats_t: Sequence[Tensor]) -> Tensor:
        if len(feats_s) != len(self.student_shapes) or len(feats_t) != len(self.teacher_shapes):
            raise PursuhintError(f"semckd was built for {len(self.student_shapes)} student and "
                                 f"{len(self.teacher_shapes)} teacher layers but got {len(feats_s)} and "
                                 f"{len(feats_t)}")
        feats_t = [f.detach() for f in feats_t]
        with torch.autocast(device_type=feats_s[0].device.type, enabled=False):
            att = self.attention([upcast(f) for f in feats_s], [upcast(f) for f in feats_t])
        losses = []
        for i, f_s in enumerate(feats_s):
            row = []
            for j, f_t in enumerate(feats_t):
                src, tgt = _to_common(f_s, f_t)
                out = self.projectors[i][j](src)
                with torch.autocast(device_type=out.device.type, enabled=False):
                    row.append((upcast(out) - upcast(tgt)).pow(2).flatten(1).mean(1))
            losses.append(torch.stack(row, dim=1))
        per_pair = torch.stack(losses, dim=1)  # (B, #student, #teacher)
        return (att * per_pair).sum() / (per_pair.shape[0] * len(feats_s))


def _shapes(student_shapes: Sequence[Sequence[int]], teacher_shapes: Sequence[Sequence[int]]) -> tuple[list[Shape],
                                                                                                      list[Shape]]:
    """The student's and the teacher's layer shapes (as many of each as the method uses, not paired)."""
    s, _ = check_shapes(student_shapes, student_shapes)
    t, _ = check_shapes(teacher_shapes, teacher_shapes)
    if not s or not t:
        raise PursuhintError("semckd needs at least one student stage end and one teacher candidate")
    return s, t


def _to_common(f_s: Tensor, f_t: Tensor) -> tuple[Tensor, Tensor]:
    """Pool the larger map to the smaller one's spatial size (SemCKD's rule)."""
    if f_s.shape[2] > f_t.shape[2]:
        return F.adaptive_avg_pool2d(f_s, f_t.shape[2:]), f_t
    if f_t.shape[2] > f_s.shape[2]:
        return f_s, F.adaptive_avg_pool2d(f_t, f_s.shape[2:])
    return f_s, f_t
