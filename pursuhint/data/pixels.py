"""Arithmetic on uint8 N×C×H×W images that the loaders share: resizing and exact per-channel statistics."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import DataError
from .mapped import Images, row_chunks


def resize_images(x: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Bilinear (antialiased when shrinking) resize of uint8 N×C×H×W images to size×size, as uint8."""
    if x.shape[-2:] == (size, size):
        return x
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, x.shape[0], chunk):
        part = x[start : start + chunk].float()
        part = F.interpolate(part, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[start : start + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
    return out


def channel_stats(x: Images) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images on the 0–1 scale (exact, via histograms).

    The histograms are summed over chunks of rows, so a memory-mapped split is streamed, never held whole;
    integer counts make the result the same however the rows are chunked.
    """
    if x.shape[0] * x.shape[2] * x.shape[3] == 0:
        raise DataError("cannot compute channel statistics of an empty training split; add images")
    hist = torch.zeros((x.shape[1], 256), dtype=torch.int64)
    for part in row_chunks(x):
        for c in range(part.shape[1]):
            hist[c] += torch.bincount(part[:, c].reshape(-1), minlength=256)
    return histogram_stats(hist)


def histogram_stats(hist: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation on the 0–1 scale from C×256 pixel-value counts."""
    values = torch.arange(256, dtype=torch.float64)
    mean, std = [], []
    for c in range(hist.shape[0]):
        p = hist[c].to(torch.float64) / hist[c].sum().to(torch.float64)
        m = float((p * values).sum())
        var = max(float((p * values * values).sum()) - m * m, 0.0)
        mean.append(m / 255)
        std.append(max(var**0.5, 1e-3 * 255) / 255)  # a constant channel must not divide by zero
    return tuple(mean), tuple(std)
