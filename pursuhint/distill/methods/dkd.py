"""Decoupled knowledge distillation, ``dkd`` (Zhao et al., CVPR 2022): KD split into the target class's term
(TCKD) and the non-target classes' term (NCKD), weighted apart. Logits only: no hint pairs.

With p = softmax(z / T) over all classes, b = (p_gt, 1 − p_gt) the binary target / rest split, and p̂ the softmax
over the non-target classes alone (z_gt masked out):

    TCKD = T² · KL(b_t ‖ b_s)        NCKD = T² · KL(p̂_t ‖ p̂_s)        (sums over classes, mean over the batch)
    DKD  = w(epoch) · (α · TCKD + β · NCKD),   w = min(epoch / warm-up, 1)

Classic KD is exactly TCKD + (1 − p_t,gt) · NCKD, so DKD frees NCKD from the teacher's target confidence.
Published CIFAR-100 defaults: α = 1, β = 8 (β depends on the pair), T = 4, warm-up 20 epochs of 240, scaled
here to the run's epochs.

.. code-block:: yaml

    distill: {method: dkd, params: {alpha: 1.0, beta: 8.0, temperature: 4.0, warmup: 20}}
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import check_shapes
from .no_hints import NoHint
from .registry import METHODS
from .warmup import LinearWarmup

MASKED = 1000.0  # subtracted from the target logit to leave it out of the non-target softmax


def dkd_terms(logits_s: Tensor, logits_t: Tensor, labels: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """(TCKD, NCKD) of a batch, each T² times a KL summed over classes and averaged over the batch."""
    t = float(temperature)
    gt = F.one_hot(labels, logits_s.shape[1]).to(logits_s.dtype)
    p_s, p_t = F.softmax(logits_s / t, dim=1), F.softmax(logits_t / t, dim=1)
    b_s = torch.stack([(p_s * gt).sum(1), (p_s * (1 - gt)).sum(1)], dim=1)
    b_t = torch.stack([(p_t * gt).sum(1), (p_t * (1 - gt)).sum(1)], dim=1)
    tckd = F.kl_div(torch.log(b_s), b_t, reduction="batchmean") * t * t
    log_q_s = F.log_softmax(logits_s / t - MASKED * gt, dim=1)
    q_t = F.softmax(logits_t / t - MASKED * gt, dim=1)
    nckd = F.kl_div(log_q_s, q_t, reduction="batchmean") * t * t
    return tckd, nckd


@METHODS.register("dkd")
class DKD(NoHint):
    """``dkd``: α · TCKD + β · NCKD on the logits, after a linear warm-up; no hint pairs (its weights are its own
    ``alpha`` and ``beta``, not the hint weight β)."""

    default_weight = 0.0
    uses_logits = True

    def __init__(self, student_shapes: Sequence[Sequence[int]] = (), teacher_shapes: Sequence[Sequence[int]] = (),
                 alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0, warmup: int = 20,
                 warmup_of: int = 240) -> None:
        check_shapes(student_shapes, teacher_shapes)
        super().__init__()
        for name, value in (("alpha", alpha), ("beta", beta), ("temperature", temperature)):
            if not float(value) >= 0 or (name == "temperature" and not float(value) > 0):
                raise ValueError(f"dkd's {name} must be {'> 0' if name == 'temperature' else '>= 0'}, got {value!r}")
        self.alpha, self.beta, self.temperature = float(alpha), float(beta), float(temperature)
        self.ramp = LinearWarmup("dkd", warmup, warmup_of)

    def get_extra_state(self) -> dict[str, int]:
        return self.ramp.state()

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.ramp.load(state)

    def set_schedule(self, steps_per_epoch: int, epochs: int) -> None:
        self.ramp.set_schedule(steps_per_epoch, epochs)

    @property
    def step(self) -> int:
        """Training steps taken."""
        return self.ramp.step

    @property
    def warmup_epochs(self) -> float:
        """The published warm-up scaled to this run: ``warmup`` epochs of ``warmup_of``, times epochs / warmup_of."""
        return self.ramp.epochs_long

    def warmup_factor(self) -> float:
        """min(epoch / warm-up epochs, 1) for the current (1-based) epoch; 1 without a warm-up."""
        return self.ramp.current()

    def logit_loss(self, logits_s: Tensor, logits_t: Tensor, labels: Tensor) -> Tensor:
        factor = self.ramp.factor(self.training)
        tckd, nckd = dkd_terms(logits_s.float(), logits_t.float().detach(), labels, self.temperature)
        return factor * (self.alpha * tckd + self.beta * nckd)
