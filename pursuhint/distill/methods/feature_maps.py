"""Methods that compare feature maps position by position: FitNet, AT, NST, VID."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import PursuhintError
from .base import DistillMethod, Shape, require_maps, pool_to_common
from .registry import METHODS


class ConvReg(nn.Module):
    """FitNet's regressor: student (C_s, H_s, W_s) → teacher (C_t, H_t, W_t), conv + BN + ReLU.

    As the benchmark's ``ConvReg``: H_s = 2·H_t → 3×3 conv, stride 2; 2·H_s = H_t → 4×4 transposed
    conv, stride 2; H_s ≥ H_t → conv with kernel (1 + H_s − H_t, 1 + W_s − W_t) (1×1 when equal).
    Extension: any other smaller student map is nearest-upsampled to H_t × W_t, then a 3×3 conv
    (the benchmark raises there). Vectors (D_s,) → (D_t,) use Linear + BN + ReLU.
    """

    def __init__(self, s_shape: Shape, t_shape: Shape) -> None:
        super().__init__()
        self.size: tuple[int, int] | None = None
        if len(s_shape) == 1 and len(t_shape) == 1:
            self.conv: nn.Module = nn.Linear(s_shape[0], t_shape[0])
            self.bn: nn.Module = nn.BatchNorm1d(t_shape[0])
            return
        if len(s_shape) != 3 or len(t_shape) != 3:
            raise PursuhintError(
                f"FitNet cannot regress a student feature of shape {s_shape} onto a teacher feature of shape "
                f"{t_shape}; both must be (C, H, W) maps or both (D,) vectors."
            )
        (s_c, s_h, s_w), (t_c, t_h, t_w) = s_shape, t_shape
        if (s_h, s_w) == (2 * t_h, 2 * t_w):
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
        elif (2 * s_h, 2 * s_w) == (t_h, t_w):
            self.conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
        elif s_h >= t_h and s_w >= t_w:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
        else:
            self.size = (t_h, t_w)
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(t_c)

    def forward(self, x: Tensor) -> Tensor:
        if self.size is not None:
            x = F.interpolate(x, size=self.size, mode="nearest")
        return F.relu(self.bn(self.conv(x)))


@METHODS.register("fitnet")
class FitNet(DistillMethod):
    """FitNets (Romero et al., ICLR 2015): MSE between regressor(student) and the teacher map.

    Reference (benchmark ``HintLoss`` + ``ConvReg``): mean((ConvReg(f_s) − f_t)²) over every element.
    Deviation: the benchmark hints one layer; here every pair has its own regressor and the pair
    losses are summed.
    """

    default_weight = 100.0  # the CRD benchmark's β

    def __init__(self, student_shapes: Sequence[Sequence[int]], teacher_shapes: Sequence[Sequence[int]]) -> None:
        super().__init__(student_shapes, teacher_shapes)
        self.connectors = nn.ModuleList(ConvReg(s, t) for s, t in zip(self.student_shapes, self.teacher_shapes))

    def adapt(self, k: int, f_s: Tensor, f_t: Tensor) -> tuple[Tensor, Tensor]:
        return self.connectors[k](f_s), f_t

    def pair_loss(self, f_s: Tensor, f_t: Tensor, k: int = 0) -> Tensor:
        if f_s.shape != f_t.shape:
            raise PursuhintError(
                f"FitNet compares tensors of equal shape, got {tuple(f_s.shape)} and {tuple(f_t.shape)}; "
                f"apply the pair's connector first."
            )
        return F.mse_loss(f_s, f_t)


@METHODS.register("at")
class AT(DistillMethod):
    """Attention transfer (Zagoruyko & Komodakis, ICLR 2017), the benchmark's ``Attention``.

    a(f) = L2-normalise(flatten(mean_c f^p)); loss = mean_{b,i}((a(f_s) − a(f_t))²), p = 2.
    Maps of different size: the larger is adaptive-average-pooled to the smaller (per H and W;
    the benchmark pools to a square of the smaller height).
    """

    default_weight = 1000.0  # the CRD benchmark's β

    def __init__(self, student_shapes: Sequence[Sequence[int]], teacher_shapes: Sequence[Sequence[int]], p: float = 2.0) -> None:
        super().__init__(student_shapes, teacher_shapes)
        require_maps("at", self.student_shapes, self.teacher_shapes)
        if not p > 0:
            raise PursuhintError(f"AT exponent p={p!r} is invalid; use a number > 0 (the benchmark uses 2).")
        self.p = float(p)

    def attention(self, f: Tensor) -> Tensor:
        return F.normalize(f.pow(self.p).mean(1).reshape(f.shape[0], -1), dim=1)

    def pair_loss(self, f_s: Tensor, f_t: Tensor, k: int = 0) -> Tensor:
        f_s, f_t = pool_to_common(f_s, f_t)
        return (self.attention(f_s) - self.attention(f_t)).pow(2).mean()


def poly_kernel(a: Tensor, b: Tensor) -> Tensor:
    """(B, C_b, C_a) matrix of (a_i · b_j)² between the channel rows of a (B, C_a, N) and b (B, C_b, N)."""
    return torch.bmm(b, a.transpose(1, 2)).pow(2)


@METHODS.register("nst")
class NST(DistillMethod):
    """Neuron selectivity transfer (Huang & Wang, 2017), the benchmark's ``NSTLoss`` (full form).

    Each channel's flattened map is L2-normalised; with the polynomial kernel K(a, b) = (a·b)²
    between channels of one sample, MMD² = mean K(t, t) (detached) + mean K(s, s) − 2 mean K(s, t).
    Maps of different size: the larger is adaptive-average-pooled to the smaller.
    """

    default_weight = 50.0  # the CRD benchmark's β

    def __init__(self, student_shapes: Sequence[Sequence[int]], teacher_shapes: Sequence[Sequence[int]]) -> None:
        super().__init__(student_shapes, teacher_shapes)
        require_maps("nst", self.student_shapes, self.teacher_shapes)

    def pair_loss(self, f_s: Tensor, f_t: Tensor, k: int = 0) -> Tensor:
        f_s, f_t = pool_to_common(f_s, f_t)
        s = F.normalize(f_s.reshape(f_s.shape[0], f_s.shape[1], -1), dim=2)
        t = F.normalize(f_t.reshape(f_t.shape[0], f_t.shape[1], -1), dim=2)
        return poly_kernel(t, t).mean().detach() + poly_kernel(s, s).mean() - 2 * poly_kernel(s, t).mean()


@METHODS.register("vid")
class VID(DistillMethod):
    """Variational information distillation (Ahn et al., CVPR 2019), the benchmark's ``VIDLoss``.

    Maps are first pooled to a common size (larger → smaller); a regressor 1×1 conv (C_s → mid),
    ReLU, 1×1 (mid → mid), ReLU, 1×1 (mid → C_t), no biases, predicts the teacher mean; the
    per-channel variance is softplus(α) + eps with α initialised so that it starts at
    ``init_pred_var``. loss = mean over (B, C, H, W) of 0.5·((μ − t)²/σ² + log σ²).
    ``mid_channels`` defaults to C_t (the benchmark's ``VIDLoss(s, t, t)``). Vectors are treated as
    1×1 maps (extension).
    """

    default_weight = 1.0  # the CRD benchmark's β

    def __init__(
        self,
        student_shapes: Sequence[Sequence[int]],
        teacher_shapes: Sequence[Sequence[int]],
        mid_channels: int | None = None,
        init_pred_var: float = 5.0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__(student_shapes, teacher_shapes)
        if not init_pred_var > eps > 0:
            raise PursuhintError(
                f"VID init_pred_var={init_pred_var!r} and eps={eps!r} are invalid; use init_pred_var > eps > 0."
            )
        if mid_channels is not None and (not isinstance(mid_channels, int) or mid_channels < 1):
            raise PursuhintError(f"VID mid_channels={mid_channels!r} is invalid; use a positive integer or None.")
        self.eps = float(eps)
        self.regressors = nn.ModuleList()
        self.log_scales = nn.ParameterList()
        alpha = math.log(math.expm1(init_pred_var - eps))
        for s, t in zip(self.student_shapes, self.teacher_shapes):
            mid = mid_channels or t[0]
            self.regressors.append(nn.Sequential(
                nn.Conv2d(s[0], mid, 1, bias=False), nn.ReLU(),
                nn.Conv2d(mid, mid, 1, bias=False), nn.ReLU(),
                nn.Conv2d(mid, t[0], 1, bias=False),
            ))
            self.log_scales.append(nn.Parameter(torch.full((t[0],), alpha)))

    def variance(self, k: int) -> Tensor:
        """σ² of pair k, one value per teacher channel."""
        return F.softplus(self.log_scales[k]) + self.eps

    def adapt(self, k: int, f_s: Tensor, f_t: Tensor) -> tuple[Tensor, Tensor]:
        f_s = f_s.reshape(*f_s.shape, 1, 1) if f_s.dim() == 2 else f_s
        f_t = f_t.reshape(*f_t.shape, 1, 1) if f_t.dim() == 2 else f_t
        f_s, f_t = pool_to_common(f_s, f_t)
        return self.regressors[k](f_s), f_t

    def pair_loss(self, f_s: Tensor, f_t: Tensor, k: int = 0) -> Tensor:
        var = self.variance(k).to(f_s.dtype).view(1, -1, 1, 1)
        return (0.5 * ((f_s - f_t).pow(2) / var + torch.log(var))).mean()
