"""A split of images kept in a memory-mapped file and read a batch at a time: :class:`ImageRows`.

A data set larger than RAM cannot be a tensor in memory. Its uint8 images live in one ``.npy`` file per
split (the ImageFolder cache); a split is that file, mapped, plus the int64 positions of its rows. Taking
a subset (``data.train_samples``, the selection split) composes positions and copies no pixels; reading
rows (a batch, a chunk for statistics, the probe images) gathers just those rows into a new tensor. The
file is mapped copy-on-write, so the pages read sit in the OS page cache, shared by every process that maps
the same file (the trials on one node), and the kernel can drop them again under memory pressure.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterator, Optional, Protocol, Sequence, Union

import numpy as np
import torch

from ..errors import DataError

_CHUNK_BYTES = 64 * 2**20  # rows gathered at a time when a whole split is copied or streamed


class RowsSource(Protocol):
    """Where a split's file lies on the node that reads it (the ImageFolder cache's own, built when missing)."""

    def locate(self) -> str:
        """The path of the split's ``.npy`` file on this node."""
        ...


class ImageRows:
    """Rows ``index`` (int64 positions; None = every row, in order) of a uint8 N×C×H×W ``.npy`` file.

    Stands in for a split's image tensor in :class:`~pursuhint.data.ImageDataset`: it has the attributes the
    loader and the data set read (``shape``, ``dtype``, ``device``, ``dim()``, ``numel()``,
    ``element_size()``, ``index_select(0, idx)``, indexing, ``to(device)``), and every read returns a new
    in-memory tensor of just the rows asked for. :meth:`select` makes a sub-view without reading anything.
    Pickling carries the path and the positions, never the pixels (Ray ships a split to its trials this
    way). Where the file is not at that path (another node of a cluster), ``source`` says where this node's copy
    lies (:class:`RowsSource`; the ImageFolder cache builds it there when missing), and the path is re-pointed.
    """

    dtype = torch.uint8
    device = torch.device("cpu")

    def __init__(self, path: str | Path, index: Optional[torch.Tensor] = None,
                 source: Optional[RowsSource] = None) -> None:
        self.path = str(path)
        self.source = source
        self._base: Optional[torch.Tensor] = open_mapped(self.path)  # its header gives the row count and shape
        self._rows_in_file = int(self._base.shape[0])
        self._row_shape = tuple(int(s) for s in self._base.shape[1:])
        self.index = None if index is None else _positions(index, self._rows_in_file, self.path)

    # ---------------------------------------------------------------------------- the mapped file

    @property
    def base(self) -> torch.Tensor:
        """The whole file as a CPU tensor over a copy-on-write memory map (opened on first use; a file missing at
        ``path`` is looked for where ``source`` says, and must hold as many rows of the same shape)."""
        if self._base is None:
            if self.source is not None and not os.path.exists(self.path):
                self.path = str(self.source.locate())
            base = open_mapped(self.path)
            if int(base.shape[0]) != self._rows_in_file or tuple(base.shape[1:]) != self._row_shape:
                raise DataError(f"memory-mapped images {self.path!r} are {tuple(base.shape)}, not the "
                                f"{(self._rows_in_file, *self._row_shape)} this split was made from; load the data "
                                "set again")
            self._base = base
        return self._base

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "index": self.index, "rows_in_file": self._rows_in_file,
                "row_shape": self._row_shape, "source": self.source}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path, self.index = state["path"], state["index"]
        self._rows_in_file, self._row_shape = state["rows_in_file"], tuple(state["row_shape"])
        self.source = state.get("source")
        self._base = None  # mapped again on first read, in the process that reads

    # ------------------------------------------------------------------- tensor-like attributes

    def __len__(self) -> int:
        return self._rows_in_file if self.index is None else int(self.index.numel())

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), *self._row_shape))

    @property
    def ndim(self) -> int:
        return 1 + len(self._row_shape)

    def dim(self) -> int:
        return self.ndim

    def numel(self) -> int:
        return len(self) * math.prod(self._row_shape)

    def element_size(self) -> int:
        return 1

    @property
    def nbytes(self) -> int:
        return self.numel()

    def __repr__(self) -> str:
        rows = "all rows" if self.index is None else f"{len(self)} of {self._rows_in_file} rows"
        return f"ImageRows({self.path!r}, {rows}, shape={tuple(self.shape)})"

    # -------------------------------------------------------------------------------- reading

    def positions(self) -> torch.Tensor:
        """The file rows this view holds, in its order (int64)."""
        return torch.arange(self._rows_in_file) if self.index is None else self.index

    def select(self, idx: Union[torch.Tensor, Sequence[int], np.ndarray]) -> "ImageRows":
        """The sub-view of rows ``idx`` (positions in this view, or a boolean mask): no pixel is read."""
        idx = _positions(idx, len(self), self.path)
        view = ImageRows.__new__(ImageRows)
        view.path, view._base, view.source = self.path, self._base, self.source
        view._rows_in_file, view._row_shape = self._rows_in_file, self._row_shape
        view.index = idx if self.index is None else self.index.index_select(0, idx)
        return view

    def index_select(self, dim: int, idx: torch.Tensor) -> torch.Tensor:
        """Rows ``idx`` of this view gathered into a new uint8 tensor (only ``dim=0``, as the loader asks)."""
        if dim != 0:
            raise DataError(f"ImageRows gathers rows (dim 0) only, not dim {dim}")
        idx = idx.to(device="cpu", dtype=torch.int64)
        rows = idx if self.index is None else self.index.index_select(0, idx)
        return self.base.index_select(0, rows)

    def __getitem__(self, key: Any) -> torch.Tensor:
        """``view[i]``, ``view[a:b]``, ``view[indices]`` or ``view[mask]``, with optional further axes: a copy."""
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            n = len(self)
            if not -n <= key < n:
                raise IndexError(f"row {key} is out of range for {n} rows")
            row = self.index_select(0, torch.tensor([int(key) % n]))[0]
            return row[rest] if rest else row
        if isinstance(key, slice):
            out = self.index_select(0, torch.arange(len(self))[key])
        else:
            out = self.index_select(0, _positions(key, len(self), self.path))
        return out[(slice(None), *rest)] if rest else out

    def chunks(self, rows: Optional[int] = None) -> Iterator[torch.Tensor]:
        """The view's rows in order, a few at a time (about 64 MiB each unless ``rows`` is given)."""
        step = rows or max(1, _CHUNK_BYTES // max(1, math.prod(self._row_shape)))
        for lo in range(0, len(self), step):
            yield self.index_select(0, torch.arange(lo, min(lo + step, len(self))))

    def to(self, device: str | torch.device, non_blocking: bool = False) -> torch.Tensor:
        """Every row copied onto ``device`` in chunks (host memory holds one chunk at a time beyond the result)."""
        device = torch.device(device)
        out = torch.empty(tuple(self.shape), dtype=torch.uint8, device=device)
        lo = 0
        for part in self.chunks():
            out[lo : lo + part.shape[0]].copy_(part, non_blocking=non_blocking and device.type == "cuda")
            lo += part.shape[0]
        return out

    def materialise(self) -> torch.Tensor:
        """The whole view as an in-memory uint8 tensor (the in-RAM path, ``data.memory_map: false``)."""
        return self.base.index_select(0, self.index) if self.index is not None else self.base.clone()


Images = Union[torch.Tensor, ImageRows]


def open_mapped(path: str | Path) -> torch.Tensor:
    """A uint8 N×C×H×W ``.npy`` file as a CPU tensor over a copy-on-write memory map: nothing is read until a
    row is, and writes (none are made) would stay private to this process."""
    try:
        arr = np.load(path, mmap_mode="c", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"memory-mapped images {str(path)!r} cannot be opened ({type(e).__name__}: {e}); the "
                        "ImageFolder cache is rebuilt on the next load, or set data.memory_map: false") from None
    if arr.dtype != np.uint8 or arr.ndim != 4:
        raise DataError(f"memory-mapped images {str(path)!r} are {arr.dtype} {arr.shape}; expected uint8 N×C×H×W")
    return torch.from_numpy(arr)


def take_rows(x: Images, idx: torch.Tensor) -> Images:
    """Rows ``idx`` of a split: a sub-view of a memory-mapped split (nothing read), a copy of an in-RAM one."""
    return x.select(idx) if isinstance(x, ImageRows) else x[idx]


def in_ram(x: Images) -> torch.Tensor:
    """A split as an in-memory tensor: a memory-mapped one is read whole, an in-RAM one returned as it is."""
    return x.materialise() if isinstance(x, ImageRows) else x


def row_chunks(x: Images, rows: Optional[int] = None) -> Iterator[torch.Tensor]:
    """A split's rows in order, a chunk at a time (views of an in-RAM tensor, reads of a mapped one)."""
    if isinstance(x, ImageRows):
        yield from x.chunks(rows)
        return
    step = rows or max(1, _CHUNK_BYTES // max(1, math.prod(x.shape[1:])))
    for lo in range(0, x.shape[0], step):
        yield x[lo : lo + step]


def _positions(idx: Any, n: int, path: str) -> torch.Tensor:
    """``idx`` (indices or a boolean mask over ``n`` rows) as a 1-D int64 CPU tensor of positions in range."""
    t = idx if isinstance(idx, torch.Tensor) else torch.as_tensor(np.asarray(idx))
    t = t.cpu()
    if t.dtype == torch.bool:
        if t.shape != (n,):
            raise IndexError(f"a mask over {tuple(t.shape)} cannot select from {n} rows of {path!r}")
        return torch.nonzero(t).flatten()
    t = t.to(torch.int64).reshape(-1)
    if t.numel() and (int(t.min()) < -n or int(t.max()) >= n):
        raise IndexError(f"row positions {int(t.min())}..{int(t.max())} are out of range for {n} rows of {path!r}")
    return torch.where(t < 0, t + n, t)
