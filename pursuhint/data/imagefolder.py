"""The built-in ``imagefolder`` data set: ``root/train/<class>/*`` and ``root/val/<class>/*`` (or ``root/test/``).

The images are listed, then decoded once (RGB, shorter side resized, center-cropped), by parallel worker
processes that write their rows straight into the memory-mapped cache files (``image_cache.py`` keeps the
cache: where it lives, its key, its layout, one build at a time, when an old one goes); the loader returns
views of those files, which carry where to find (or build) the cache on another node (:class:`CachedSplit`).
Its survey (for the checks before a sweep) lists the files and decodes a sample only.
"""

from __future__ import annotations

import errno
import functools
import multiprocessing
import os
import sys
import tempfile
import warnings
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..errors import DataError
from .dataset import DATASETS, SURVEYS, ImageDataset, expand_root, portable_root
from .image_cache import IMAGE_CACHE_ENV, CacheSpec, cache_spec, content_ids, ensure_cache, open_cache, write_meta
from .pixels import histogram_stats

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_DECODE_CHUNK = 512  # files per decoding job
_DECODE_WORKERS = 8  # at most this many decoding processes (and never more than the usable cores)
SURVEY_SAMPLE = 16  # images the survey decodes, evenly spaced over the listing


@DATASETS.register("imagefolder")
def load_imagefolder(root: str | None, image_size: int | None, seed: int) -> ImageDataset:
    """Images in ``root/train/<class>/`` and ``root/val/<class>/`` (or ``root/test/``), as RGB at 32 px.

    ``root`` may name environment variables (``${DATA_ROOT}``), expanded on the machine that reads it. Decoded
    once, by parallel worker processes, into a memory-mapped cache (``.npy`` files, layout and places in
    ``image_cache.py``) under ``root/.pursuhint_cache/`` (or, when root is read-only, under the runs folder;
    or in ``$PURSUHINT_IMAGE_CACHE``), keyed by the data's content identity (relative paths, sizes, a sample's
    first bytes; see :func:`~pursuhint.data.image_cache.content_ids`) and the image size; concurrent loads
    decode once. The splits are :class:`~pursuhint.data.mapped.ImageRows` views of the mapped files: rows are
    read a batch at a time, so the data set may be larger than RAM. Unpickled where their files are not (a
    trial on another node), they find or build that node's cache (:class:`CachedSplit`).
    """
    base = _base(root)
    size = image_size or 32
    classes, train_items, val_items = _imagefolder_files(base)
    data_id, key = content_ids(base, train_items + val_items, size)
    spec = cache_spec(base, _prefix(size), size, data_id, key)
    splits = {"train": train_items, "val": val_items}
    found = ensure_cache(spec, partial(_decode_into, key=key, size=size, classes=classes, splits=splits,
                                       root=spec.root))
    if found is None:
        cache = _decode_in_memory(spec, classes, splits)
    else:
        cache = found[1]
        for split in splits:
            cache[f"{split}_x"].source = CachedSplit(portable_root(str(root)), size, data_id, key, f"{split}_x.npy")
    return ImageDataset("imagefolder", cache["train_x"], cache["train_y"], cache["val_x"], cache["val_y"],
                        len(cache["classes"]), cache["classes"], cache["mean"], cache["std"], "crop_flip")


@SURVEYS.register("imagefolder")
def survey_imagefolder(root: str | None, image_size: int | None, seed: int) -> ImageDataset:
    """The ImageFolder data set checked without decoding it: its files listed (classes, the splits' sizes and
    labels) and ``SURVEY_SAMPLE`` images, evenly spaced over the listing, decoded (an unreadable one is a
    DataError naming it). Its images are 1-pixel placeholders; the mean and std are placeholders too."""
    base = _base(root)
    classes, train_items, val_items = _imagefolder_files(base)
    listing = train_items + val_items
    for _, f in listing[:: max(1, len(listing) // SURVEY_SAMPLE)][:SURVEY_SAMPLE]:
        _decode(f, image_size or 32)
    index = {c: i for i, c in enumerate(classes)}

    def labels(items: list[tuple[str, Path]]) -> torch.Tensor:
        return torch.tensor([index[c] for c, _ in items], dtype=torch.int64)

    return ImageDataset("imagefolder", torch.zeros((len(train_items), 3, 1, 1), dtype=torch.uint8),
                        labels(train_items), torch.zeros((len(val_items), 3, 1, 1), dtype=torch.uint8),
                        labels(val_items), len(classes), classes, (0.5,) * 3, (0.25,) * 3, "crop_flip")


@dataclass(frozen=True)
class CachedSplit:
    """Where a split's cache file lies on the machine that reads it (the ``source`` of its
    :class:`~pursuhint.data.mapped.ImageRows`): the data folder as configured (expanded there), the image size,
    the data's content ids and the file's name. Small and pickled with the split, so a trial on a node without
    the driver's cache file opens its own node's cache, or builds it once from that node's copy of the data."""

    root: str
    size: int
    data_id: str
    key: str
    file: str

    def locate(self) -> str:
        """The split's file in this machine's cache (see :func:`node_cache`)."""
        return str(node_cache(self.root, self.size, self.data_id, self.key) / self.file)


@functools.lru_cache(maxsize=8)
def node_cache(root: str, size: int, data_id: str, key: str) -> Path:
    """This machine's cache folder of the data with these content ids at this size: found where its caches are
    kept (``image_cache.cache_spec``, with ``root`` expanded here), else built once from the data here (under
    the cache's lock, so the trials of one node decode once). The data here must be the same data (the key is
    checked before decoding); a DataError when they are not, or when no cache folder here is writable."""
    base = _base(root)
    spec = cache_spec(base, _prefix(size), size, data_id, key)
    found = ensure_cache(spec, partial(_list_and_decode, base=base, spec=spec))
    if found is None:
        raise DataError(f"no image cache folder is writable on this machine ({_places(spec)}); set "
                        f"{IMAGE_CACHE_ENV} to a folder the trials can write")
    return found[0]


def _list_and_decode(folder: Path, base: Path, spec: CacheSpec) -> None:
    """List the data in ``base``, check that they are the data ``spec`` was made from (its key), and decode them
    into ``folder``: the same files in the same order, so the rows sit where the shipped split expects them."""
    classes, train_items, val_items = _imagefolder_files(base)
    _, key = content_ids(base, train_items + val_items, spec.size)
    if key != spec.key:
        raise DataError(f"the image folder {str(base)!r} on this machine holds other data than the sweep was "
                        f"prepared with (cache key {key}, expected {spec.key}); give every node an identical copy")
    _decode_into(folder, key, spec.size, classes, {"train": train_items, "val": val_items}, spec.root)


def _base(root: str | None) -> Path:
    if root is None:
        raise DataError("data set 'imagefolder' needs root, a folder holding train/<class>/ and val/<class>/")
    return expand_root(root)


def _prefix(size: int) -> str:
    return f"imagefolder-{size}px-"


def _places(spec: CacheSpec) -> str:
    return ", ".join(str(d) for d in spec.write or spec.read[:1])


def _list_split(split_dir: Path) -> list[tuple[str, Path]]:
    """(class, file) pairs under split_dir/<class>/, sorted by class then file name."""
    items = []
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(class_dir.iterdir()):
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS:
                items.append((class_dir.name, f))
    return items


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


def _decode(path: Path, size: int) -> np.ndarray:
    """One image as size×size×3 uint8: RGB, shorter side resized to ``size``, center-cropped."""
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


def _decode_into(folder: Path, key: str, size: int, classes: list[str],
                 splits: dict[str, list[tuple[str, Path]]], root: str = "") -> None:
    """Decode every split into cache files in ``folder`` (the layout in ``image_cache.py``).

    Each ``<split>_x.npy`` is created at its full size (a sparse file; nothing is mapped into this process)
    and filled by jobs of ``_DECODE_CHUNK`` files, run in worker processes that write their rows straight
    into the file: no process ever holds a split. The jobs also count the training split's pixel values,
    so its channel statistics need no second pass.
    """
    index = {c: i for i, c in enumerate(classes)}
    jobs: list[tuple[str, int, int, list[str], int, bool]] = []
    counts: dict[str, int] = {}
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
    write_meta(folder, key, size, classes, counts, mean, std, root)


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
            with warnings.catch_warnings():  # Python >= 3.12 warns about forking a threaded process (see _pool_context)
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


def _decode_in_memory(spec: CacheSpec, classes: list[str], splits: dict[str, list[tuple[str, Path]]]) -> dict[str, Any]:
    """No cache folder is writable: decode into a temporary folder, read the splits into memory, delete it."""
    warnings.warn(f"could not write an image cache in any of [{_places(spec)}]; images are decoded into memory "
                  "and not cached")
    with tempfile.TemporaryDirectory(prefix="pursuhint-images-") as tmp:
        _decode_into(Path(tmp), spec.key, spec.size, classes, splits, spec.root)
        cache = open_cache(Path(tmp), spec.key, spec.size)
        for split in splits:
            cache[f"{split}_x"] = cache[f"{split}_x"].materialise()
    return cache
