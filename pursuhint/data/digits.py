"""The built-in ``digits`` data set: scikit-learn's bundled 8×8 handwritten digits (no download)."""

from __future__ import annotations

import numpy as np
import torch

from .dataset import DATASETS, ImageDataset, dataset_with_stats
from .pixels import resize_images
from .splits import stratified_indices


@DATASETS.register("digits")
def load_digits(root: str | None, image_size: int | None, seed: int) -> ImageDataset:
    """scikit-learn's 1 797 8×8 handwritten digits (real, bundled, no download), upsampled to 16 px.

    Values 0–16 become 0–255; the 80/20 train/val split is stratified and fixed by ``seed``.
    ``root`` is ignored.
    """
    from sklearn.datasets import load_digits as sk_load_digits  # sklearn: deferred, slow to import

    raw = sk_load_digits()
    images = np.rint(raw.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    x = torch.from_numpy(images).unsqueeze(1)
    x = resize_images(x, image_size or 16)
    y = torch.from_numpy(raw.target.astype(np.int64))
    val_idx = stratified_indices(y, round(0.2 * len(y)), seed, tag=0, what="digits")
    is_val = torch.zeros(len(y), dtype=torch.bool)
    is_val[val_idx] = True
    classes = [str(int(c)) for c in raw.target_names]
    return dataset_with_stats("digits", x[~is_val], y[~is_val], x[is_val], y[is_val], classes, "crop")
