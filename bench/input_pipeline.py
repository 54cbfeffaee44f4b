"""Input pipeline: pursuhint's on-device batched augmentation against torchvision's per-sample DataLoader.

Both produce shuffled, randomly cropped (zero padding 4) and flipped, normalised float32 batches of
128 CIFAR-shaped images on the training device; what is measured is images per second over whole
epochs. The torchvision side is the field's usual code: a ``Dataset`` whose ``__getitem__`` applies
``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``/``ToDtype`` and ``Normalize``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T
from torchvision.transforms import v2

from pursuhint.data import DeviceLoader

from .common import (CIFAR100_MEAN, CIFAR100_STD, cifar10_subset, cifar_like, command, interleaved, machine, now,
                     pick_device, ratio, table, threads)

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


# ---------------------------------------------------------------------------------------------
# The memory-mapped ImageFolder cache against the in-RAM path, on the CIFAR-10 subset (25,000 JPEGs)
#
#     python -m bench.input_pipeline --memory-map [--quick] [--root FOLDER] [--work FOLDER]
#
# Not part of ``run()``: it needs the real photographs and decodes them once (a minute or so).
# Every figure comes from a fresh subprocess, so each peak RSS is that path's alone.


def memory_map_figures(root: Path, work: Path, quick: bool = True) -> dict[str, Any]:
    """Decode-and-cache time of the ImageFolder at ``root`` into the memory-mapped cache (first load, into an
    empty runs folder ``work``) against reading it back (second load), the cache's size on disk, and one
    resnet8 student epoch (CPU, one thread) from the memory-mapped splits and from in-RAM ones: images/s and
    peak RSS (``ru_maxrss``) of each, each path in its own fresh process. ``quick`` trains on a stratified
    5,000-image subset of the training split instead of all of it."""
    work.mkdir(parents=True, exist_ok=True)
    if any(work.iterdir()):
        raise SystemExit(f"{work} is not empty; the decode must start without a cache")
    cache = _child("cache", root, work, quick)
    folder = Path(cache["cache_folder"])
    files = sorted(folder.iterdir())
    cache["cache_bytes"] = sum(f.stat().st_size for f in files)
    cache["cache_bytes_on_disk"] = sum(f.stat().st_blocks * 512 for f in files)
    cache["cache_files"] = {f.name: f.stat().st_size for f in files}
    epochs = {path: _child(path, root, work, quick) for path in ("mapped", "in_ram")}
    return {
        "cache": cache, "epoch": epochs,
        "decode_over_readback": ratio(cache["first_load_s"], cache["second_load_s"]),
        "throughput_mapped_over_in_ram": ratio(epochs["mapped"]["images_per_s"], epochs["in_ram"]["images_per_s"]),
        "peak_rss_mapped_over_in_ram": ratio(epochs["mapped"]["ru_maxrss_mib"], epochs["in_ram"]["ru_maxrss_mib"]),
        "machine": machine(torch.device("cpu")), "date": now(), "quick": quick,
    }


def _child(task: str, root: Path, work: Path, quick: bool) -> dict[str, Any]:
    """Run one task in a fresh interpreter (this module's ``--child``), with one intra-op thread; its JSON."""
    env = dict(os.environ, PURSUHINT_RUNS=str(work), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "bench.input_pipeline", "--child", task, "--root", str(root)]
    out = subprocess.run(cmd + (["--quick"] if quick else []), env=env, check=True, capture_output=True, text=True,
                         cwd=str(work))
    return json.loads(out.stdout.strip().splitlines()[-1])


def _memory() -> dict[str, float]:
    """This process's peak RSS (``ru_maxrss``, MiB) and, now, its anonymous and file-backed resident MiB."""
    out = {"ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[f"{key}_mib"] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return out


def _child_main(task: str, root: Path, quick: bool) -> dict[str, Any]:
    """``cache``: the first and the second load of the data set; ``mapped`` / ``in_ram``: one student epoch."""
    from pursuhint.data import ImageRows, load_dataset

    torch.set_num_threads(1)
    if task == "cache":
        t0 = time.perf_counter()
        ds = load_dataset("imagefolder", root=str(root), image_size=32, seed=0)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        again = load_dataset("imagefolder", root=str(root), image_size=32, seed=0)
        second = time.perf_counter() - t0
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        return {"first_load_s": first, "second_load_s": second, "images": len(ds.train_x) + len(ds.val_x),
                "cache_folder": str(Path(again.train_x.path).parent), "decode_workers_ru_maxrss_mib": children,
                **_memory()}
    return _student_epoch(load_dataset, ImageRows, root, quick, mapped=task == "mapped")


def _student_epoch(load_dataset: Callable, image_rows: type, root: Path, quick: bool, mapped: bool) -> dict[str, Any]:
    """One resnet8 epoch (cross-entropy, batch 64, crop_flip) over the training split, then the selection
    split's accuracy: the training images/s and the process's memory."""
    import torch.nn.functional as F

    from pursuhint.config import TrainRecipe
    from pursuhint.data import train_val_loaders
    from pursuhint.train.loop import fit, seed_everything
    from pursuhint.models import create_model

    t0 = time.perf_counter()
    ds = load_dataset("imagefolder", root=str(root), image_size=32, seed=0, val_fraction=0.1,
                      train_samples=5000 if quick else None, memory_map=mapped)
    load_s = time.perf_counter() - t0
    assert isinstance(ds.train_x, image_rows) == mapped
    loaded = _memory()
    seed_everything(0)
    model = create_model("resnet8", ds.num_classes)
    train, val = train_val_loaders(ds, 64, augment="auto", device="cpu", seed=0)

    def ce(images: torch.Tensor, labels: torch.Tensor, _idx: torch.Tensor):
        logits = model(images)
        return logits, {"ce": F.cross_entropy(logits, labels)}

    result = fit({"model": model}, ce, TrainRecipe(epochs=1, batch_size=64, lr=0.05), train_loader=train,
                 val_loader=val, eval_model=model, device=torch.device("cpu"), seed=0)
    epoch = result.history[-1]
    return {"path": "memory-mapped" if mapped else "in RAM", "placement": train.placement,
            "train_images": len(ds.train_x), "load_s": load_s, "epoch_s": epoch.epoch_time,
            "images_per_s": epoch.images_per_s, "val_acc": epoch.val_acc, "after_load": loaded, **_memory()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="memory-mapped ImageFolder cache vs in-RAM data (CIFAR-10 subset)")
    parser.add_argument("--memory-map", action="store_true", help="run the measurement, print its JSON")
    parser.add_argument("--quick", action="store_true", help="train the epochs on 5,000 images, not all")
    parser.add_argument("--root", type=Path, default=None, help="the ImageFolder (default: the CIFAR-10 subset)")
    parser.add_argument("--work", type=Path, default=None, help="an empty runs folder for the cache")
    parser.add_argument("--child", choices=("cache", "mapped", "in_ram"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    root = args.root or cifar10_subset()
    if root is None:
        print("the CIFAR-10 subset was not found; set PURSUHINT_CIFAR10_SUBSET or pass --root", file=sys.stderr)
        return 2
    if args.child:
        print(json.dumps(_child_main(args.child, root, args.quick)))
        return 0
    if not args.memory_map:
        parser.error("nothing to do: pass --memory-map (the other figures come from bench/run.py)")
    work = args.work or Path(tempfile.mkdtemp(prefix="pursuhint-mmap-bench-"))
    print(json.dumps(memory_map_figures(root, work, quick=args.quick), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
