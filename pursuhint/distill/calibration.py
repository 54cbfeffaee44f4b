"""The calibrated hint weight (``distill.hint_weight: auto``): β = r · CE₀ / H₀.

Hint losses differ by orders of magnitude between methods (AT's normalised maps vs FitNet's MSE), input
resolutions and teacher–student pairs, so no fixed β range suits them all. The untrained student's
cross-entropy CE₀ and the method's unweighted hint loss H₀ (connectors and learnable parts at initialisation)
are read from the first training step's own forward pass, and β is set before that step's backward, so the
hint term is r times the CE term at the start of training (r = ``distill.hint_ratio``, default 1). Nothing is
computed twice: the calibration costs one cross-entropy and one read of two numbers.

.. code-block:: yaml

    distill: {method: at, hint_weight: auto, hint_ratio: {loguniform: [0.1, 10]}}
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from ..errors import DivergedError


@dataclass
class Calibration:
    """What the calibration measured and the β it chose (``seconds``: what measuring added to the step)."""

    ce0: float
    hint0: float
    ratio: float
    weight: float
    seconds: float = 0.0


class HintCalibration(nn.Module):
    """Measures CE₀ and H₀ on the first training step and gives β from then on.

    A module so that what it measured travels in the training checkpoint with the student: a resumed run keeps
    its β instead of measuring a trained student. A run that calibrates trains exactly like one given the same β
    as a number (the first step's forward is the same; β only multiplies its hint term).
    """

    def __init__(self, ratio: float) -> None:
        super().__init__()
        self.ratio = float(ratio)
        self.register_buffer("measured", torch.full((2,), math.nan, dtype=torch.float64))  # CE₀, H₀
        self.seconds = 0.0

    @property
    def done(self) -> bool:
        return bool(torch.isfinite(self.measured).all())

    def weight_for(self, ce: Callable[[], torch.Tensor], hint: torch.Tensor) -> float:
        """β, measured from this step's unweighted ``ce()`` and ``hint`` unless already measured (or resumed)."""
        if not self.done:
            t0 = time.perf_counter()
            ce0, hint0 = float(ce().detach().float()), float(hint.detach().float())
            if not (math.isfinite(ce0) and math.isfinite(hint0)) or hint0 <= 0:
                raise DivergedError(f"cannot calibrate the hint weight: at initialisation CE = {ce0:.4g} and the hint "
                                    f"loss = {hint0:.4g}; give distill.hint_weight as a number instead of auto")
            self.measured.copy_(torch.tensor([ce0, hint0], dtype=torch.float64))
            self.seconds = time.perf_counter() - t0
        return self.result().weight

    def result(self) -> Optional[Calibration]:
        """What was measured, or None before the first step."""
        if not self.done:
            return None
        ce0, hint0 = (float(v) for v in self.measured)
        return Calibration(ce0=ce0, hint0=hint0, ratio=self.ratio, weight=self.ratio * ce0 / hint0,
                           seconds=self.seconds)
