"""How many students of a cohort fit one confirmation trial's share of a GPU (``search.confirm.cohort: auto``).

A cohort keeps one teacher and every member's training state on the trial's device. The trial's share of the
card is its GPU fraction × the card's memory; the data loader may take :data:`GPU_SHARE_SAFETY` of it
(``data/loader.py``), the rest is for models. Each member needs its weights, gradients and optimizer state
(momentum) plus the activations its backward pass keeps, which grow with the batch; the teacher needs its
weights and, without gradients, at most its activations of one batch. Both are measured by one small forward
pass (two images, scaled to the batch), with :data:`HEADROOM` for connectors, cuDNN's workspace
and the allocator's rounding. On the CPU a cohort is sized by count alone (:data:`AUTO_COHORT_MAX`).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from ..config import AUTO_COHORT_MAX
from ..data.loader import GPU_SHARE_SAFETY

PROBE_BATCH = 2  # images in the measuring forward pass; activations scale linearly with the batch
HEADROOM = 1.5  # connectors, cuDNN workspace, allocator rounding, the loss terms' temporaries
STATE_COPIES = 3  # weights, gradients, SGD momentum


def activation_bytes(model: torch.nn.Module, image_shape: Sequence[int], batch_size: int) -> int:
    """Bytes of the outputs of every leaf module of ``model`` for one batch of ``batch_size`` images (what a
    backward pass keeps, at most), measured on a forward pass of :data:`PROBE_BATCH` zero images on the model's
    own device."""
    total = [0]

    def count(_module: torch.nn.Module, _inputs: object, out: object) -> None:
        if isinstance(out, torch.Tensor):
            total[0] += out.numel() * out.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(PROBE_BATCH, *image_shape, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total[0] * batch_size // PROBE_BATCH


def parameter_bytes(model: torch.nn.Module) -> int:
    """Bytes of ``model``'s parameters and buffers."""
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def member_bytes(student: torch.nn.Module, image_shape: Sequence[int], batch_size: int) -> int:
    """One cohort member's device memory: its training state and one batch's kept activations, with headroom."""
    state = STATE_COPIES * parameter_bytes(student)
    return int(HEADROOM * (state + activation_bytes(student, image_shape, batch_size)))


def teacher_bytes(teacher: torch.nn.Module, image_shape: Sequence[int], batch_size: int) -> int:
    """The shared teacher's device memory: its weights and, at most, one batch's activations."""
    return int(HEADROOM * (parameter_bytes(teacher) + activation_bytes(teacher, image_shape, batch_size)))


def auto_cohort_size(student: torch.nn.Module, teacher: torch.nn.Module, image_shape: Sequence[int],
                     batch_size: int, card_bytes: Optional[int], gpu_fraction: float) -> int:
    """Students per confirmation trial for ``cohort: auto``: :data:`AUTO_COHORT_MAX` on the CPU (``card_bytes``
    None or no GPU fraction); on a GPU, as many members as fit the models' part of the trial's share of the
    card after the teacher, at least 1 and at most :data:`AUTO_COHORT_MAX`."""
    if not card_bytes or gpu_fraction <= 0:
        return AUTO_COHORT_MAX
    models_share = (1 - GPU_SHARE_SAFETY) * min(gpu_fraction, 1.0) * card_bytes
    room = models_share - teacher_bytes(teacher, image_shape, batch_size)
    fit = int(room // max(1, member_bytes(student, image_shape, batch_size)))
    return max(1, min(AUTO_COHORT_MAX, fit))
