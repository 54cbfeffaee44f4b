"""Knowledge review, ``reviewkd`` (Chen et al., CVPR 2021): every student stage learns from the teacher's stage of
the same depth through features fused across levels. No layer is chosen: the method pairs the student's stage
ends with the teacher's, one to one, whatever the hint set.

Attention-based fusion (ABF), deepest level first: level i maps the student's stage end to ``mid`` channels
(1×1 conv + BN), fuses it with the fused map of the level below it (upsampled, nearest) through two attention
maps (1×1 conv on both, sigmoid), and emits a 3×3 conv + BN to the teacher's channels (resized, nearest, to the
teacher's spatial size when they differ). The hierarchical context loss (HCL) of each level is

    HCL(f_s, f_t) = [mse(f_s, f_t) + Σ_l w_l · mse(pool_l(f_s), pool_l(f_t))] / (1 + Σ_l w_l)

over the pooling levels l = 4, 2, 1 smaller than the map (adaptive average pooling to l × l), with weights
halving from 1/2. The hint loss is the sum over levels, ramped up linearly over a warm-up. Published CIFAR
defaults (mdistiller's): weight 1.0, mid = min(512, the deepest student stage's channels), warm-up 20 of 240
epochs, scaled here to the run's epochs. Deviation: the levels are the stage ends only (the original adds the
pooled embedding as a last level) and read the stage ends' outputs (after their activation).

.. code-block:: yaml

    distill: {method: reviewkd, params: {levels: [4, 2, 1], warmup: 20}}
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import PursuhintError
from ...hints.layers import CandidateLayer
from ..mapping import stage_ends
from .base import DistillMethod, require_maps, upcast, zero_like
from .registry import METHODS
from .warmup import LinearWarmup


def hcl_loss(f_s: Tensor, f_t: Tensor, levels: Sequence[int] = (4, 2, 1)) -> Tensor:
    """The hierarchical context loss of one level (see the module docstring)."""
    loss = F.mse_loss(f_s, f_t)
    weight, total = 1.0, 1.0
    for size in levels:
        if size >= f_s.shape[2]:
            continue
        weight /= 2.0
        loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(f_s, size), F.adaptive_avg_pool2d(f_t, size))
        total += weight
    return loss / total


class ABF(nn.Module):
    """One level's attention-based fusion: student map (and the fused map of the level below) → teacher map."""

    def __init__(self, in_channels: int, mid: int, out_channels: int, out_size: tuple[int, int], fuse: bool) -> None:
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, mid, 1, bias=False), nn.BatchNorm2d(mid))
        self.emit = nn.Sequential(nn.Conv2d(mid, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels))
        self.attention = nn.Sequential(nn.Conv2d(2 * mid, 2, 1), nn.Sigmoid()) if fuse else None
        self.out_size = tuple(out_size)
        nn.init.kaiming_uniform_(self.reduce[0].weight, a=1)
        nn.init.kaiming_uniform_(self.emit[0].weight, a=1)

    def forward(self, x: Tensor, below: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """(this level's map for the teacher, the fused map passed to the next shallower level)."""
        x = self.reduce(x)
        if self.attention is not None and below is not None:
            below = F.interpolate(below, size=x.shape[2:], mode="nearest")
            z = self.attention(torch.cat([x, below], dim=1))
            x = x * z[:, :1] + below * z[:, 1:]
        fused = x
        if tuple(x.shape[2:]) != self.out_size:
            x = F.interpolate(x, size=self.out_size, mode="nearest")
        return self.emit(x), fused


@METHODS.register("reviewkd")
class ReviewKD(DistillMethod):
    """``reviewkd``: HCL between the ABF-fused student stage ends and the teacher's stage ends (see the module)."""

    name = "reviewkd"
    default_weight = 1.0

    def __init__(self, student_shapes: Sequence[Sequence[int]], teacher_shapes: Sequence[Sequence[int]],
                 levels: Sequence[int] = (4, 2, 1), mid_channels: Optional[int] = None, warmup: float = 20,
                 warmup_of: int = 240) -> None:
        super().__init__(student_shapes, teacher_shapes)
        require_maps(self.name, self.student_shapes, self.teacher_shapes)
        if not self.student_shapes:
            raise PursuhintError("reviewkd needs at least one stage end of student and teacher")
        self.levels = tuple(int(v) for v in levels)
        if not self.levels or min(self.levels) < 1:
            raise ValueError(f"reviewkd's levels must be pooling sizes >= 1, got {list(levels)!r}")
        mid = int(mid_channels) if mid_channels is not None else min(512, self.student_shapes[-1][0])
        if mid < 1:
            raise ValueError(f"reviewkd's mid_channels must be >= 1, got {mid_channels!r}")
        self.abfs = nn.ModuleList(ABF(s[0], mid, t[0], t[1:], fuse=i < self.num_pairs - 1)
                                  for i, (s, t) in enumerate(zip(self.student_shapes, self.teacher_shapes)))
        self.ramp = LinearWarmup("reviewkd", warmup, warmup_of)

    def set_schedule(self, steps_per_epoch: int, epochs: int) -> None:
        self.ramp.set_schedule(steps_per_epoch, epochs)

    @classmethod
    def reads_hint_set(cls, params: dict) -> bool:
        return False

    @classmethod
    def select_layers(cls, teacher: list[CandidateLayer], student: list[CandidateLayer],
                      hints: Optional[list[CandidateLayer]], params: dict) -> tuple[list[CandidateLayer],
                                                                                list[CandidateLayer]]:
        """The teacher's stage ends and the student's, one to one (the hint set is not used)."""
        t_ends, s_ends = stage_ends(teacher), stage_ends(student)
        if len(t_ends) != len(s_ends):
            raise PursuhintError(
                f"reviewkd pairs the student's stages with the teacher's one to one, but the teacher has "
                f"{len(t_ends)} ({', '.join(l.name for l in t_ends)}) and the student {len(s_ends)} "
                f"({', '.join(l.name for l in s_ends)}); choose a pair with as many stages, or another method")
        return t_ends, s_ends

    def hint_loss(self, feats_s: Sequence[Tensor], feats_t: Sequence[Tensor]) -> Tensor:
        """Σ over levels of HCL(ABF-fused student, teacher), times the warm-up's factor."""
        if len(feats_s) != self.num_pairs or len(feats_t) != self.num_pairs:
            raise PursuhintError(f"reviewkd was built for {self.num_pairs} stages but got {len(feats_s)} student "
                                 f"and {len(feats_t)} teacher features")
        factor = self.ramp.factor(self.training)
        below, total = None, zero_like(*feats_s)
        for i in reversed(range(self.num_pairs)):  # deepest first: each level fuses the one below it
            out, below = self.abfs[i](feats_s[i], below)
            with torch.autocast(device_type=out.device.type, enabled=False):
                total = total + hcl_loss(upcast(out), upcast(feats_t[i].detach()), self.levels)
        return factor * total

    def get_extra_state(self) -> dict[str, int]:
        return self.ramp.state()

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.ramp.load(state)
