"""The data-set type and its registry: :class:`ImageDataset`, ``DATASETS`` and :func:`load_dataset`.

Every loader returns an :class:`ImageDataset` whose images are decoded once and held on the CPU as
N×C×H×W uint8: in memory (digits, CIFAR), or, for ImageFolder, in a memory-mapped cache file read a batch
at a time (:class:`~pursuhint.data.mapped.ImageRows`), so a data set larger than RAM trains in bounded
memory. Batching and augmentation happen later, on the device (``loader.py``). The built-in loaders
register themselves in their own modules (``digits.py``, ``cifar.py``, ``imagefolder.py``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from ..errors import DataError
from ..infra.registry import Registry
from .mapped import Images, in_ram, take_rows
from .pixels import channel_stats
from .splits import carve_selection_split, stratified_indices

AUGMENTATIONS = ("none", "crop", "crop_flip")

Loader = Callable[[str | None, int | None, int], "ImageDataset"]
DATASETS: Registry[Loader] = Registry("data set", error=DataError)
# A data set that can be checked without decoding all of it registers a survey here under its name: a loader
# whose data set has the real labels, classes and split sizes but 1-pixel placeholder images.
SURVEYS: Registry[Loader] = Registry("data set survey", error=DataError)


@dataclass
class ImageDataset:
    """A classification data set: uint8 N×C×H×W images, int64 labels, in three splits.

    Each split's images are an in-memory tensor or, for a memory-mapped ImageFolder cache, an
    :class:`~pursuhint.data.mapped.ImageRows` view (the file plus its rows' positions) that reads rows only
    when a batch asks for them; labels are always in memory.

    ``train`` is what students (and a teacher pursuhint trains) learn from; ``val`` is the selection split,
    carved out of the training data (``data.val_fraction``), the only accuracy the search sees; ``test``
    is the data set's own held-out part, touched only by the confirmation stage. ``splits`` records each
    split's size and a short hash of its indices. ``mean``/``std`` are per-channel statistics of the
    training images on the 0–1 scale; ``augment`` is the data set's default training augmentation.
    """

    name: str
    train_x: Images
    train_y: torch.Tensor
    val_x: Images
    val_y: torch.Tensor
    num_classes: int
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str = "crop_flip"
    test_x: Optional[Images] = None
    test_y: Optional[torch.Tensor] = None
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.train_x, self.train_y), ("val", self.val_x, self.val_y)):
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise DataError(
                    f"data set {self.name!r} {split} images have dtype {x.dtype} and shape "
                    f"{tuple(x.shape)}; expected uint8 N×C×H×W images"
                )
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise DataError(
                    f"data set {self.name!r} {split} labels have dtype {y.dtype} and shape "
                    f"{tuple(y.shape)}; expected int64 of shape ({x.shape[0]},)"
                )
        if self.val_x.shape[1:] != self.train_x.shape[1:]:
            raise DataError(
                f"data set {self.name!r} val images are {tuple(self.val_x.shape[1:])} but train images "
                f"are {tuple(self.train_x.shape[1:])}; both splits need the same C×H×W"
            )
        if len(self.classes) != self.num_classes:
            raise DataError(
                f"data set {self.name!r} names {len(self.classes)} classes but num_classes is "
                f"{self.num_classes}; they must agree"
            )
        c = self.channels
        if len(self.mean) != c or len(self.std) != c:
            raise DataError(
                f"data set {self.name!r} has mean {self.mean} and std {self.std}; expected {c} "
                "values each, one per channel"
            )
        if self.augment not in AUGMENTATIONS:
            raise DataError(
                f"data set {self.name!r} has augment {self.augment!r}; valid: {', '.join(AUGMENTATIONS)}"
            )

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[2])


def dataset_with_stats(
    name: str,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    classes: list[str],
    augment: str,
) -> ImageDataset:
    """An in-memory :class:`ImageDataset` whose ``mean``/``std`` are the training images' channel statistics."""
    mean, std = channel_stats(train_x)
    return ImageDataset(name, train_x, train_y, val_x, val_y, len(classes), classes, mean, std, augment)


# ---------------------------------------------------------------------------------------------
# public entry point


def load_dataset(
    name: str,
    root: str | None = None,
    image_size: int | None = None,
    train_samples: int | None = None,
    val_samples: int | None = None,
    seed: int = 0,
    val_fraction: float | None = None,
    memory_map: bool = True,
) -> ImageDataset:
    """Load data set ``name`` (see ``DATASETS.names()``), optionally resized and stratified-subsampled.

    ``image_size=None`` keeps the native size; ``train_samples`` keeps a stratified subset of the
    training data and ``val_samples`` one of the held-out data, the same for the same ``seed``.
    With ``val_fraction`` the data set has three splits: that stratified, seed-fixed fraction of the
    training data becomes the selection split (``val``), the rest stays ``train``, and the held-out
    data becomes ``test``; without it (``None``), the held-out data is ``val`` as before and there is
    no test split. ``mean``/``std`` always describe the full training split.

    A loader may return memory-mapped splits (ImageFolder does): subsets and the selection split are then
    views of the mapped file that copy no pixels. ``memory_map=False`` reads such splits into memory first
    (the in-RAM path; the batches are the same). Digits and CIFAR are in memory either way.

    ``root`` may name environment variables (``${DATA_ROOT}``): the loader expands them (:func:`expand_root`)
    on the machine that reads the data, so each node of a cluster may have its own copy.
    """
    loader = DATASETS.get(name)
    _check_arguments(image_size, train_samples, val_samples, seed)
    ds = loader(root, image_size, seed)
    if not memory_map:
        ds.train_x, ds.val_x = in_ram(ds.train_x), in_ram(ds.val_x)
    return _shape_splits(ds, name, train_samples, val_samples, seed, val_fraction)


def survey_dataset(
    name: str,
    root: str | None = None,
    image_size: int | None = None,
    train_samples: int | None = None,
    val_samples: int | None = None,
    seed: int = 0,
    val_fraction: float | None = None,
) -> ImageDataset:
    """The splits :func:`load_dataset` would make, checked as it checks them (sizes, every class in every split),
    without decoding every image where the data set has a survey (``SURVEYS``: ImageFolder lists its files and
    decodes a sample); the images of such a data set are 1-pixel placeholders. Others are loaded."""
    if name not in SURVEYS:
        return load_dataset(name, root, image_size, train_samples, val_samples, seed, val_fraction)
    survey = SURVEYS.get(name)
    _check_arguments(image_size, train_samples, val_samples, seed)
    return _shape_splits(survey(root, image_size, seed), name, train_samples, val_samples, seed, val_fraction)


def _check_arguments(image_size: int | None, train_samples: int | None, val_samples: int | None,
                     seed: object) -> None:
    if image_size is not None:
        _check_positive_int("image_size", image_size, minimum=4)
    for what, n in (("train_samples", train_samples), ("val_samples", val_samples)):
        if n is not None:
            _check_positive_int(what, n)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise DataError(f"seed {seed!r} is not an integer; give an integer seed such as 0")


def _shape_splits(ds: ImageDataset, name: str, train_samples: int | None, val_samples: int | None, seed: int,
                  val_fraction: float | None) -> ImageDataset:
    """The loaded data set's subsets and its selection split (see :func:`load_dataset`)."""
    if train_samples is not None:
        idx = stratified_indices(ds.train_y, train_samples, seed, tag=1, what=f"{name} train")
        ds.train_x, ds.train_y = take_rows(ds.train_x, idx), ds.train_y[idx]
    held = torch.arange(ds.val_y.shape[0])
    if val_samples is not None:
        held = stratified_indices(ds.val_y, val_samples, seed, tag=2, what=f"{name} val")
        ds.val_x, ds.val_y = take_rows(ds.val_x, held), ds.val_y[held]
    if val_fraction is None:
        return ds
    return carve_selection_split(ds, val_fraction, seed, held_indices=held)


_VARIABLE = re.compile(r"\$(\w+)|\$\{(\w+)\}")


def expand_root(root: str) -> Path:
    """A data folder as configured, on the machine that reads it: its environment variables (``$NAME``,
    ``${NAME}``) and ``~`` expanded here, so each node of a cluster may point at its own copy of the data; a
    variable not set here is a DataError."""
    unset = [a or b for a, b in _VARIABLE.findall(root) if (a or b) not in os.environ]
    if unset:
        raise DataError(f"data.root {root!r} names the environment variable {unset[0]}, which is not set on "
                        f"this machine; set it (on a cluster, in each node's environment) or give a path")
    return Path(os.path.expandvars(root)).expanduser()


def portable_root(root: str) -> str:
    """``root`` as it may be handed to another process or node: as configured when it names a variable or
    starts with ``~`` (each node expands it for itself), else as an absolute path."""
    if "$" in root or root.startswith("~"):
        return root
    return str(expand_root(root).absolute())


def _check_positive_int(what: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DataError(f"{what} {value!r} is invalid; expected an integer >= {minimum} or None")
