"""Input pipeline: pursuhint's on-device batched augmentation against torchvision's per-sample DataLoader.

Both produce shuffled, randomly cropped (zero padding 4) and flipped, normalised float32 batches of
128 CIFAR-shaped images on the training device; what is measured is images per second over whole
epochs. The torchvision side is the field's usual code: a ``Dataset`` whose ``__getitem__`` applies
``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``/``ToDtype`` and ``Normalize``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from torchvision.transforms import v2

from pursuhint.data import DeviceLoader

from .common import (CIFAR100_MEAN, CIFAR100_STD, cifar_like, command, interleaved, machine, now, pick_device,
                     ratio, table, threads)

NAME = "input_pipeline"
TITLE = "Input pipeline: on-device batched augmentation vs torchvision's DataLoader"
AIM = "≥ 5× the images per second of the better DataLoader configuration on this CPU"
BATCH = 128


class PILDataset(Dataset):
    """CIFAR as torchvision stores it (N × 32 × 32 × 3 uint8 numpy): PIL image → per-sample transforms."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x = x.permute(0, 2, 3, 1).contiguous().numpy()
        self.y = y.tolist()
        self.transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                                    T.Normalize(CIFAR100_MEAN, CIFAR100_STD)])

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.x[i])), self.y[i]


class TensorDataset(Dataset):
    """The same data as uint8 C × H × W tensors with torchvision's v2 tensor transforms (no PIL)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y
        self.transform = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(),
                                     v2.ToDtype(torch.float32, scale=True), v2.Normalize(CIFAR100_MEAN, CIFAR100_STD)])

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.transform(self.x[i]), self.y[i]


def _epoch(loader: Any, device: torch.device) -> Callable[[], int]:
    """One epoch over ``loader`` with the batches on ``device`` (a host→device copy where needed)."""

    def go() -> int:
        n = 0
        for xb, yb in loader:
            xb = xb.to(device, non_blocking=True)
            yb = yb.to(device, non_blocking=True)
            n += xb.shape[0]
        return n

    return go


def run(quick: bool, tiny: bool = False) -> dict[str, Any]:
    """Images per second of each pipeline over whole epochs; headline = ours ÷ the best DataLoader."""
    n = 1024 if tiny else (5000 if quick else 10000)
    repeats = 2 if tiny else (5 if quick else 7)
    device = pick_device()
    x, y = cifar_like(n, seed=1)
    ours = DeviceLoader(x, y, BATCH, train=True, augment="crop_flip", mean=CIFAR100_MEAN, std=CIFAR100_STD,
                        device=device, seed=0)
    fns: dict[str, Callable[[], int]] = {"pursuhint DeviceLoader (crop_flip)": _epoch(ours, device)}
    loaders = []
    for label, ds in (("PIL + transforms", PILDataset(x, y)), ("tensor + transforms.v2", TensorDataset(x, y))):
        for workers in (0, 2):
            dl = DataLoader(ds, batch_size=BATCH, shuffle=True, drop_last=True, num_workers=workers,
                            persistent_workers=workers > 0, pin_memory=device.type == "cuda")
            loaders.append(dl)
            fns[f"DataLoader, {label}, num_workers={workers}"] = _epoch(dl, device)
    images = (n // BATCH) * BATCH  # every pipeline drops the last partial batch
    timed = interleaved(fns, repeats, warmup=1, device=device)  # warm-up epoch also starts the workers
    del loaders
    one = {k: fn for k, fn in fns.items() if not k.endswith("=2")}  # workers run 1 thread each anyway
    with threads(1):  # a side measurement: the same pipelines with one torch thread in the main process
        timed_one = interleaved(one, repeats, warmup=1, device=device)
    rates_one = {k: images / v["median_s"] for k, v in timed_one.items()}
    rates = {k: images / v["median_s"] for k, v in timed.items()}
    ours_key = next(iter(fns))
    baselines = {k: r for k, r in rates.items() if k != ours_key}
    best = max(baselines, key=baselines.get)
    headline = ratio(rates[ours_key], baselines[best])
    rows = [[k, rates[k], timed[k]["median_s"], ratio(rates[ours_key], rates[k]) if k != ours_key else 1.0]
            for k in fns]
    rows_one = [[k, rates_one[k], timed_one[k]["median_s"],
                 ratio(rates_one[ours_key], rates_one[k]) if k != ours_key else 1.0] for k in one]
    best_one = max((k for k in one if k != ours_key), key=rates_one.get)
    return {
        "title": TITLE, "aim": AIM, "ratio": headline,
        "ratio_definition": "images/s of pursuhint's DeviceLoader ÷ images/s of the fastest torchvision "
                            f"DataLoader configuration ({best})",
        "aim_met": bool(headline >= 5),
        "figures": {"images_per_epoch": images, "batch": BATCH, "images_per_s": rates,
                    "epoch_s": {k: v["times_s"] for k, v in timed.items()}, "best_baseline": best,
                    "ratio_vs_workers0_best": ratio(rates[ours_key], max(r for k, r in baselines.items()
                                                                          if k.endswith("=0"))),
                    "ratio_vs_workers2_best": ratio(rates[ours_key], max(r for k, r in baselines.items()
                                                                          if k.endswith("=2"))),
                    "one_thread": {"images_per_s": rates_one,
                                   "epoch_s": {k: v["times_s"] for k, v in timed_one.items()},
                                   "ratio_vs_best": ratio(rates_one[ours_key], rates_one[best_one])}},
        "tables": [table(f"Images per second over one epoch of {images:,} CIFAR-shaped images, batch {BATCH} "
                         f"(median of {repeats} interleaved epochs after a warm-up epoch)",
                         ["pipeline", "images/s", "epoch s", "pursuhint ÷ this"], rows),
                   table("Side measurement, not the headline: the same with torch.set_num_threads(1) in the main "
                         "process (no intra-op threads to contend for the shared cores)",
                         ["pipeline", "images/s", "epoch s", "pursuhint ÷ this"], rows_one)],
        "notes": [
            f"Same data for every pipeline: {n:,} random uint8 3 × 32 × 32 images; every pipeline shuffles, "
            "crops with 4 pixels of zero padding, flips with p = 0.5, normalises with CIFAR-100 statistics and "
            "drops the last partial batch.",
            "DataLoader workers are persistent, so worker start-up falls in the warm-up epoch, not in the "
            "timed ones; on a 2-core machine two workers compete with the main process for the same cores.",
            "Batches end on the training device (a pinned host→device copy for the DataLoader on CUDA).",
        ],
        "machine": machine(device), "date": now(), "quick": quick, "tiny": tiny,
        "command": command(NAME, quick, tiny),
    }
