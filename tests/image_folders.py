"""A generated ImageFolder for the data tests: random-noise PNGs of odd sizes, so every image is resized and
center-cropped on its way in."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image


def write_random_folder(root: Path, classes: Sequence[str], train: int, val: int, seed: int = 0) -> Path:
    """``train`` + ``val`` random-noise PNGs per class under ``root/{train,val}/<class>/``; ``root``."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("val", val)):
        for cls in classes:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (int(rng.integers(9, 14)), int(rng.integers(9, 14)), 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i:03d}.png")
    return root
