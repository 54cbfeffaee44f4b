"""The memory-mapped ImageFolder cache: where it lives, its key, its files, and when an old one is removed.

The decoded images are cached once per image size and file list, in a folder
``imagefolder-<size>px-<key>/`` holding

- ``train_x.npy``, ``val_x.npy``: uint8 N×3×size×size in numpy's .npy format (a header, then the raw rows),
  memory-mapped when read: a split is never read whole;
- ``train_y.npy``, ``val_y.npy``: int64 labels (read into memory: 8 bytes an image);
- ``meta.json``: format version, key, classes, split sizes, the training split's channel mean/std;
- ``.last_used``: touched whenever the cache is opened.

It is filled in a temporary folder beside it (by ``imagefolder.py``, which decodes the images) and renamed
into place, so a crash or Ctrl-C never leaves a half-written cache; an unreadable or inconsistent one is
rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import DataError
from ..infra.fileio import atomic_write
from ..infra.paths import runs_dir
from .mapped import ImageRows

_CACHE_VERSION = 2  # 2: the memory-mapped folder above; 1 was one .npz read whole (such caches are rebuilt)
IMAGE_CACHE_ENV = "PURSUHINT_IMAGE_CACHE"  # a folder for every ImageFolder's decoded cache (<folder>/<root id>/)


def cache_dirs(base: Path) -> tuple[list[Path], list[Path]]:
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


SAMPLED_FILES = 256  # files whose first bytes enter the cache key, evenly spaced over the sorted listing
SAMPLED_BYTES = 4096


def cache_key(base: Path, items: list[tuple[str, Path]], size: int) -> str:
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


def read_cache(dirs: list[Path], name: str, key: str, size: int) -> dict[str, Any] | None:
    """The first readable cache ``name`` in ``dirs`` (see :func:`open_cache`); None when there is none."""
    for d in dirs:
        folder = d / name
        if folder.is_dir():
            try:
                return open_cache(folder, key, size)
            except (OSError, ValueError, KeyError, TypeError, DataError):
                continue  # damaged: rebuilt, and replaced where the rebuild is written
    return None


def open_cache(folder: Path, key: str, size: int) -> dict[str, Any]:
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


def write_meta(folder: Path, key: str, size: int, classes: list[str], counts: dict[str, int],
               mean: tuple[float, ...], std: tuple[float, ...]) -> None:
    """Write a filled cache folder's ``meta.json`` (atomically: the last file written, once the splits are on disk)."""
    meta = {"version": _CACHE_VERSION, "key": key, "image_size": size, "classes": classes, **counts,
            "mean": list(mean), "std": list(std)}
    with atomic_write(folder / "meta.json") as f:
        json.dump(meta, f, indent=1)


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


def write_cache(dirs: list[Path], prefix: str, key: str, size: int, fill: Callable[[Path], None]) -> Path | None:
    """Fill a temporary folder in the first writable cache folder of ``dirs`` (``fill(tmp)`` decodes the splits
    into it) and rename it to ``<prefix><key>``; drop that folder's stale caches (other keys, old ``.npz`` files)
    that no process has opened for ``STALE_AFTER_S`` (a running sweep opens its cache by path in every trial).
    None if none is writable."""
    for d in dirs:
        try:
            d.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=d, prefix=f".{prefix}{key}.", suffix=".tmp"))
        except OSError:
            continue  # not writable (a read-only share, a file in the way): the next folder
        try:
            fill(tmp)
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
        open_cache(final, key, size)
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
