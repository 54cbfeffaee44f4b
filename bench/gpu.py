"""GPU: epoch time of the natural-image pair (resnet56 → resnet20 at 32 px) on the CIFAR-10 subset with the
data on the device and on the host, the step-sync saving, ResNet-110 selection time with 10 000 probe images,
and trials per second at 1, 2, 4 and 8 concurrent fractional-GPU trials (``--tiny``, `make gpu-check`'s
form: 5 000 photographs, 1 and 4).

Without a CUDA device the entry says so (``skipped``) and measures nothing. Timings do not depend on the
weights, so the models are randomly initialised; the images are the real CIFAR-10 subset when it is there
(else random CIFAR-shaped ones). Concurrent trials run as a Ray Tune sweep when Ray, MLflow and Optuna are
installed; otherwise as the same number of concurrent processes sharing the GPU, and the entry says which.
"""

from __future__ import annotations

import gc
import importlib.util
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch

from pursuhint.config import config_from_text
from pursuhint.data import ImageDataset, load_dataset
from pursuhint.infra.devices import precision_name
from pursuhint.train.student import train_student
from pursuhint.hints import candidate_layers, layer_representations, select_hints, similarity_matrix
from pursuhint.hints.pipeline import teacher_default_hints
from pursuhint.models import create_model
from pursuhint.search.sweep import run_sweep
from pursuhint.train.teacher import dataset_for

from .common import (CIFAR100_MEAN, CIFAR100_STD, Progress, cifar10_subset, cifar_dataset, cifar_like, command,
                     digits_teacher, machine, now, pick_device, seconds, seeded, shutdown_ray, sweep_storage, table,
                     tuner_fit_spans, workspace)
from .step_syncs import measure as step_sync_measure

NAME = "gpu"
TITLE = "GPU: epoch time, selection time and concurrent fractional-GPU trials"
AIM = "record the device's figures; the best concurrency is the one with the most trials per second"
CONCURRENCY = (1, 2, 4, 8)
PAIR = ("resnet56", "resnet20")

EPOCH_YAML = """
name: bench_gpu_epoch
seed: 0
teacher: {arch: resnet56}
student: {arch: resnet20}
distill: {method: at, hint_weight: 1000}
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
          resources_per_trial: {{cpu: {cpu}, gpu: {gpu}}}, confirm: {{top_k: 0}}}}
"""


def _settings(quick: bool, tiny: bool = False) -> dict[str, Any]:
    """The sizes. ``tiny`` is `make gpu-check`'s form, sized to its 8-minute budget: 5 000 of the photographs,
    4 one-epoch trials at 1 and 4 concurrent."""
    if tiny:
        return {"images": 5_000, "probe": 5_000, "sweep_samples": 4, "sweep_epochs": 1, "sync_images": 2_560,
                "concurrency": (1, 4), "subset": True}
    if quick:
        return {"images": 10_000, "probe": 10_000, "sweep_samples": 8, "sweep_epochs": 2, "sync_images": 5_120,
                "concurrency": CONCURRENCY, "subset": False}
    return {"images": 20_000, "probe": 10_000, "sweep_samples": 16, "sweep_epochs": 3, "sync_images": 10_240,
            "concurrency": CONCURRENCY, "subset": False}


def natural_dataset(n: int, subset: bool = False) -> tuple[ImageDataset, dict[str, Any]]:
    """The CIFAR-10 subset (decoded and cached once; the decode time is measured), all of its training photographs
    or, with ``subset``, a stratified ``n`` of them; or ``n`` random images."""
    root = cifar10_subset()
    if root is None:
        return cifar_dataset(n), {"data": "random CIFAR-shaped images (the CIFAR-10 subset was not found)"}
    t0 = time.perf_counter()
    ds = load_dataset("imagefolder", root=str(root), image_size=32, seed=0, train_samples=n if subset else None)
    load_s = time.perf_counter() - t0
    return ds, {"data": f"CIFAR-10 subset ({ds.train_x.shape[0]:,} train / {ds.val_x.shape[0]:,} test JPEGs)",
                "load_s": load_s}


def epoch_time(device: torch.device, ds: ImageDataset, budget_gb: float | None = None) -> dict[str, Any]:
    """resnet56 → resnet20 with AT (β = 1000, the benchmark's) through the default hints, batch 64: the second
    epoch's seconds (the first includes cuDNN autotuning and allocator warm-up). ``budget_gb=0`` keeps the
    images on the host (each batch copied over)."""
    cfg = config_from_text(EPOCH_YAML).with_values({"data.device_budget_gb": budget_gb})
    with seeded(0):
        teacher = create_model(PAIR[0], ds.num_classes).to(device).eval()  # contiguous: the trainer converts it
    hs = teacher_default_hints(teacher, PAIR[0], None, ds)
    result = train_student(cfg, hs, teacher, ds, device=device)
    if result.status != "completed":
        raise RuntimeError(f"the GPU epoch-time run ended {result.status}: {result.fit.message}")
    h = result.fit.history
    return {"images": int(ds.train_x.shape[0]), "placement": "host" if budget_gb == 0 else "device",
            "epoch_s": [e.epoch_time for e in h], "timed_epoch_s": h[-1].epoch_time,
            "images_per_s": h[-1].images_per_s, "hints": hs.indices, "val_acc": h[-1].val_acc}


def selection_time(device: torch.device, n_probe: int, images: torch.Tensor | None = None) -> dict[str, Any]:
    """ResNet-110 (CIFAR-100 head): one hooked pass over ``n_probe`` images (the first ``n_probe`` of
    ``images`` when given, else random), each L × L matrix, the k-means."""
    with seeded(0):
        model = create_model("resnet110", 100).to(device).eval()
    layers = candidate_layers(model, input_shape=(3, 32, 32))
    x = images[:n_probe] if images is not None and images.shape[0] >= n_probe else cifar_like(n_probe, seed=3)[0]
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


def ray_stack_installed() -> bool:
    """Ray, MLflow and Optuna are importable (a sweep can run here)."""
    return all(importlib.util.find_spec(m) is not None for m in ("ray", "mlflow", "optuna"))


def concurrent_trials(checkpoint: Path, folder: Path, n: int, samples: int, epochs: int, gpu: bool) -> dict[str, Any]:
    """A FIFO sweep of ``samples`` distinct trials with ``n`` at a time, each asking for 1/n GPU: trials per
    second over Tuner.fit (Ray's start-up and the shared work excluded)."""
    cpus = os.cpu_count() or 1
    cfg = config_from_text(SWEEP_YAML.format(n=n, checkpoint=checkpoint, epochs=epochs, samples=samples,
                                             cpu=max(1, min(2, cpus // n)), gpu=round(1 / n, 4) if gpu else 0))
    spans: list[float] = []
    with tuner_fit_spans(spans):
        result = run_sweep(cfg, verbose=0, progress=False, **sweep_storage(folder / cfg.name))
    trained = [r for r in result.leaderboard if not r.duplicate_of]
    span = spans[0]
    return {"runner": "ray tune", "concurrent": n, "gpu_per_trial": round(1 / n, 4) if gpu else 0,
            "trials": len(result.leaderboard),
            "trained": len(trained), "tuner_fit_s": span, "trials_per_s": len(result.leaderboard) / span,
            "epochs_per_s": sum(r.epochs for r in trained) / span}


def _process_trials(args: tuple[int, int, int, str]) -> int:
    """One of ``n`` concurrent processes: train ``count`` digits students (resnet56 → resnet8, 16 px, AT with
    hints, a hint weight of its own each) on the shared GPU, as a fractional-GPU trial would."""
    first, count, epochs, device_name = args
    torch.set_num_threads(1)
    device = torch.device(device_name)
    cfg = config_from_text(SWEEP_YAML.format(n=1, checkpoint="''", epochs=epochs, samples=1, cpu=1, gpu=0))
    ds = dataset_for(cfg)
    with seeded(0):
        teacher = create_model("resnet56", ds.num_classes, in_channels=ds.channels).to(device).eval()
    hs = teacher_default_hints(teacher, "resnet56", None, ds)
    for i in range(first, first + count):
        trial = cfg.with_values({"distill.hint_weight": 10.0 * (1 + i), "seed": i})
        if train_student(trial, hs, teacher, ds, device=device).status != "completed":
            raise RuntimeError(f"process trial {i} did not complete")
    return count


def concurrent_processes(n: int, samples: int, epochs: int, device: str = "cuda") -> dict[str, Any]:
    """``samples`` digits trials spread over ``n`` concurrent processes on the one GPU (Ray absent): trials per
    second over the whole run, process start-up and CUDA initialisation included."""
    per = [samples // n + (1 if i < samples % n else 0) for i in range(n)]
    starts = [sum(per[:i]) for i in range(n)]
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(n) as pool:
        done = sum(pool.map(_process_trials, [(s0, c, epochs, device) for s0, c in zip(starts, per)]))
    span = time.perf_counter() - t0
    return {"runner": "processes (Ray not installed)", "concurrent": n, "gpu_per_trial": round(1 / n, 4),
            "trials": done, "trained": done, "tuner_fit_s": span, "trials_per_s": done / span,
            "epochs_per_s": done * epochs / span}


def free_driver_gpu() -> None:
    """Give the driver's cached GPU memory back before trials that share the device."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


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


def concurrency(s: dict[str, Any], say: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Trials per second at each of the settings' ``concurrency``: a Ray Tune sweep per level on one local Ray
    when the sweep stack is installed, else as many concurrent processes (each level announced by ``say``)."""
    trials = []
    if ray_stack_installed():
        with workspace() as folder:
            say("the digits teacher (trained once, then cached) and a local Ray")
            teacher, _ = digits_teacher(device=torch.device("cpu"))  # the driver keeps no GPU memory
            checkpoint = teacher.checkpoint
            del teacher
            free_driver_gpu()
            import ray  # ray: deferred, absent where the GPU benchmark falls back to processes

            ray.init(address="local", include_dashboard=False, log_to_driver=False)
            try:
                for n in s["concurrency"]:
                    say(f"{s['sweep_samples']} trials, {n} at a time on {1 / n:g} GPU each (a Tune sweep)")
                    trials.append(concurrent_trials(checkpoint, folder, n, s["sweep_samples"], s["sweep_epochs"],
                                                    gpu=True))
            finally:
                shutdown_ray()
    else:
        for n in s["concurrency"]:
            say(f"{s['sweep_samples']} trials, {n} at a time (processes sharing the GPU)")
            trials.append(concurrent_processes(n, s["sweep_samples"], s["sweep_epochs"]))
    return trials


def run(quick: bool, tiny: bool = False) -> dict[str, Any]:
    """Measure on the CUDA device, or return the skipped entry when there is none."""
    if not torch.cuda.is_available():
        return skipped_entry(quick, tiny)
    s = _settings(quick, tiny)
    device = pick_device()
    say = Progress(NAME)
    say(f"the data: {s['images']:,} photographs (decoded once, then cached)")
    ds, data_info = natural_dataset(s["images"], s["subset"])
    say("epoch time, images on the device")
    epoch = epoch_time(device, ds)
    say("epoch time, images on the host")
    epoch_host = epoch_time(device, ds, budget_gb=0)
    say("step syncs")
    syncs = step_sync_measure(device, s["sync_images"], repeats=3)
    say(f"ResNet-110 selection over {s['probe']:,} probe images")
    sel = selection_time(device, s["probe"], ds.train_x)
    del ds
    free_driver_gpu()
    trials = concurrency(s, say)
    base = trials[0]["trials_per_s"]
    best = max(trials, key=lambda t: t["trials_per_s"])
    headline = float(f"{best['trials_per_s'] / base:.4g}")
    precision = precision_name(device)
    return {
        "title": TITLE, "aim": AIM, "ratio": headline, "skipped": False,
        "ratio_definition": f"trials per second at the best concurrency ({best['concurrent']} trials, "
                            f"{best['gpu_per_trial']} GPU each) ÷ at 1 trial per GPU",
        "aim_met": None,
        "device_name": torch.cuda.get_device_name(device),
        "figures": {"settings": s, "data": data_info, "epoch": epoch, "epoch_host": epoch_host, "step_syncs": syncs,
                    "selection": sel, "trials": trials, "best_concurrency": best["concurrent"],
                    "precision": precision},
        "tables": [
            table(f"{PAIR[0]} → {PAIR[1]} (AT, default hints, batch 64, {precision} autocast, channels_last) on "
                  f"{epoch['images']:,} images: {data_info['data']}",
                  ["images on", "epoch s (second epoch)", "images/s", "first epoch s (warm-up)"],
                  [[e["placement"], e["timed_epoch_s"], e["images_per_s"], e["epoch_s"][0]] for e in (epoch, epoch_host)]),
            table("Step syncs (same step, only the bookkeeping differs)",
                  ["device-side steps/s", "host-read steps/s", "÷"],
                  [[syncs["device_side_steps_per_s"], syncs["host_reads_steps_per_s"], syncs["ratio"]]]),
            table(f"ResNet-110 hint selection, {sel['probe_images']:,} probe images, {sel['candidates']} candidates "
                  "(seconds)", ["representations (one pass)", "r2_cca", "cka_linear", "cka_rbf (≤ 4 000 rows)",
                                "k-means", "total with r2_cca"],
                  [[sel["representations_s"], sel["similarity_s"]["r2_cca"], sel["similarity_s"]["cka_linear"],
                    sel["similarity_s"]["cka_rbf"], sel["clustering_s"], sel["total_r2_cca_s"]]]),
            table(f"Concurrent fractional-GPU trials ({trials[0]['runner']}): {s['sweep_samples']} digits trials × "
                  f"{s['sweep_epochs']} epochs (resnet56 → resnet8, 16 px)",
                  ["concurrent trials", "GPU per trial", "wall s", "trials/s", "student epochs/s", "÷ 1 trial"],
                  [[t["concurrent"], t["gpu_per_trial"], t["tuner_fit_s"], t["trials_per_s"], t["epochs_per_s"],
                    float(f"{t['trials_per_s'] / base:.4g}")] for t in trials]),
        ],
        "notes": [
            "Randomly initialised models; the epoch is timed by the trainer (training plus validation), the "
            "selection stages with CUDA synchronisation.",
            "Ray Tune runs time Tuner.fit (each trial samples its own hint weight, so none is a duplicate); the "
            "process fallback times the whole pool, start-up and CUDA initialisation of each process included.",
        ],
        "machine": machine(device), "date": now(), "quick": quick, "tiny": tiny,
        "command": command(NAME, quick, tiny),
    }
