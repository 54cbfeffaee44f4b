"""The calibrated hint weight (``distill.hint_weight: auto``): β = r · CE₀ / H₀.

Hint losses differ by orders of magnitude between methods (AT's normalised maps vs FitNet's MSE), input
resolutions and teacher–student pairs, so no fixed β range suits them all. Before the first step, the
untrained student's cross-entropy CE₀ and the method's unweighted hint loss H₀ (connectors and learnable
parts at initialisation) are measured on the first training batches; β makes the hint term r times the CE
term at the start of training (r = ``distill.hint_ratio``, default 1).

.. code-block:: yaml

    distill: {method: at, hint_weight: auto, hint_ratio: {loguniform: [0.1, 10]}}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..devices import autocast
from ..errors import DivergedError

CALIBRATION_BATCHES = 2  # the first batches of epoch 0: a deterministic, cheap sample


@dataclass
class Calibration:
    """What the calibration measured and the β it chose."""

    ce0: float
    hint0: float
    ratio: float
    weight: float
    batches: int


def calibrate_hint_weight(modules: Iterable[nn.Module], forward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor],
                                                                          tuple[torch.Tensor, torch.Tensor]],
                          batches: Iterable, ratio: float, device: torch.device) -> Calibration:
    """β = ``ratio`` · mean CE₀ / mean H₀ over the first :data:`CALIBRATION_BATCHES` of ``batches``.

    ``forward(images, labels, indices)`` returns (student logits, unweighted hint loss) in train mode, as
    training will. Nothing changes: the ``modules``' states (BN statistics, memory banks) and the random-number
    generators are restored afterwards, so a run with ``auto`` trains like one given the same β as a number.
    """
    modules = list(modules)
    saved = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m in modules]
    devices = [device] if device.type == "cuda" else []
    ce_sum = hint_sum = 0.0
    n = 0
    with torch.random.fork_rng(devices=devices), torch.no_grad(), autocast(device):
        for m in modules:
            m.train()
        for batch in batches:
            if n == CALIBRATION_BATCHES:
                break
            images, labels, indices = batch
            logits, hint = forward(images, labels, indices)
            ce_sum += float(F.cross_entropy(logits.float(), labels))
            hint_sum += float(hint.float())
            n += 1
    for m, state in zip(modules, saved):
        m.load_state_dict(state)
    if n == 0:
        raise DivergedError("the training loader yielded no batch to calibrate the hint weight on")
    ce0, hint0 = ce_sum / n, hint_sum / n
    if not (math.isfinite(ce0) and math.isfinite(hint0)) or hint0 <= 0:
        raise DivergedError(f"cannot calibrate the hint weight: at initialisation CE = {ce0:.4g} and the hint loss = "
                            f"{hint0:.4g}; give distill.hint_weight as a number instead of auto")
    return Calibration(ce0=ce0, hint0=hint0, ratio=float(ratio), weight=float(ratio) * ce0 / hint0, batches=n)
