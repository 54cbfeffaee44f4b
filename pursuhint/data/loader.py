"""Batches from uint8 images, augmented on the device with a few tensor ops per batch.

A split sits on the device when it fits the device budget (about half the free device memory, or
``data.device_budget_gb``); otherwise its uint8 images stay in (pinned) host memory, or in a
memory-mapped file (:class:`~pursuhint.data.mapped.ImageRows`), and each batch is gathered on the host
and copied over without blocking. On the CPU a memory-mapped split is always gathered from the map, a
batch at a time (copying it "to the device" would read it whole into RAM). Either way a batch is a
handful of tensor ops on the device: one row gather does the random crop (zero padding) and the
horizontal flip together, then one normalisation. Random numbers come from a CPU ``torch.Generator``
seeded by (seed, epoch), so CPU and CUDA, and every placement, give the same batches.
"""

from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch

from ..infra.devices import assigned_gpu_fraction, free_bytes, memory_format, total_bytes
from ..errors import DataError
from ..infra.registry import unknown_name_message
from .dataset import AUGMENTATIONS, ImageDataset
from .mapped import ImageRows, Images, take_rows

PLACEMENTS = ("auto", "device", "host")
BUDGET_SHARE = 0.5  # of the free device memory, when data.device_budget_gb is not given
# of a trial's share of the card (its GPU fraction × the card's memory): the rest of its share is for the
# models, activations and cuDNN's workspace
GPU_SHARE_SAFETY = 0.5


def device_budget(device: str | torch.device, budget_gb: Optional[float] = None) -> Optional[int]:
    """Bytes of images a loader may keep on ``device``: ``budget_gb`` when given; in a Ray trial holding a
    fraction f of a GPU, GPU_SHARE_SAFETY · f · the card's memory (four 0.25-GPU trials starting together
    must not each claim half of the empty card); else half the free memory of a CUDA device. None (no
    limit) for the CPU, where "on the device" is host memory anyway."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    if budget_gb is not None:
        return int(budget_gb * 2**30)
    fraction = assigned_gpu_fraction()
    if fraction is not None:
        return int(GPU_SHARE_SAFETY * fraction * (total_bytes(device) or 0))
    return int(BUDGET_SHARE * (free_bytes(device) or 0))


def choose_placement(nbytes: int, device: str | torch.device, budget_gb: Optional[float] = None,
                     mapped: bool = False) -> str:
    """``device`` when ``nbytes`` of images fit the device budget (:func:`device_budget`), else ``host``.

    ``mapped`` images (a memory-mapped split) stay ``host`` on a CPU device: there "the device" is host
    memory, and copying the split there would read the whole file into RAM.
    """
    if mapped and torch.device(device).type != "cuda":
        return "host"
    budget = device_budget(device, budget_gb)
    return "device" if budget is None or nbytes <= budget else "host"


def _checked(x: Any, y: Any, batch_size: Any, augment: str, mean: Sequence[float], std: Sequence[float],
             padding: Any) -> int:
    """Validate a loader's arguments (a DataError naming the bad one); the padding, defaulting to an eighth of
    the image side."""
    if not isinstance(x, (torch.Tensor, ImageRows)) or x.dtype != torch.uint8 or x.dim() != 4:
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(f"images are {got}; expected a uint8 N×C×H×W tensor")
    if not isinstance(y, torch.Tensor) or y.shape != (x.shape[0],):
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise DataError(f"labels have shape {got}; expected ({x.shape[0]},), one per image")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size {batch_size!r} is invalid; expected a positive integer")
    if augment not in AUGMENTATIONS:
        raise DataError(unknown_name_message("augmentation", augment, list(AUGMENTATIONS)))
    channels, height, width = x.shape[1:]
    if len(mean) != channels or len(std) != channels:
        raise DataError(f"mean {tuple(mean)} and std {tuple(std)} need {channels} values each, one per channel")
    if any(not s > 0 for s in std):
        raise DataError(f"std {tuple(std)} has a value <= 0; every channel's std must be positive")
    if padding is None:
        padding = round(min(height, width) / 8)
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise DataError(f"padding {padding!r} is invalid; expected a non-negative integer or None")
    return padding


class DeviceLoader:
    """Iterate ``(images, labels)`` batches of float32 normalised images and int64 labels on ``device``.

    Train mode shuffles and augments (``"crop"``: random crop with ``padding`` zero pixels on each
    side, default ``round(size / 8)``; ``"crop_flip"``: plus horizontal flip with p = 0.5;
    ``"none"``); eval mode (``train=False``) keeps the order and never augments. Each pass over the
    loader uses the epoch set by :meth:`set_epoch` and then advances it by one.
    ``drop_last`` defaults to ``train`` (but never drops the only, partial batch).
    ``with_index=True`` yields ``(images, labels, indices)``: the samples' positions in ``x``, which
    CRD's memory bank needs. ``x`` is an in-memory uint8 tensor or a memory-mapped
    :class:`~pursuhint.data.mapped.ImageRows` split. ``placement`` says where the uint8 images live:
    ``device`` (copied there once, in chunks for a mapped split), ``host`` (left in host memory or in
    the mapped file; each batch is gathered there, pinned for a CUDA device, and copied without
    blocking), or ``auto`` (:func:`choose_placement` with ``budget_gb``).
    """

    def __init__(
        self,
        x: Images,
        y: torch.Tensor,
        batch_size: int,
        *,
        train: bool,
        augment: str,
        mean: Sequence[float],
        std: Sequence[float],
        device: str | torch.device = "cpu",
        seed: int = 0,
        drop_last: bool | None = None,
        padding: int | None = None,
        with_index: bool = False,
        placement: str = "auto",
        budget_gb: Optional[float] = None,
    ) -> None:
        padding = _checked(x, y, batch_size, augment, mean, std, padding)
        if placement not in PLACEMENTS:
            raise DataError(unknown_name_message("placement", placement, list(PLACEMENTS)))
        channels, height = x.shape[1], x.shape[2]
        self.device = torch.device(device)
        if placement == "auto":
            placement = choose_placement(x.numel() * x.element_size(), self.device, budget_gb,
                                         mapped=isinstance(x, ImageRows))
        self.placement = placement
        # host: the images stay where they are (RAM or a memory-mapped file); batches are pinned one by one
        self.x = x.to(self.device) if placement == "device" else x
        self.y = y.to(device=self.device, dtype=torch.int64)
        self.batch_size = batch_size
        self.train = bool(train)
        self.augment = augment if self.train else "none"
        self.padding = padding
        self.with_index = bool(with_index)
        self.seed = int(seed)
        self.epoch = 0
        n = x.shape[0]
        self.drop_last = (self.train and n >= batch_size) if drop_last is None else bool(drop_last)
        mean_t = torch.tensor(mean, dtype=torch.float32)
        std_t = torch.tensor(std, dtype=torch.float32)
        # (v / 255 - mean) / std  ==  v * scale + shift
        self._scale = (1.0 / (255.0 * std_t)).view(1, -1, 1, 1).to(self.device)
        self._shift = (-mean_t / std_t).view(1, -1, 1, 1).to(self.device)
        self._format = memory_format(self.device)
        self._rows = torch.arange(height, device=self.device)
        self._chans = torch.arange(channels, device=self.device)
        self._batch_ar = torch.arange(batch_size, device=self.device)

    def __len__(self) -> int:
        n = self.x.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the next pass: the same (seed, epoch) gives the same batches."""
        self.epoch = int(epoch)

    def _generator(self) -> torch.Generator:
        mixed = np.random.SeedSequence([self.seed & (2**63 - 1), self.epoch & (2**63 - 1)])
        return torch.Generator().manual_seed(int(mixed.generate_state(1, dtype=np.uint64)[0] >> 1))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n, b = self.x.shape[0], self.batch_size
        order = params = None
        if self.train:
            g = self._generator()
            order = torch.randperm(n, generator=g)
            if self.augment != "none":
                span = 2 * self.padding + 1
                params = torch.randint(0, span, (n, 3), generator=g)
                params[:, 2] = torch.randint(0, 2, (n,), generator=g) if self.augment == "crop_flip" else 0
                params = params.to(self.device, non_blocking=True)
        self.epoch += 1
        if order is not None and self.placement == "device":
            order = order.to(self.device, non_blocking=True)
        for i in range(len(self)):
            lo, hi = i * b, min((i + 1) * b, n)
            if order is None:
                idx = torch.arange(lo, hi, device=self.device)
                xb, yb = self._rows_of(lo, hi), self.y[lo:hi]
            else:
                idx = order[lo:hi]
                if self.placement == "host":  # the order stayed on the host: gather there, then copy
                    xb = self._gather(idx)
                    idx = idx.to(self.device, non_blocking=True)
                else:
                    xb = self.x.index_select(0, idx)
                yb = self.y.index_select(0, idx)
                if params is not None:
                    xb = self._augment(xb, params[lo:hi])
            if self.with_index:
                yield self._normalise(xb), yb, idx
            else:
                yield self._normalise(xb), yb

    def _rows_of(self, lo: int, hi: int) -> torch.Tensor:
        """Images ``lo:hi`` in order, on the device (read from the map for a mapped split on the host)."""
        xb = self.x[lo:hi]
        return xb if self.placement == "device" else _to_device(xb, self.device)

    def _gather(self, idx: torch.Tensor) -> torch.Tensor:
        """Host path: gather a batch's rows on the host (pinned when the target is CUDA), copy them over."""
        return _to_device(self.x.index_select(0, idx), self.device)

    def _augment(self, batch: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Crop (zero padding) and flip a uint8 batch (on the device) with one row gather from a padded copy of it.

        The batch is padded once into a buffer that also holds its mirror image; every output row
        (sample, channel, r) is W contiguous bytes of that buffer, so one ``index_select`` over an
        overlapping strided view of it does crop and flip for the whole batch. Output pixel (r, c)
        of sample k is padded[r + dy, dx + c], or padded[r + dy, dx + W-1-c] when flipped.
        """
        p = self.padding
        b, c, h, w = batch.shape
        hp, wp = h + 2 * p, w + 2 * p
        copies = 2 if self.augment == "crop_flip" else 1
        buf = torch.zeros((copies, b, c, hp, wp), dtype=torch.uint8, device=self.device)
        buf[0, :, :, p : p + h, p : p + w] = batch
        if copies == 2:
            buf[1] = buf[0].flip(-1)
        dy, dx, flip = params[:, 0], params[:, 1], params[:, 2]
        # the mirror at column offset 2p - dx is the mirror of the crop at dx
        col = dx + flip * (2 * p - 2 * dx)
        sample = self._batch_ar[:b] + flip * b
        rows = ((sample[:, None, None] * c + self._chans[None, :, None]) * hp + self._rows + dy[:, None, None]) * wp
        flat = buf.view(-1)
        windows = flat.as_strided((flat.numel() - w + 1, w), (1, 1))  # row k = flat[k : k + w]
        return windows.index_select(0, (rows + col[:, None, None]).view(-1)).view(b, c, h, w)

    def _normalise(self, xb: torch.Tensor) -> torch.Tensor:
        return xb.to(dtype=torch.float32, memory_format=self._format).mul_(self._scale).add_(self._shift)


def _to_device(xb: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a host batch to ``device``: through page-locked memory without blocking when it is CUDA (torch's
    caching host allocator reuses the pinned blocks and keeps each alive until its copy is done)."""
    if device.type != "cuda":
        return xb.to(device)
    return xb.pin_memory().to(device, non_blocking=True)


def probe_images(ds: ImageDataset, size: int) -> torch.Tensor:
    """``size`` training images at evenly spaced positions ``round(i·N/size)`` of the unshuffled split.

    Deterministic, like the paper's "every 5th batch of the unshuffled training set"; uint8, CPU, in memory
    (read from the map for a memory-mapped split: ``size`` rows, never the split).
    """
    return ds.train_x[_probe_indices(ds, size)]


def _probe_indices(ds: ImageDataset, size: int) -> torch.Tensor:
    n = ds.train_x.shape[0]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size > n:
        raise DataError(f"probe size {size!r} is invalid for {ds.name!r}; expected an integer from 1 to {n}")
    i = torch.arange(size, dtype=torch.int64)
    return (2 * i * n + size) // (2 * size)  # round(i·n/size), halves up


def probe_loader(
    ds: ImageDataset, size: int, batch_size: int = 256, device: str | torch.device = "cpu"
) -> DeviceLoader:
    """Batches of the probe set (:func:`probe_images`) with eval transforms, in order (a memory-mapped split
    stays mapped: the probe rows are read a batch at a time)."""
    idx = _probe_indices(ds, size)
    return DeviceLoader(
        take_rows(ds.train_x, idx), ds.train_y[idx], batch_size, train=False, augment="none",
        mean=ds.mean, std=ds.std, device=device,
    )


def resolve_augment(configured: str, ds: ImageDataset) -> str:
    """``auto`` means the data set's own augmentation (crop_flip for natural images, crop for digits)."""
    return ds.augment if configured == "auto" else configured


def train_val_loaders(ds: ImageDataset, batch_size: int, *, augment: str, device: str | torch.device = "cpu",
                      seed: int = 0, with_index: bool = False, budget_gb: Optional[float] = None,
                      placement: str = "auto") -> tuple[DeviceLoader, DeviceLoader]:
    """The training loader (shuffled by seed and epoch, augmented) and the validation loader (in order).

    Both splits go on the device together when they fit its budget (``data.device_budget_gb``, default
    half the free device memory), else both stay on the host and each batch is copied over. On the CPU,
    memory-mapped splits stay mapped (:func:`choose_placement`).
    """
    if placement == "auto":
        nbytes = sum(t.numel() * t.element_size() for t in (ds.train_x, ds.val_x))
        mapped = any(isinstance(t, ImageRows) for t in (ds.train_x, ds.val_x))
        placement = choose_placement(nbytes, device, budget_gb, mapped=mapped)
    train = DeviceLoader(ds.train_x, ds.train_y, batch_size, train=True, augment=resolve_augment(augment, ds),
                         mean=ds.mean, std=ds.std, device=device, seed=seed, with_index=with_index,
                         placement=placement)
    val = DeviceLoader(ds.val_x, ds.val_y, max(batch_size, 256), train=False, augment="none",
                       mean=ds.mean, std=ds.std, device=device, seed=seed, placement=placement)
    return train, val
