"""The splits of a data set: stratified, seed-fixed subsets and the selection split carved from training.

Subsets keep each class's share of the images (largest remainder); the selection split is the part of the
training data the search scores trials on, and each split's indices are recorded as a short hash.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch

from ..errors import DataError
from .mapped import take_rows

if TYPE_CHECKING:  # the type only: dataset.py imports this module
    from .dataset import ImageDataset


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

