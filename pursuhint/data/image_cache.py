"""The memory-mapped ImageFolder cache: where it lives, its key, its files, one build at a time, and when an old
one is removed.

The decoded images are cached once per image size and file list, in a folder
``imagefolder-<size>px-<key>/`` holding

- ``train_x.npy``, ``val_x.npy``: uint8 N×3×size×size in numpy's .npy format (a header, then the raw rows),
  memory-mapped when read: a split is never read whole;
- ``train_y.npy``, ``val_y.npy``: int64 labels (read into memory: 8 bytes an image);
- ``meta.json``: format version, key, the data folder it was built from, classes, split sizes, the training
  split's channel mean/std;
- ``.last_used``: touched whenever the cache is opened.

Where (:func:`cache_spec`): beside the data (``<root>/.pursuhint_cache/``) or in a folder named by the data's
content id (``$PURSUHINT_RUNS/cache/imagefolder/<data id>/``, or ``$PURSUHINT_IMAGE_CACHE/<data id>/``), so
copies of one data set at different paths, on one node or on several, find one cache. Caches written before,
in a folder named by the data folder's path (``<folder>/<root id>/``), are still read.

It is filled in a temporary folder beside it (by ``imagefolder.py``, which decodes the images) and renamed
into place, so a crash or Ctrl-C never leaves a half-written cache; an unreadable or inconsistent one is
rebuilt. One process builds it at a time (:func:`ensure_cache`: an exclusive ``flock`` on ``.<name>.lock``
beside it, then a second look), so the trials of one node, or of every node on a shared folder, decode once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch

from ..errors import DataError
from ..infra.fileio import atomic_write
from ..infra.paths import runs_dir
from .mapped import ImageRows

try:
    import fcntl
except ImportError:  # not POSIX: caches are built without the lock (the rename into place still keeps one)
    fcntl = None  # type: ignore[assignment]

_CACHE_VERSION = 2  # 2: the memory-mapped folder above; 1 was one .npz read whole (such caches are rebuilt)
IMAGE_CACHE_ENV = "PURSUHINT_IMAGE_CACHE"  # a folder for every ImageFolder's decoded cache (<folder>/<data id>/)
SAMPLED_FILES = 256  # files whose first bytes enter the cache key, evenly spaced over the sorted listing
SAMPLED_BYTES = 4096


def content_ids(base: Path, items: list[tuple[str, Path]], size: int) -> tuple[str, str]:
    """(data id, cache key) of the files ``items`` under ``base``: the data's content identity, and that with the
    image size. Both hash the sorted relative paths with their sizes and the first bytes of up to
    ``SAMPLED_FILES`` of them; not modification times, nor where the folder lies: copies of one data set on
    several nodes (or restored from a backup) share both, so they share a cache. The rows of a cache are the
    files in a fixed order of their relative paths, so one key means one row order."""
    listing = sorted((str(f.relative_to(base)), f.stat().st_size, f) for _, f in items)
    step = max(1, len(listing) // SAMPLED_FILES)
    sample = hashlib.sha256()
    for _, _, f in listing[::step][:SAMPLED_FILES]:
        with open(f, "rb") as fh:
            sample.update(fh.read(SAMPLED_BYTES))
    files = [[n, b] for n, b, _ in listing]
    data = json.dumps({"files": files, "sample": sample.hexdigest()})
    blob = json.dumps({"version": _CACHE_VERSION, "size": size, "files": files, "sample": sample.hexdigest()})
    return hashlib.sha256(data.encode()).hexdigest()[:16], hashlib.sha256(blob.encode()).hexdigest()[:24]


def cache_key(base: Path, items: list[tuple[str, Path]], size: int) -> str:
    """The cache key alone (see :func:`content_ids`)."""
    return content_ids(base, items, size)[1]


@dataclass(frozen=True)
class CacheSpec:
    """One cache: its folder's name (``<prefix><key>``), key and image size, the data it is made of (``data_id``;
    ``root``, the data folder resolved, recorded in its ``meta.json``), the folders it is looked for in
    (``read``, in order) and those it may be written to (``write``, the first writable one)."""

    prefix: str
    key: str
    size: int
    data_id: str
    root: str
    read: tuple[Path, ...]
    write: tuple[Path, ...]

    @property
    def name(self) -> str:
        return f"{self.prefix}{self.key}"


def cache_spec(base: Path, prefix: str, size: int, data_id: str, key: str) -> CacheSpec:
    """Where the cache of the data in ``base`` is looked for and written: beside the data and under the runs
    folder (``$PURSUHINT_RUNS/cache/imagefolder/<data id>``), both read, the data folder written only when it is
    not read-only. ``$PURSUHINT_IMAGE_CACHE`` replaces both with ``<that folder>/<data id>`` (fast local or
    shared storage; not written when the folder is marked read-only). The former folders named by the data
    folder's path (``<folder>/<root id>``) are read last."""
    root = base.resolve()
    root_id = _root_id(root)
    chosen = image_cache_folder()
    if chosen is not None:
        write = [] if chosen.exists() and read_only(chosen) else [chosen / data_id]
        read = [chosen / data_id, chosen / root_id]
    else:
        beside, shared = base / ".pursuhint_cache", runs_dir() / "cache" / "imagefolder"
        write = ([] if read_only(base) else [beside]) + [shared / data_id]
        read = [beside, shared / data_id, shared / root_id]
    return CacheSpec(prefix, key, size, data_id, str(root), tuple(read), tuple(write))


def image_cache_folder() -> Optional[Path]:
    """``$PURSUHINT_IMAGE_CACHE`` as an absolute path, or None when it is not set."""
    chosen = os.environ.get(IMAGE_CACHE_ENV)
    return Path(chosen).expanduser().absolute() if chosen else None


def _root_id(root: Path) -> str:
    """The id of a resolved data folder's path (the name of the folders caches were kept in before data ids)."""
    return hashlib.sha256(str(root).encode()).hexdigest()[:16]


def read_only(path: Path) -> bool:
    """Whether a folder must not be written into: not writable for this process, or without any write
    permission bit (a share marked read-only, which root could otherwise write)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return True
    return not os.access(path, os.W_OK | os.X_OK) or not mode & 0o222


def check_cache_folder() -> None:
    """Refuse a ``$PURSUHINT_IMAGE_CACHE`` this process cannot write caches into (it is created if missing, and a
    temporary file is created and removed in it): the folder and the fix, in one sentence. Nothing to check
    when it is not set."""
    folder = image_cache_folder()
    if folder is None:
        return
    why = ""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if read_only(folder):
            why = "it has no write permission"
        else:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".pursuhint-probe-"):
                pass
    except OSError as e:
        why = e.strerror or str(e)
    if why:
        raise DataError(f"the image cache folder {str(folder)!r} ({IMAGE_CACHE_ENV}) is not writable ({why}); "
                        f"make it writable for the user the trials run as, or point {IMAGE_CACHE_ENV} at a "
                        "writable folder")


def read_cache(spec: CacheSpec) -> Optional[tuple[Path, dict[str, Any]]]:
    """The first readable cache ``spec`` names in its ``read`` folders, as (its folder, :func:`open_cache`'s
    dict); None when there is none."""
    for d in spec.read:
        folder = d / spec.name
        if folder.is_dir():
            try:
                return folder, open_cache(folder, spec.key, spec.size)
            except (OSError, ValueError, KeyError, TypeError, DataError):
                continue  # damaged: rebuilt, and replaced where the rebuild is written
    return None


def ensure_cache(spec: CacheSpec, fill: Callable[[Path], None]) -> Optional[tuple[Path, dict[str, Any]]]:
    """The cache ``spec`` names, opened (as :func:`read_cache`): found where it is, else built once. The builder
    holds an exclusive ``flock`` on ``.<name>.lock`` in the folder it writes to, looks again (another process
    may have built it meanwhile), and only then decodes (``fill(tmp)``, see :func:`write_cache`); the others
    wait on the lock and open what it built. None when no folder is writable."""
    found = read_cache(spec)
    if found is not None:
        return found
    with _build_lock(spec):
        found = read_cache(spec)
        if found is not None:
            return found
        folder = write_cache(spec, fill)
    return None if folder is None else (folder, open_cache(folder, spec.key, spec.size))


@contextmanager
def _build_lock(spec: CacheSpec) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``.<name>.lock`` in the first of ``spec.write`` where it can be created
    (none: no lock, as nothing can be written there either; a file system without locks: none either). The
    builder removes the file before it lets go: once the cache is in place, a process still waiting on it finds
    the cache, and one arriving later finds it before looking for a lock (after a failed build, two may then
    decode at once; the rename into place keeps one copy)."""
    fd, lock = None, None
    for d in spec.write:
        try:
            d.mkdir(parents=True, exist_ok=True)
            lock = d / f".{spec.name}.lock"
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            continue
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:  # no locks on this file system: built unlocked (the rename still keeps one copy)
                pass
        break
    try:
        yield
    finally:
        if fd is not None and lock is not None:
            lock.unlink(missing_ok=True)
            os.close(fd)  # releases the lock


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
               mean: tuple[float, ...], std: tuple[float, ...], root: str = "") -> None:
    """Write a filled cache folder's ``meta.json`` (atomically: the last file written, once the splits are on
    disk); ``root`` is the data folder it was built from (an old cache of that folder's is removed once unused)."""
    meta = {"version": _CACHE_VERSION, "key": key, "image_size": size, "root": root, "classes": classes, **counts,
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


def write_cache(spec: CacheSpec, fill: Callable[[Path], None]) -> Optional[Path]:
    """Fill a temporary folder in the first writable folder of ``spec.write`` (``fill(tmp)`` decodes the splits
    into it) and rename it to ``spec.name``; drop that folder's stale caches (other keys, old ``.npz`` files),
    and in a folder of data ids the caches of this size built from the same data folder (its data before they
    changed), that no process has opened for ``STALE_AFTER_S`` (a running sweep opens its cache by path in
    every trial). None if none is writable."""
    for d in spec.write:
        try:
            d.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=d, prefix=f".{spec.name}.", suffix=".tmp"))
        except OSError:
            continue  # not writable (a read-only share, a file in the way): the next folder
        try:
            fill(tmp)
            final = _publish(tmp, d / spec.name, spec.key, spec.size)
        except OSError:  # e.g. the disk filled up: the next folder
            shutil.rmtree(tmp, ignore_errors=True)
            continue
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = list(d.glob(f"{spec.prefix}*"))  # other keys (the data changed, or an older version's key) ...
        if d.name == spec.data_id:  # ... and, beside this data id's folder, the same data folder's former ones
            old += [c for c in d.parent.glob(f"*/{spec.prefix}*") if c.parent != d and _built_from(c, spec.root)]
        for stale in old:
            if stale != final and _unused_for(stale) > STALE_AFTER_S:  # ... unless a sweep may still open them
                _remove(stale)
                (stale.parent / f".{stale.name}.lock").unlink(missing_ok=True)
                if stale.parent != d:
                    _remove_if_empty(stale.parent)
        return final
    return None


def _built_from(cache: Path, root: str) -> bool:
    """Whether the cache (or old ``.npz``) ``cache`` was built from the data folder ``root`` (resolved): its
    ``meta.json`` says so, or it lies in the folder named by that path's id (where caches were kept before)."""
    if cache.parent.name == _root_id(Path(root)):
        return True
    try:
        return json.loads((cache / "meta.json").read_text(encoding="utf-8")).get("root") == root
    except (OSError, ValueError, AttributeError):
        return False


def _remove_if_empty(folder: Path) -> None:
    """Remove a data id's folder once its last cache is gone (its lock files aside)."""
    try:
        if any(not p.name.endswith(".lock") for p in folder.iterdir()):
            return
    except OSError:
        return
    shutil.rmtree(folder, ignore_errors=True)


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
