"""Methods that compare how samples relate to each other within a batch: SP, PKT, RKD, CC.

All of them flatten a (B, C, H, W) map to (B, C·H·W) and use a (B, D) vector as it is, so student
and teacher widths and resolutions need not match (CC embeds both sides to a common width).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import PursuhintError
from .base import DistillMethod, flatten
from .registry import METHODS

PKT_EPS = 1e-7


@METHODS.register("sp")
class SP(DistillMethod):
    """Similarity-preserving KD (Tung & Mori, ICCV 2019), the benchmark's ``Similarity``.

    G = f fᵀ (B × B) of the flattened features, each row L2-normalised;
    loss = ‖G_t − G_s‖²_F / B².
    """

    default_weight = 3000.0  # the CRD benchmark's β
    min_batch = 2

    def pair_loss(self, f_s: Tensor, f_t: Tensor, k: int = 0) -> Tensor:
        s, t = flatten(f_s), flatten(f_t)
        g_s = F.normalize(s @ s.t(), dim=1)
        g_t = F.normalize(t @ t.t(), dim=1)
        return (g_t - g_s).pow(2).sum() / (s.shape[0] ** 2)


def _cosine_probabilities(f: Tensor) -> Tensor:
    """Row-stochastic B × B matrix from cosine similarities mapped to [0, 1] (PKT)."""
    f = f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + PKT_EPS)
    f = torch.where(torch.isnan(f), torch.zeros_like(f), f)
    sim = (f @ f.t() + 1.0) / 2.0
    return sim / sim.sum(dim=1, keepdim=True)


@METHODS.register("pkt")
class PKT(DistillMethod):
    """Probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018), the benchmark's ``PKT``.

    f ← f / (‖f‖ + ε); P = ((f fᵀ) + 1) / 2, rows normalised to sum 1, for student (P_s) and teacher
    (P_t); loss = mean over the B × B entries of P_t · log((P_t + ε) / (P_s + ε)), ε = 1e-7.
    """

    default_weight = 30000.0  # the CRD benchmark's β
    min_batch = 2

    def pair_loss(self, f_s: Tensor, f_t: Tensor, k: int = 0) -> Tensor:
        p_s = _cosine_probabilities(flatten(f_s))
        p_t = _cosine_probabilities(flatten(f_t))
        return (p_t * torch.log((p_t + PKT_EPS) / (p_s + PKT_EPS))).mean()


def pairwise_distances(e: Tensor, eps: float = 1e-12) -> Tensor:
    """B × B Euclidean distances, squared distances clamped at ``eps`` before the root, zero diagonal."""
    sq = e.pow(2).sum(dim=1)
    d2 = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps)
    eye = torch.eye(e.shape[0], dtype=torch.bool, device=e.device)
    return d2.sqrt().masked_fill(eye, 0.0)


def _normalised_distances(e: Tensor) -> Tensor:
    """Distances over their mean off the diagonal. The diagonal is exactly 0, so that mean is the sum over
    B(B − 1): no boolean indexing, whose data-dependent size would make the device wait for the host."""
    d = pairwise_distances(e)
    n = e.shape[0]
    return d / (d.sum() / (n * (n - 1)))


def _angles(e: Tensor) -> Tensor:
    """cos of the angle at i between j and k, flattened: ⟨n(e_j − e_i), n(e_k − e_i)⟩ for all (i, j, k)."""
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
    return torch.bmm(diff, diff.transpose(1, 2)).reshape(-1)


@METHODS.register("rkd")
class RKD(DistillMethod):
    """Relational KD (Park et al., CVPR 2019), the benchmark's ``RKDLoss``.

    Distance term: pairwise distances divided by their mean over off-diagonal pairs,
    smooth-L1 (β = 1, mean over all B² entries) between student and teacher. Angle term: cosines
    of all B³ triplet angles, smooth-L1. loss = distance_weight · L_d + angle_weight · L_a
    (25 and 50). The teacher side carries no gradient.
    """

    default_weight = 1.0  # the CRD benchmark's β
    min_batch = 2

    def __init__(
        self,
        student_shapes: Sequence[Sequence[int]],
        teacher_shapes: Sequence[Sequence[int]],
        distance_weight: float = 25.0,
        angle_weight: float = 50.0,
    ) -> None:
        super().__init__(student_shapes, teacher_shapes)
        if distance_weight < 0 or angle_weight < 0:
            raise PursuhintError(
                f"RKD weights distance_weight={distance_weight!r}, angle_weight={angle_weight!r} are invalid; "
                f"use numbers >= 0 (defaults 25 and 50)."
            )
        self.distance_weight = float(distance_weight)
        self.angle_weight = float(angle_weight)

    def pair_loss(self, f_s: Tensor, f_t: Tensor, k: int = 0) -> Tensor:
        s, t = flatten(f_s), flatten(f_t).detach()
        loss_d = F.smooth_l1_loss(_normalised_distances(s), _normalised_distances(t))
        loss_a = F.smooth_l1_loss(_angles(s), _angles(t))
        return self.distance_weight * loss_d + self.angle_weight * loss_a


@METHODS.register("cc")
class CC(DistillMethod):
    """Correlation congruence (Peng et al., ICCV 2019) in the benchmark's ``Correlation`` form.

    The benchmark always embeds both sides with a linear layer to ``embed_dim`` (its ``LinearEmbed``
    to feat_dim = 128, both trainable), whether or not the widths differ; we do the same per pair.
    With δ = |e_s − e_t|, loss = mean over b of Σ_d δ[b, d]·δ[b+1, d] (consecutive samples), the
    code the CRD authors received from the CC authors, not the paper's Taylor-kernel formula.
    Deviation: the benchmark applies it to the penultimate vector only; here to every hint pair.
    """

    default_weight = 0.02  # the CRD benchmark's β
    min_batch = 2

    def __init__(self, student_shapes: Sequence[Sequence[int]], teacher_shapes: Sequence[Sequence[int]],
                 embed_dim: int = 128) -> None:
        super().__init__(student_shapes, teacher_shapes)
        if not isinstance(embed_dim, int) or embed_dim < 1:
            raise PursuhintError(f"CC embed_dim={embed_dim!r} is invalid; use a positive integer (default 128).")
        self.embed_s = nn.ModuleList(nn.Linear(_numel(s), embed_dim) for s in self.student_shapes)
        self.embed_t = nn.ModuleList(nn.Linear(_numel(t), embed_dim) for t in self.teacher_shapes)

    def adapt(self, k: int, f_s: Tensor, f_t: Tensor) -> tuple[Tensor, Tensor]:
        return self.embed_s[k](flatten(f_s)), self.embed_t[k](flatten(f_t))

    def pair_loss(self, f_s: Tensor, f_t: Tensor, k: int = 0) -> Tensor:
        f_s, f_t = flatten(f_s), flatten(f_t)
        if f_s.shape != f_t.shape:
            raise PursuhintError(
                f"CC compares embeddings of equal shape, got {tuple(f_s.shape)} and {tuple(f_t.shape)}; "
                f"apply the pair's embeddings first."
            )
        delta = (f_s - f_t).abs()
        return (delta[:-1] * delta[1:]).sum(dim=1).mean()


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
