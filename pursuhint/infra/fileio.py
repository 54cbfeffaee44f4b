"""Atomic writes: a crash or Ctrl-C never leaves a half-written checkpoint, cache, hint set or result file.

Every writer in the package goes through ``atomic_write``: a temporary file beside the target, flushed and
synced, then renamed into place (a rename is atomic on one file system); on any failure the temporary file
is removed and the target is untouched.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator

import torch


@contextmanager
def atomic_write(path: str | os.PathLike, binary: bool = False) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing (text as UTF-8, or ``binary``); on leaving the block
    it is synced and renamed onto ``path``. Raises OSError if the folder cannot be created or written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_torch_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` through ``atomic_write``."""
    with atomic_write(path, binary=True) as f:
        torch.save(obj, f)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` through ``atomic_write``."""
    with atomic_write(path) as f:
        f.write(text)
    return Path(path)


def existing_file(path: str | os.PathLike, what: str, error: type[Exception]) -> Path:
    """``path`` as a Path when it is a file; else ``error`` saying the ``what`` file does not exist."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} file {str(path)!r} does not exist")
    return path
