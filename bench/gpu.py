"""GPU: epoch time of resnet110 → resnet20 on CIFAR-100-shaped data, ResNet-110 selection time with 10 000
probe images, and sweep throughput with 1, 2, 4 and 8 concurrent fractional-GPU trials.

Without a CUDA device the entry says so (``skipped``) and measures nothing. Models are randomly
initialised and the images random: speed does not depend on the weights or the pixels.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from pursuhint.config import config_from_text
from pursuhint.data import ImageDataset
from pursuhint.distill.trainer import train_student
from pursuhint.hints import candidate_layers, layer_representations, select_hints, similarity_matrix
from pursuhint.hints.pipeline import teacher_default_hints
from pursuhint.models import create_model

from .common import CIFAR100_MEAN, CIFAR100_STD, cifar_like, command, machine, now, pick_device, seconds, seeded, table
from .sweep_overhead import digits_teacher, shutdown_ray, sweep_storage, tuner_fit_spans, workspace

NAME = "gpu"
TITLE = "GPU: epoch time, selection time and concurrent fractional-GPU trials"
AIM = "record the device's figures; the best concurrency is the one with the most trials per second"
CONCURRENCY = (1, 2, 4, 8)

EPOCH_YAML = """
name: bench_gpu_epoch
seed: 0
teacher: {arch: resnet110}
student: {arch: resnet20}
distill: {method: at}
train: {epochs: 2, batch_size: 64, lr: 0.05, lr_schedule: step}
"""

SWEEP_YAML = """
name: bench_gpu_{n}
seed: 0
data: {{dataset: digits, image_size: 16, probe_size: 1000}}
teacher: {{arch: resnet56, checkpoint: {checkpoint}}}
student: {{arch: resnet8}}
selection: {{similarity: r2_cca, n_hints: 3, on_collision: warn}}
distill: {{method: at, hint_weight: {{loguniform: [10, 1000]}}, kd_weight: 0.0}}
train: {{epochs: {epochs}, batch_size: 64, lr: 0.05, lr_schedule: cosine}}
search: {{num_samples: {samples}, scheduler: fifo, baselines: [], max_concurrent_trials: {n},
          resources_per_trial: {{cpu: {cpu}, gpu: {gpu}}}}}
"""


def _settings(quick: bool) -> dict[str, Any]:
    if quick:
        return {"images": 10_000, "probe": 10_000, "sweep_samples": 8, "sweep_epochs": 2}
    return {"images": 50_000, "probe": 10_000, "sweep_samples": 16, "sweep_epochs": 3}


def cifar_dataset(n: int, seed: int = 0) -> ImageDataset:
    """``n`` random CIFAR-100-shaped training images (and 1 000 validation images) as an ImageDataset."""
    x, y = cifar_like(n + 1000, seed=seed)
    return ImageDataset("cifar100-shaped", x[:n], y[:n], x[n:], y[n:], 100, [str(i) for i in range(100)],
                        CIFAR100_MEAN, CIFAR100_STD, "crop_flip")


def epoch_time(device: torch.device, n_images: int) -> dict[str, Any]:
    """resnet110 → resnet20 with AT through the default hints, batch 64: the second epoch's seconds
    (the first one includes cuDNN autotuning and allocator warm-up)."""
    cfg = config_from_text(EPOCH_YAML)
    ds = cifar_dataset(n_images)
    with seeded(0):
        teacher = create_model("resnet110", 100).to(device).eval()
    if device.type == "cuda":
        teacher = teacher.to(memory_format=torch.channels_last)
    hs = teacher_default_hints(teacher, "resnet110", None, ds)
    result = train_student(cfg, hs, teacher, ds, device=device)
    h = result.fit.history
    return {"images": n_images, "epoch_s": [e.epoch_time for e in h], "timed_epoch_s": h[-1].epoch_time,
            "images_per_s": h[-1].images_per_s, "hints": hs.indices}


def selection_time(device: torch.device, n_probe: int) -> dict[str, Any]:
    """ResNet-110 (CIFAR-100 head): one hooked pass over ``n_probe`` images, each L × L matrix, the k-means."""
    with seeded(0):
        model = create_model("resnet110", 100).to(device).eval()
    layers = candidate_layers(model, input_shape=(3, 32, 32))
    x, _ = cifar_like(n_probe, seed=3)
    mean = torch.tensor(CIFAR100_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR100_STD, device=device).view(1, 3, 1, 1)
    batches = [((xb.to(device).float() / 255 - mean) / std) for xb in x.split(256)]
    layer_representations(model, batches[:1], layers, device=device)  # warm-up
    reps: list[torch.Tensor] = []
    rep_s = seconds(lambda: reps.extend(layer_representations(model, batches, layers, device=device)), device)
    sim_s = {}
    for metric in ("r2_cca", "cka_linear", "cka_rbf"):
        similarity_matrix([r[:64] for r in reps[:2]], metric)  # warm-up of the kernels
        sim_s[metric] = seconds(lambda m=metric: similarity_matrix(reps, m), device)
    S = similarity_matrix(reps, "r2_cca")
    t0 = time.perf_counter()
    hs = select_hints(S, 3, on_collision="warn")
    cluster_s = time.perf_counter() - t0
    return {"probe_images": n_probe, "candidates": len(layers), "representations_s": rep_s, "similarity_s": sim_s,
            "clustering_s": cluster_s, "hints": hs.indices,
            "total_r2_cca_s": rep_s + sim_s["r2_cca"] + cluster_s}


def concurrent_trials(checkpoint: Path, folder: Path, n: int, samples: int, epochs: int, gpu: bool) -> dict[str, Any]:
    """A FIFO sweep of ``samples`` distinct trials with ``n`` at a time, each asking for 1/n GPU: trials per
    second over Tuner.fit (Ray's start-up and the shared work excluded)."""
    from pursuhint.search.sweep import run_sweep

    cpus = os.cpu_count() or 1
    cfg = config_from_text(SWEEP_YAML.format(n=n, checkpoint=checkpoint, epochs=epochs, samples=samples,
                                             cpu=max(1, min(2, cpus // n)), gpu=round(1 / n, 4) if gpu else 0))
    spans: list[float] = []
    with tuner_fit_spans(spans):
        result = run_sweep(cfg, verbose=0, progress=False, **sweep_storage(folder / cfg.name))
    trained = [r for r in result.leaderboard if not r.duplicate_of]
    span = spans[0]
    return {"concurrent": n, "gpu_per_trial": round(1 / n, 4) if gpu else 0, "trials": len(result.leaderboard),
            "trained": len(trained), "tuner_fit_s": span, "trials_per_s": len(result.leaderboard) / span,
            "epochs_per_s": sum(r.epochs for r in trained) / span}


def skipped_entry(quick: bool, tiny: bool) -> dict[str, Any]:
    """The entry written when no CUDA device is present: nothing measured, and why."""
    return {
        "title": TITLE, "aim": AIM, "ratio": None, "skipped": True,
        "ratio_definition": "trials per second at the best concurrency ÷ at 1 trial per GPU (not measured: no GPU)",
        "aim_met": None, "figures": {},
        "notes": ["Skipped: no CUDA device was present when this ran (torch.cuda.is_available() is False); "
                  "no GPU was lent for this run. Run `python bench/run.py --only gpu` on a machine with one."],
        "machine": machine(torch.device("cpu")), "date": now(), "quick": quick, "tiny": tiny,
        "command": command(NAME, quick, tiny),
    }


def run(quick: bool, tiny: bool = False) -> dict[str, Any]:
    """Measure on the CUDA device, or return the skipped entry when there is none."""
    if not torch.cuda.is_available():
        return skipped_entry(quick, tiny)
    s = _settings(quick or tiny)
    device = pick_device()
    epoch = epoch_time(device, s["images"])
    sel = selection_time(device, s["probe"])
    trials = []
    with workspace() as folder:
        teacher, _ = digits_teacher()
        import ray

        ray.init(address="local", include_dashboard=False, log_to_driver=False)
        try:
            for n in CONCURRENCY:
                trials.append(concurrent_trials(teacher.checkpoint, folder, n, s["sweep_samples"], s["sweep_epochs"],
                                                gpu=True))
        finally:
            shutdown_ray()
    base = trials[0]["trials_per_s"]
    best = max(trials, key=lambda t: t["trials_per_s"])
    headline = float(f"{best['trials_per_s'] / base:.4g}")
    return {
        "title": TITLE, "aim": AIM, "ratio": headline, "skipped": False,
        "ratio_definition": f"trials per second at the best concurrency ({best['concurrent']} trials, "
                            f"{best['gpu_per_trial']} GPU each) ÷ at 1 trial per GPU",
        "aim_met": None,
        "figures": {"settings": s, "epoch": epoch, "selection": sel, "trials": trials,
                    "best_concurrency": best["concurrent"]},
        "tables": [
            table(f"resnet110 → resnet20 (AT, default hints, batch 64, bf16 autocast, channels_last) on "
                  f"{s['images']:,} CIFAR-100-shaped images",
                  ["epoch s (second epoch)", "images/s", "first epoch s (warm-up)"],
                  [[epoch["timed_epoch_s"], epoch["images_per_s"], epoch["epoch_s"][0]]]),
            table(f"ResNet-110 hint selection, {sel['probe_images']:,} probe images, {sel['candidates']} candidates "
                  "(seconds)", ["representations (one pass)", "r2_cca", "cka_linear", "cka_rbf (≤ 4 000 rows)",
                                "k-means", "total with r2_cca"],
                  [[sel["representations_s"], sel["similarity_s"]["r2_cca"], sel["similarity_s"]["cka_linear"],
                    sel["similarity_s"]["cka_rbf"], sel["clustering_s"], sel["total_r2_cca_s"]]]),
            table(f"Concurrent fractional-GPU trials: a FIFO digits sweep of {s['sweep_samples']} trials × "
                  f"{s['sweep_epochs']} epochs (resnet56 → resnet8, 16 px)",
                  ["concurrent trials", "GPU per trial", "Tuner.fit s", "trials/s", "student epochs/s",
                   "÷ 1 trial"],
                  [[t["concurrent"], t["gpu_per_trial"], t["tuner_fit_s"], t["trials_per_s"], t["epochs_per_s"],
                    float(f"{t['trials_per_s'] / base:.4g}")] for t in trials]),
        ],
        "notes": [
            "Randomly initialised models on random uint8 images; the epoch is timed by the trainer (training "
            "plus validation on 1,000 images), the selection stages with CUDA synchronisation.",
            "Each concurrency runs its own sweep on one local Ray; every trial samples its own hint weight, so no "
            "trial is a duplicate of another.",
        ],
        "machine": machine(device), "date": now(), "quick": quick, "tiny": tiny,
        "command": command(NAME, quick, tiny),
    }
