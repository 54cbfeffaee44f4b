"""Image data sets as uint8 images: embedded digits, CIFAR-10/100 and ImageFolder.

Every loader returns an :class:`ImageDataset` whose images are decoded once and held on the CPU as
N×C×H×W uint8: in memory (digits, CIFAR), or, for ImageFolder, in a memory-mapped cache file read a batch
at a time (:class:`~pursuhint.data.mapped.ImageRows`), so a data set larger than RAM trains in bounded
memory. Batching and augmentation happen later, on the device (``loader.py``).
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import json
import multiprocessing
import os
import pickle
import shutil
import sys
import tempfile
import time
import warnings
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import DataError
from ..fileio import atomic_write
from ..paths import runs_dir
from ..registry import Registry
from .mapped import ImageRows, Images, in_ram, row_chunks, take_rows

AUGMENTATIONS = ("none", "crop", "crop_flip")

Loader = Callable[[str | None, int | None, int], "ImageDataset"]
DATASETS: Registry[Loader] = Registry("data set", error=DataError)


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
    """
    loader = DATASETS.get(name)
    if image_size is not None:
        _check_positive_int("image_size", image_size, minimum=4)
    for what, n in (("train_samples", train_samples), ("val_samples", val_samples)):
        if n is not None:
            _check_positive_int(what, n)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise DataError(f"seed {seed!r} is not an integer; give an integer seed such as 0")
    ds = loader(root, image_size, seed)
    if not memory_map:
        ds.train_x, ds.val_x = in_ram(ds.train_x), in_ram(ds.val_x)
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


def split_hash(indices: torch.Tensor) -> str:
    """A short hash of a split's sorted indices: two runs with the same hash saw the same images."""
    data = np.ascontiguousarray(indices.cpu().numpy().astype(np.int64))
    return hashlib.sha256(data.tobytes()).hexdigest()[:12]


def carve_selection_split(ds: ImageDataset, val_fraction: float, seed: int,
                          held_indices: Optional[torch.Tensor] = None) -> ImageDataset:
    """Move ``ds.val`` (the held-out data) to ``ds.test`` and carve a stratified ``val_fraction`` of the
    training data, fixed by ``seed``, into ``ds.val`` (the selection split); students never train on it.
    In-memory images are copied into the two parts; memory-mapped ones become two views of the same file."""
    if not 0 < val_fraction < 0.5:
        raise DataError(f"val_fraction {val_fraction!r} is invalid; expected a number strictly between 0 and 0.5")
    n = int(ds.train_y.shape[0])
    sel = stratified_indices(ds.train_y, max(1, round(val_fraction * n)), seed, tag=3, what=f"{ds.name} train")
    keep = torch.ones(n, dtype=torch.bool)
    keep[sel] = False
    train_idx = torch.nonzero(keep).flatten()
    held = held_indices if held_indices is not None else torch.arange(ds.val_y.shape[0])
    ds.test_x, ds.test_y = ds.val_x, ds.val_y
    ds.val_x, ds.val_y = take_rows(ds.train_x, sel), ds.train_y[sel]
    ds.train_x, ds.train_y = take_rows(ds.train_x, train_idx), ds.train_y[train_idx]
    for split, labels in (("training", ds.train_y), ("selection", ds.val_y), ("test", ds.test_y)):
        missing = sorted(set(range(ds.num_classes)) - set(labels.unique().tolist()))
        if missing:
            raise DataError(
                f"the {split} split of {ds.name!r} ({labels.shape[0]} images) lacks class(es) "
                f"{[ds.classes[i] for i in missing[:5]]}; raise data.val_fraction ({val_fraction}) or "
                f"data.train_samples/val_samples so every split holds every class")
    ds.splits = {"train": {"size": int(train_idx.numel()), "hash": split_hash(train_idx)},
                 "selection": {"size": int(sel.numel()), "hash": split_hash(sel)},
                 "test": {"size": int(held.numel()), "hash": split_hash(held)}}
    return ds


def _check_positive_int(what: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DataError(f"{what} {value!r} is invalid; expected an integer >= {minimum} or None")


# ---------------------------------------------------------------------------------------------
# shared helpers


def stratified_indices(y: torch.Tensor, n: int, seed: int, tag: int = 0, what: str = "split") -> torch.Tensor:
    """Sorted indices of a class-stratified random subset of ``n`` labels, deterministic for ``seed``.

    Each class gets ``n · count_c / N`` rounded by largest remainder (ties to the lower class), so
    class proportions are kept as closely as integers allow.
    """
    labels = y.cpu().numpy()
    total = len(labels)
    if n > total:
        raise DataError(f"{what} has {total} images, fewer than the {n} requested; ask for at most {total}")
    classes, counts = np.unique(labels, return_counts=True)
    exact = n * counts / total
    quota = np.floor(exact).astype(np.int64)
    short = n - int(quota.sum())
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[:short]] += 1
    rng = np.random.default_rng([seed, tag])
    picked = []
    for cls, k in zip(classes, quota):
        members = np.flatnonzero(labels == cls)
        picked.append(members[rng.permutation(len(members))[:k]])
    idx = np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)
    return torch.from_numpy(idx.astype(np.int64))


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


def _finish(
    name: str,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    classes: list[str],
    augment: str,
) -> ImageDataset:
    mean, std = channel_stats(train_x)
    return ImageDataset(name, train_x, train_y, val_x, val_y, len(classes), classes, mean, std, augment)


# ---------------------------------------------------------------------------------------------
# digits (bundled with scikit-learn)


@DATASETS.register("digits")
def load_digits(root: str | None, image_size: int | None, seed: int) -> ImageDataset:
    """scikit-learn's 1 797 8×8 handwritten digits (real, bundled, no download), upsampled to 16 px.

    Values 0–16 become 0–255; the 80/20 train/val split is stratified and fixed by ``seed``.
    ``root`` is ignored.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    raw = sk_load_digits()
    images = np.rint(raw.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    x = torch.from_numpy(images).unsqueeze(1)
    x = resize_images(x, image_size or 16)
    y = torch.from_numpy(raw.target.astype(np.int64))
    val_idx = stratified_indices(y, round(0.2 * len(y)), seed, tag=0, what="digits")
    is_val = torch.zeros(len(y), dtype=torch.bool)
    is_val[val_idx] = True
    classes = [str(int(c)) for c in raw.target_names]
    return _finish("digits", x[~is_val], y[~is_val], x[is_val], y[is_val], classes, "crop")


# ---------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 (the official "python version" archives, unpacked by the user)

_NUMPY_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # how Python 3 writes bytes in protocol-2 pickles; harmless
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler for the CIFAR batch files: only numpy arrays and plain containers may be built.

    The official archives are pickles (written by Python 2, hence ``encoding="bytes"``); refusing
    every other global means a tampered file cannot run code.
    """

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's own signature
        if module.startswith("numpy.core"):  # numpy 1.x spelling of the same module
            module = "numpy._core" + module[len("numpy.core") :]
        if (module, name) not in _NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR file")
        if module == "numpy._core.multiarray":
            try:
                return getattr(importlib.import_module(module), name)
            except ImportError:  # numpy < 2 has only numpy.core
                return getattr(importlib.import_module("numpy.core.multiarray"), name)
        return super().find_class(module, name)


def _read_pickle(path: Path, folder: Path, expected: str) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - unreadable, truncated, not a pickle, or a forbidden global
        raise DataError(
            f"cannot read {path.name} in {str(folder)!r} ({type(e).__name__}: {e}); expected {expected}"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{path.name} in {str(folder)!r} is not a CIFAR pickle dict; expected {expected}")
    return obj


def _cifar_arrays(path: Path, folder: Path, label_key: bytes, expected: str) -> tuple[np.ndarray, np.ndarray]:
    obj = _read_pickle(path, folder, expected)
    data, labels = obj.get(b"data"), obj.get(label_key)
    if data is None or labels is None:
        raise DataError(
            f"{path.name} in {str(folder)!r} lacks the keys b'data' and {label_key!r}; expected {expected}"
        )
    data = np.asarray(data)
    labels = np.asarray(labels)
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8 or labels.shape != (len(data),):
        raise DataError(
            f"{path.name} in {str(folder)!r} holds data {data.dtype} {data.shape} with {labels.shape} labels; "
            "expected uint8 N×3072 rows (R, G, B planes of 32×32) and N labels"
        )
    return data, labels.astype(np.int64)


def _cifar_folder(root: str | None, sub: str, marker: str, expected: str, name: str) -> Path:
    if root is None:
        raise DataError(f"data set {name!r} needs root, a folder holding {sub}/ ({expected})")
    base = Path(root).expanduser()
    for candidate in (base / sub, base):
        if (candidate / marker).is_file():
            return candidate
    raise DataError(
        f"neither {str(base / sub)!r} nor {str(base)!r} is a {name} folder holding {marker}; expected {expected}"
    )


def _load_cifar(
    name: str,
    root: str | None,
    image_size: int | None,
    sub: str,
    train_files: list[str],
    test_file: str,
    meta_file: str,
    label_key: bytes,
    names_key: bytes,
    num_classes: int,
) -> ImageDataset:
    expected = f"{', '.join(train_files + [test_file])} and {meta_file} from the official python archive"
    folder = _cifar_folder(root, sub, train_files[0], expected, name)
    missing = [f for f in train_files + [test_file] if not (folder / f).is_file()]
    if missing:
        raise DataError(f"CIFAR folder {str(folder)!r} lacks {', '.join(missing)}; expected {expected}")
    parts = [_cifar_arrays(folder / f, folder, label_key, expected) for f in train_files]
    train_data = np.concatenate([p[0] for p in parts])
    train_labels = np.concatenate([p[1] for p in parts])
    val_data, val_labels = _cifar_arrays(folder / test_file, folder, label_key, expected)

    classes = [f"class_{i}" for i in range(num_classes)]
    if (folder / meta_file).is_file():
        meta = _read_pickle(folder / meta_file, folder, expected)
        names = meta.get(names_key)
        if not isinstance(names, list) or len(names) != num_classes:
            raise DataError(
                f"{meta_file} in {str(folder)!r} lacks {names_key!r} with {num_classes} names; expected {expected}"
            )
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    for split, labels in (("train", train_labels), ("test", val_labels)):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise DataError(
                f"{name} {split} labels in {str(folder)!r} span {labels.min()}..{labels.max()}; "
                f"expected 0..{num_classes - 1}"
            )

    def images(data: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32))
        return resize_images(x, image_size) if image_size else x

    return _finish(
        name,
        images(train_data),
        torch.from_numpy(train_labels),
        images(val_data),
        torch.from_numpy(val_labels),
        classes,
        "crop_flip",
    )


@DATASETS.register("cifar10")
def load_cifar10(root: str | None, image_size: int | None, seed: int) -> ImageDataset:
    """CIFAR-10 from ``root/cifar-10-batches-py/`` (or that folder itself); the test batch is the val split."""
    files = [f"data_batch_{i}" for i in range(1, 6)]
    return _load_cifar(
        "cifar10", root, image_size, "cifar-10-batches-py", files, "test_batch", "batches.meta",
        b"labels", b"label_names", 10,
    )


@DATASETS.register("cifar100")
def load_cifar100(root: str | None, image_size: int | None, seed: int) -> ImageDataset:
    """CIFAR-100 (fine labels) from ``root/cifar-100-python/`` (or that folder itself); test is the val split."""
    return _load_cifar(
        "cifar100", root, image_size, "cifar-100-python", ["train"], "test", "meta",
        b"fine_labels", b"fine_label_names", 100,
    )


# ---------------------------------------------------------------------------------------------
# ImageFolder: root/train/<class>/*, root/val/<class>/* (or root/test/)
#
# The decoded images are cached once per image size and file list, in a folder
# ``imagefolder-<size>px-<key>/`` holding
#   train_x.npy, val_x.npy   uint8 N×3×size×size in numpy's .npy format (a header, then the raw rows),
#                            memory-mapped when read: a split is never read whole
#   train_y.npy, val_y.npy   int64 labels (read into memory: 8 bytes an image)
#   meta.json                format version, key, classes, split sizes, the training split's channel mean/std
# It is written in a temporary folder beside it and renamed into place, so a crash or Ctrl-C never leaves a
# half-written cache; an unreadable or inconsistent one is rebuilt.

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_CACHE_VERSION = 2  # 2: the memory-mapped folder above; 1 was one .npz read whole (such caches are rebuilt)
_DECODE_CHUNK = 512  # files per decoding job
_DECODE_WORKERS = 8  # at most this many decoding processes (and never more than the usable cores)


def _list_split(split_dir: Path) -> list[tuple[str, Path]]:
    """(class, file) pairs under split_dir/<class>/, sorted by class then file name."""
    items = []
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(class_dir.iterdir()):
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS:
                items.append((class_dir.name, f))
    return items


def _decode(path: Path, size: int) -> np.ndarray:
    """One image as size×size×3 uint8: RGB, shorter side resized to ``size``, center-cropped."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            im = im.resize((nw, nh), getattr(Image, "Resampling", Image).BILINEAR)
            left, top = (nw - size) // 2, (nh - size) // 2
            return np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8)
    except (OSError, ValueError) as e:
        raise DataError(f"image {str(path)!r} cannot be decoded ({e}); expected a PIL-readable image") from None


IMAGE_CACHE_ENV = "PURSUHINT_IMAGE_CACHE"  # a folder for every ImageFolder's decoded cache (<folder>/<root id>/)


def _cache_dirs(base: Path) -> tuple[list[Path], list[Path]]:
    """(where decoded images are looked for, where a new cache may be written, first writable one used): beside
    the data and under the runs folder (``$PURSUHINT_RUNS/cache/imagefolder/<root id>``), both read, the data
    folder written only when it is not read-only. ``$PURSUHINT_IMAGE_CACHE`` replaces both with
    ``<that folder>/<root id>`` (fast local or shared storage)."""
    root_id = hashlib.sha256(str(base.resolve()).encode()).hexdigest()[:16]
    chosen = os.environ.get(IMAGE_CACHE_ENV)
    if chosen:
        only = [Path(chosen).expanduser().absolute() / root_id]
        return only, only
    dirs = [base / ".pursuhint_cache", runs_dir() / "cache" / "imagefolder" / root_id]
    return dirs, dirs[1:] if _root_read_only(base) else dirs


def _root_read_only(base: Path) -> bool:
    """Whether the data folder must not be written into: not writable for this process, or without any write
    permission bit (a share marked read-only, which root could otherwise write)."""
    try:
        mode = base.stat().st_mode
    except OSError:
        return True
    return not os.access(base, os.W_OK | os.X_OK) or not mode & 0o222


def _imagefolder_files(base: Path) -> tuple[list[str], list[tuple[str, Path]], list[tuple[str, Path]]]:
    """Sorted class names and the (class, file) lists of the train and val (or test) splits."""
    train_dir = base / "train"
    val_dir = next((base / s for s in ("val", "test") if (base / s).is_dir()), None)
    if not train_dir.is_dir() or val_dir is None:
        raise DataError(
            f"image folder {str(base)!r} lacks train/ or val/ (or test/); "
            "expected train/<class>/* and val/<class>/*"
        )
    train_items, val_items = _list_split(train_dir), _list_split(val_dir)
    for split_dir, items in ((train_dir, train_items), (val_dir, val_items)):
        if not items:
            raise DataError(
                f"image folder split {str(split_dir)!r} has no images; expected <class>/ folders with "
                f"{', '.join(IMAGE_EXTENSIONS)} files"
            )
    classes = sorted({c for c, _ in train_items})
    folders = {p.name for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith(".")}
    empty = sorted(folders - set(classes))
    if empty:
        raise DataError(f"class folders {empty} in {str(train_dir)!r} have no images; add images or remove them")
    unknown = sorted({c for c, _ in val_items} - set(classes))
    if unknown:
        raise DataError(
            f"classes {unknown} in {str(val_dir)!r} are not in {str(train_dir)!r}; valid: {classes}"
        )
    return classes, train_items, val_items


SAMPLED_FILES = 256  # files whose first bytes enter the cache key, evenly spaced over the sorted listing
SAMPLED_BYTES = 4096


def _cache_key(base: Path, items: list[tuple[str, Path]], size: int) -> str:
    """The data's content identity and the image size: the sorted relative paths with their sizes, and a hash
    of the first bytes of up to ``SAMPLED_FILES`` of them. Not modification times: copies of one data set on
    several nodes (or restored from a backup) share a key, so they share a cache."""
    listing = sorted((str(f.relative_to(base)), f.stat().st_size, f) for _, f in items)
    step = max(1, len(listing) // SAMPLED_FILES)
    sample = hashlib.sha256()
    for _, _, f in listing[::step][:SAMPLED_FILES]:
        with open(f, "rb") as fh:
            sample.update(fh.read(SAMPLED_BYTES))
    blob = json.dumps({"version": _CACHE_VERSION, "size": size, "files": [[n, b] for n, b, _ in listing],
                       "sample": sample.hexdigest()})
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _read_cache(dirs: list[Path], name: str, key: str, size: int) -> dict[str, Any] | None:
    """The first readable cache ``name`` in ``dirs`` (see :func:`_open_cache`); None when there is none."""
    for d in dirs:
        folder = d / name
        if folder.is_dir():
            try:
                return _open_cache(folder, key, size)
            except (OSError, ValueError, KeyError, TypeError, DataError):
                continue  # damaged: rebuilt, and replaced where the rebuild is written
    return None


def _open_cache(folder: Path, key: str, size: int) -> dict[str, Any]:
    """A cache folder's splits (memory-mapped :class:`ImageRows` images, in-memory labels), classes and
    channel statistics; raises (OSError, ValueError, KeyError, TypeError, DataError) when it is damaged:
    a file missing, truncated or not matching ``meta.json``."""
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    if meta["version"] != _CACHE_VERSION or meta["key"] != key:
        raise ValueError(f"{folder} holds another cache (version {meta['version']}, key {meta['key']})")
    classes = [str(c) for c in meta["classes"]]
    mean, std = tuple(float(v) for v in meta["mean"]), tuple(float(v) for v in meta["std"])
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"{folder}/meta.json has mean {mean} and std {std}; expected 3 values each")
    out: dict[str, Any] = {"classes": classes, "mean": mean, "std": std}
    for split in ("train", "val"):
        n = int(meta[split])
        x = ImageRows(folder / f"{split}_x.npy")  # maps the file: a truncated one fails here
        y = np.load(folder / f"{split}_y.npy", allow_pickle=False)
        if tuple(x.shape) != (n, 3, size, size) or y.dtype != np.int64 or y.shape != (n,):
            raise ValueError(f"{folder}: {split} images {tuple(x.shape)} and labels {y.dtype} {y.shape} do not "
                             f"match meta.json ({n} images of 3×{size}×{size})")
        if n and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            raise ValueError(f"{folder}: {split} labels span {int(y.min())}..{int(y.max())} for {len(classes)} classes")
        out[f"{split}_x"], out[f"{split}_y"] = x, torch.from_numpy(y)
    _mark_used(folder)
    return out


LAST_USED = ".last_used"  # touched whenever a cache is opened: a cache in use is never removed as stale
STALE_AFTER_S = 24 * 3600  # another key's cache unused this long is removed when a new cache is written


def _mark_used(folder: Path) -> None:
    try:
        (folder / LAST_USED).touch()
    except OSError:  # a read-only cache: it is never removed by this process either
        pass


def _unused_for(path: Path) -> float:
    """Seconds since ``path`` (a cache folder or an old .npz) was last opened, or written when never opened."""
    marker = path / LAST_USED
    try:
        return time.time() - (marker if marker.exists() else path).stat().st_mtime
    except OSError:
        return float("inf")


def _write_cache(dirs: list[Path], prefix: str, key: str, size: int, classes: list[str],
                 splits: dict[str, list[tuple[str, Path]]]) -> Path | None:
    """Decode ``splits`` into a temporary folder in the first writable cache folder of ``dirs`` and rename it to
    ``<prefix><key>``; drop that folder's stale caches (other keys, old ``.npz`` files) that no process has opened
    for ``STALE_AFTER_S`` (a running sweep opens its cache by path in every trial). None if none is writable."""
    for d in dirs:
        try:
            d.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=d, prefix=f".{prefix}{key}.", suffix=".tmp"))
        except OSError:
            continue  # not writable (a read-only share, a file in the way): the next folder
        try:
            _decode_into(tmp, key, size, classes, splits)
            final = _publish(tmp, d / f"{prefix}{key}", key, size)
        except OSError:  # e.g. the disk filled up: the next folder
            shutil.rmtree(tmp, ignore_errors=True)
            continue
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for stale in d.glob(f"{prefix}*"):  # other keys (the data changed, or an older version's key) ...
            if stale != final and _unused_for(stale) > STALE_AFTER_S:  # ... unless a sweep may still open them
                _remove(stale)
        return final
    return None


def _publish(tmp: Path, final: Path, key: str, size: int) -> Path:
    """Rename the finished folder ``tmp`` to ``final``. If ``final`` exists, another process finished first
    (its cache is used, ours dropped) or it is damaged (replaced)."""
    try:
        os.rename(tmp, final)
        return final
    except OSError:
        if not final.exists():
            raise
    try:
        _open_cache(final, key, size)
        shutil.rmtree(tmp, ignore_errors=True)
        return final
    except (OSError, ValueError, KeyError, TypeError, DataError):
        _remove(final)
        os.rename(tmp, final)
        return final


def _remove(path: Path) -> None:
    """Delete a file or a folder tree, ignoring what is already gone (a process that still maps a deleted
    file keeps reading it: the pages live until it unmaps them)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _decode_into(folder: Path, key: str, size: int, classes: list[str],
                 splits: dict[str, list[tuple[str, Path]]]) -> None:
    """Decode every split into cache files in ``folder`` (layout above).

    Each ``<split>_x.npy`` is created at its full size (a sparse file; nothing is mapped into this process)
    and filled by jobs of ``_DECODE_CHUNK`` files, run in worker processes that write their rows straight
    into the file: no process ever holds a split. The jobs also count the training split's pixel values,
    so its channel statistics need no second pass.
    """
    index = {c: i for i, c in enumerate(classes)}
    jobs: list[tuple[str, int, int, list[str], int, bool]] = []
    counts = {}
    for split, items in splits.items():
        path = folder / f"{split}_x.npy"
        header = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(len(items), 3, size, size))
        offset = int(header.offset)
        del header  # unmapped before any page is touched
        _reserve(path, offset + len(items) * 3 * size * size)
        np.save(folder / f"{split}_y.npy", np.array([index[c] for c, _ in items], dtype=np.int64))
        counts[split] = len(items)
        for start in range(0, len(items), _DECODE_CHUNK):
            chunk = [str(f) for _, f in items[start : start + _DECODE_CHUNK]]
            jobs.append((str(path), offset, start, chunk, size, split == "train"))
    hist = _run_decode_jobs(jobs)
    mean, std = histogram_stats(torch.from_numpy(hist))
    for split in splits:
        for name in (f"{split}_x.npy", f"{split}_y.npy"):
            _fsync(folder / name)
    meta = {"version": _CACHE_VERSION, "key": key, "image_size": size, "classes": classes, **counts,
            "mean": list(mean), "std": list(std)}
    with atomic_write(folder / "meta.json") as f:
        json.dump(meta, f, indent=1)


def _decode_job(path: str, offset: int, start: int, files: list[str], size: int,
                histogram: bool) -> np.ndarray | None:
    """One decoding job, in a worker process: decode ``files`` into rows ``start…`` of the ``.npy`` file at
    ``path`` (its data begin at byte ``offset``) through a memory map of just those rows; return their 3×256
    pixel-value counts when ``histogram``."""
    rows = np.memmap(path, dtype=np.uint8, mode="r+", offset=offset + start * 3 * size * size,
                     shape=(len(files), 3, size, size))
    try:
        for i, f in enumerate(files):
            rows[i] = _decode(Path(f), size).transpose(2, 0, 1)
        rows.flush()
        if not histogram:
            return None
        return np.stack([np.bincount(rows[:, c].reshape(-1), minlength=256) for c in range(3)]).astype(np.int64)
    finally:
        del rows


def _run_decode_jobs(jobs: list[tuple[str, int, int, list[str], int, bool]]) -> np.ndarray:
    """Run the decoding jobs with a progress bar, in a pool of worker processes (or here, when all the files
    fit one job or there is one usable core); the summed 3×256 pixel-value counts of the training split."""
    hist = np.zeros((3, 256), dtype=np.int64)
    total = sum(len(j[3]) for j in jobs)
    workers = 1 if total <= _DECODE_CHUNK else min(_DECODE_WORKERS, _usable_cores(), len(jobs))
    with tqdm(total=total, desc="decoding images", unit="img", disable=None, leave=False) as bar:
        if workers <= 1:
            for job in jobs:
                part = _decode_job(*job)
                if part is not None:
                    hist += part
                bar.update(len(job[3]))
            return hist
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context())
        try:
            pending: set[Future] = set()
            sizes: dict[Future, int] = {}
            with warnings.catch_warnings():  # Python >= 3.12 warns about forking a threaded process (see above)
                warnings.filterwarnings("ignore", message=r".*use of fork\(\) may lead to deadlocks",
                                        category=DeprecationWarning)
                for job in jobs:
                    fut = pool.submit(_decode_job, *job)
                    pending.add(fut)
                    sizes[fut] = len(job[3])
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for fut in done:
                    part = fut.result()  # a worker's DataError (an undecodable image) is raised here
                    if part is not None:
                        hist += part
                    bar.update(sizes.pop(fut))
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    return hist


def _pool_context() -> Any:
    """Forked worker processes on Linux; the platform's default elsewhere.

    A fork server or spawned workers would import the caller's ``__main__`` again, which breaks any script
    that loads a data set outside an ``if __name__ == "__main__"`` block. The forked workers run only PIL and
    numpy code (no torch, CUDA, Ray or logging), so the parent's threads and their locks never matter there.
    """
    if sys.platform.startswith("linux"):
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context()


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _reserve(path: Path, nbytes: int) -> None:
    """Allocate a file's blocks now, so a full disk is an OSError here rather than a SIGBUS in a process
    writing through its memory map; file systems that cannot preallocate leave it sparse."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise
    finally:
        os.close(fd)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _decode_in_memory(dirs: list[Path], key: str, size: int, classes: list[str],
                      splits: dict[str, list[tuple[str, Path]]]) -> dict[str, Any]:
    """No cache folder is writable: decode into a temporary folder, read the splits into memory, delete it."""
    warnings.warn(f"could not write an image cache in any of {[str(d) for d in dirs]}; images are decoded "
                  "into memory and not cached")
    with tempfile.TemporaryDirectory(prefix="pursuhint-images-") as tmp:
        _decode_into(Path(tmp), key, size, classes, splits)
        cache = _open_cache(Path(tmp), key, size)
        for split in splits:
            cache[f"{split}_x"] = cache[f"{split}_x"].materialise()
    return cache


@DATASETS.register("imagefolder")
def load_imagefolder(root: str | None, image_size: int | None, seed: int) -> ImageDataset:
    """Images in ``root/train/<class>/`` and ``root/val/<class>/`` (or ``root/test/``), as RGB at 32 px.

    Decoded once, by parallel worker processes, into a memory-mapped cache (``.npy`` files, layout above)
    under ``root/.pursuhint_cache/`` (or, when root is read-only, under the runs folder), keyed by the data's
    content identity (relative paths, sizes, a sample's first bytes; see :func:`_cache_key`) and the image size.
    The splits are :class:`ImageRows` views of the mapped files: rows are read a batch at a time, so the data
    set may be larger than RAM.
    """
    if root is None:
        raise DataError("data set 'imagefolder' needs root, a folder holding train/<class>/ and val/<class>/")
    base = Path(root).expanduser()
    size = image_size or 32
    classes, train_items, val_items = _imagefolder_files(base)
    prefix = f"imagefolder-{size}px-"
    key = _cache_key(base, train_items + val_items, size)
    dirs, writable = _cache_dirs(base)
    cache = _read_cache(dirs, f"{prefix}{key}", key, size)
    if cache is None:
        splits = {"train": train_items, "val": val_items}
        folder = _write_cache(writable, prefix, key, size, classes, splits)
        cache = (_open_cache(folder, key, size) if folder is not None
                 else _decode_in_memory(writable, key, size, classes, splits))
    return ImageDataset("imagefolder", cache["train_x"], cache["train_y"], cache["val_x"], cache["val_y"],
                        len(cache["classes"]), cache["classes"], cache["mean"], cache["std"], "crop_flip")
