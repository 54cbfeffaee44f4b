"""Hinton's knowledge distillation on logits: the soft-target term every method is combined with."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import PursuhintError


def kd_loss(logits_s: Tensor, logits_t: Tensor, temperature: float) -> Tensor:
    """KL(p_t ‖ p_s) at temperature T, summed over classes, averaged over the batch, times T².

    As the CRD benchmark's ``DistillKL``: p = softmax(z / T); the teacher side is detached.
    The T² factor keeps the gradient scale independent of T (Hinton et al., 2015).
    """
    if not temperature > 0:
        raise PursuhintError(f"KD temperature {temperature!r} is invalid; use a number > 0 (the paper uses 4).")
    if logits_s.shape != logits_t.shape or logits_s.dim() != 2:
        raise PursuhintError(
            f"KD needs student and teacher logits of the same shape (batch, classes); "
            f"got {tuple(logits_s.shape)} and {tuple(logits_t.shape)}."
        )
    dtype = torch.promote_types(logits_s.dtype, torch.float32)
    log_p_s = F.log_softmax(logits_s.to(dtype) / temperature, dim=1)
    p_t = F.softmax(logits_t.detach().to(dtype) / temperature, dim=1)
    kl = F.kl_div(log_p_s, p_t, reduction="sum")
    return kl * (temperature**2) / logits_s.shape[0]
