"""The built-in ``digits`` data set: scikit-learn's bundled 8×8 handwritten digits (no download)."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

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
    pixels, target = digits_arrays()
    images = np.rint(pixels * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    x = torch.from_numpy(images).unsqueeze(1)
    x = resize_images(x, image_size or 16)
    y = torch.from_numpy(target)
    val_idx = stratified_indices(y, round(0.2 * len(y)), seed, tag=0, what="digits")
    is_val = torch.zeros(len(y), dtype=torch.bool)
    is_val[val_idx] = True
    classes = [str(c) for c in range(10)]
    return dataset_with_stats("digits", x[~is_val], y[~is_val], x[is_val], y[is_val], classes, "crop")


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images 1797 × 8 × 8 of 0–16 as float64, labels as int64): what ``sklearn.datasets.load_digits`` returns,
    read from the file scikit-learn bundles without importing scikit-learn, whose import (~1 s of CPU, with
    SciPy's) every trial process that loads digits would otherwise pay; scikit-learn's own loader when the file
    is not where a normal install puts it."""
    spec = importlib.util.find_spec("sklearn")  # finds the package without running its __init__
    homes = spec.submodule_search_locations if spec is not None else None
    path = Path(list(homes)[0]) / "datasets" / "data" / "digits.csv.gz" if homes else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits as sk_load_digits  # sklearn: deferred, slow to import

        raw = sk_load_digits()
        return raw.images, raw.target.astype(np.int64)
    with gzip.open(path, mode="rt", encoding="utf-8") as rows:
        data = np.loadtxt(rows, delimiter=",")  # 64 pixel columns, then the label
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
