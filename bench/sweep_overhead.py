"""Sweep overhead: one student training run directly (``train_student``) and as a 1-trial Ray Tune sweep
with MLflow logging, and the student throughput of one 2-CPU trial against two concurrent 1-CPU trials.

Both runs train resnet8 from the cached digits resnet56 teacher through the same paper-mode hint set
(r2_cca / pursuhint / mean_index, K = 3) with the same config and seed. The sweep pays Ray's start-up,
shipping the shared work through the object store, a Tune report, a checkpoint and MLflow logging per
epoch; the ratio says how much that costs.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from pursuhint import tracking
from pursuhint.config import Config, config_from_text
from pursuhint.train.student import train_student
from pursuhint.hints.pipeline import choose_hints, prepare_selection
from pursuhint.search.sweep import run_sweep
from pursuhint.train.teacher import dataset_for, load_teacher

from .common import (CACHE_ENV, cache_dir, command, digits_teacher, machine, now, pick_device, ratio, shutdown_ray,
                     sweep_storage, table, threads, tuner_fit_spans, workspace)

NAME = "sweep_overhead"
TITLE = "Sweep overhead: a trial under Ray Tune and MLflow vs the same training run directly"
AIM = "sweep ÷ direct wall time ≤ 1.05 for a ≥ 60 s trial; two concurrent 1-CPU trials out-train one 2-CPU trial"
ROOT = Path(__file__).resolve().parents[1]

TRIAL_YAML = """
name: {name}
seed: 0
data: {{dataset: digits, image_size: 16, probe_size: 1000}}
teacher: {{arch: resnet56, checkpoint: {checkpoint}}}
student: {{arch: resnet8}}
selection: {{similarity: r2_cca, n_hints: 3, algorithm: pursuhint, center: mean_index, on_collision: warn}}
distill: {{method: at, hint_weight: 100, kd_weight: 0.0}}
train: {{epochs: {epochs}, batch_size: 64, lr: 0.05, lr_schedule: cosine}}
search: {{num_samples: 1, baselines: [], max_concurrent_trials: 1, resources_per_trial: {{cpu: {cpus}, gpu: 0}},
          confirm: {{top_k: 0}}}}
"""


# ------------------------------------------------------------------------------------------------
# MLflow reads


def child_runs(uri: str, parent: str) -> list[Any]:
    """The MLflow child runs (one per trial) of a sweep's parent run."""
    exp_id = tracking.client(uri).get_run(parent).info.experiment_id
    return tracking.find_runs(uri, exp_id, **{tracking.PARENT_TAG: parent})


def metric_history(uri: str, run_id: str, name: str) -> list[Any]:
    """A child run's per-epoch history of one metric, by epoch."""
    return sorted(tracking.client(uri).get_metric_history(run_id, name), key=lambda m: m.step)


# ------------------------------------------------------------------------------------------------
# this benchmark


def _settings(quick: bool, tiny: bool) -> dict[str, Any]:
    """Trial length (epochs of ~2 s on one quiet core), repeats, and the throughput runs' epochs."""
    if tiny:
        return {"epochs": 1, "repeats": 1, "tp_epochs": 1, "tp_repeats": 1}
    if quick:
        return {"epochs": 8, "repeats": 1, "tp_epochs": 2, "tp_repeats": 1}
    return {"epochs": 32, "repeats": 2, "tp_epochs": 6, "tp_repeats": 2}


def trial_config(checkpoint: Path, epochs: int, cpus: int = 1, name: str = "bench_sweep_overhead") -> Config:
    """The one-trial sweep config; without a search space it runs exactly the config itself once."""
    return config_from_text(TRIAL_YAML.format(name=name, checkpoint=checkpoint, epochs=epochs, cpus=cpus))


def _direct(cfg: Config) -> dict[str, Any]:
    """Train the student the way a notebook would: teacher from its checkpoint, cached selection, train
    (one torch thread, as the 1-CPU trial runs)."""
    with threads(1):
        return _direct_body(cfg)


def _direct_body(cfg: Config) -> dict[str, Any]:
    t0 = time.perf_counter()
    ds = dataset_for(cfg)
    teacher = load_teacher(cfg, ds=ds, progress=False)
    sel = prepare_selection(teacher.model, teacher.arch, teacher.sha256, ds, ["r2_cca"],
                            probe_size=cfg.data.probe_size)
    hs = choose_hints(sel, "r2_cca", 3, "pursuhint", "mean_index", seed=cfg.seed, on_collision="warn")
    t1 = time.perf_counter()
    result = train_student(cfg, hs, teacher.model, ds, teacher_sha256=teacher.sha256)
    t2 = time.perf_counter()
    h = result.fit.history
    return {"total_s": t2 - t0, "setup_s": t1 - t0, "train_s": t2 - t1, "epochs": len(h),
            "epoch_time_sum_s": sum(e.epoch_time for e in h), "val_acc": result.final_val_acc,
            "hints": hs.indices, "images_per_s": statistics.median(e.images_per_s for e in h)}


def _sweep(cfg: Config, folder: Path) -> dict[str, Any]:
    """The same training as a 1-trial sweep: run_sweep's wall time, Tuner.fit's span and the trial's own times."""
    spans: list[float] = []
    store = folder / f"sweep-{time.time_ns()}"
    kw = sweep_storage(store)
    t0 = time.perf_counter()
    with tuner_fit_spans(spans):
        result = run_sweep(cfg, verbose=0, progress=False, **kw)
    total = time.perf_counter() - t0
    (child,) = child_runs(result.tracking_uri, result.parent_run_id)
    times = metric_history(result.tracking_uri, child.info.run_id, "epoch_time")
    accs = metric_history(result.tracking_uri, child.info.run_id, "val_acc")
    rates = metric_history(result.tracking_uri, child.info.run_id, "images_per_s")
    # the trial's span: its MLflow run is created after the teacher is rebuilt and the hints chosen;
    # the last val_acc is logged right after the last epoch
    trial_span = (accs[-1].timestamp - child.info.start_time) / 1000.0
    return {"total_s": total, "tuner_fit_s": spans[0] if spans else float("nan"), "trial_span_s": trial_span,
            "epochs": len(times), "epoch_time_sum_s": sum(m.value for m in times),
            "val_acc": accs[-1].value, "hints": [int(i) - 1 for i in child.data.params["hint_indices"].split(",")],
            "images_per_s": statistics.median(m.value for m in rates)}


# ------------------------------------------------------------------------------------------------
# throughput: one 2-thread trainer vs two concurrent 1-thread trainers, in separate processes


def throughput_worker(checkpoint: str, epochs: int, threads: int, seed: int) -> None:
    """Body of one trainer process: set up, say ``ready``, wait for ``go`` on stdin, train, print JSON.

    Runs with ``threads`` torch threads, as a Tune trial with that many CPUs does (``run_trial``).
    """
    torch.set_num_threads(threads)
    cfg = trial_config(Path(checkpoint), epochs).with_values({"seed": seed})
    ds = dataset_for(cfg)
    teacher = load_teacher(cfg, ds=ds, progress=False)
    sel = prepare_selection(teacher.model, teacher.arch, teacher.sha256, ds, ["r2_cca"],
                            probe_size=cfg.data.probe_size)
    hs = choose_hints(sel, "r2_cca", 3, seed=0, on_collision="warn")
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.time()
    result = train_student(cfg, hs, teacher.model, ds, teacher_sha256=teacher.sha256)
    end = time.time()
    h = result.fit.history
    per_epoch = ds.train_x.shape[0] // cfg.train.batch_size * cfg.train.batch_size  # the loader drops the rest
    print(json.dumps({"start": start, "end": end, "images": int(per_epoch) * len(h), "threads": threads,
                      "epoch_time_sum": sum(e.epoch_time for e in h)}), flush=True)


def _group(checkpoint: Path, epochs: int, threads: list[int]) -> dict[str, Any]:
    """Start one trainer process per entry of ``threads`` together; summed images / the group's wall time."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    procs = []
    for k, n in enumerate(threads):
        env_k = dict(env, OMP_NUM_THREADS=str(n), MKL_NUM_THREADS=str(n))
        code = (f"from bench.sweep_overhead import throughput_worker; "
                f"throughput_worker({str(checkpoint)!r}, {epochs}, {n}, {k})")
        procs.append(subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True, env=env_k, cwd=str(ROOT)))
    try:
        for p in procs:
            line = p.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"a throughput worker failed to start (said {line!r})")
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [json.loads(p.communicate(timeout=900)[0].strip().splitlines()[-1]) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    span = max(o["end"] for o in outs) - min(o["start"] for o in outs)
    images = sum(o["images"] for o in outs)
    return {"threads": threads, "images": images, "wall_s": span, "images_per_s": images / span,
            "per_trainer_images_per_s": [o["images"] / (o["end"] - o["start"]) for o in outs]}


def _throughput(checkpoint: Path, epochs: int, repeats: int) -> dict[str, Any]:
    """Interleaved repeats of: one 1-thread trainer, one 2-thread trainer, two concurrent 1-thread trainers."""
    layouts = {"1 trial × 1 CPU": [1], "1 trial × 2 CPUs": [2], "2 trials × 1 CPU": [1, 1]}
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in layouts}
    for _ in range(repeats):
        for label, layout in layouts.items():
            runs[label].append(_group(checkpoint, epochs, layout))
    rates = {k: statistics.median(r["images_per_s"] for r in v) for k, v in runs.items()}
    return {"epochs": epochs, "runs": runs, "images_per_s": rates,
            "two_1cpu_over_one_2cpu": ratio(rates["2 trials × 1 CPU"], rates["1 trial × 2 CPUs"])}


def _measure(cfg_s: dict[str, Any]) -> tuple[dict[str, Any], list[dict], list[dict], dict[str, Any]]:
    """The teacher's provenance, the direct and sweep runs (interleaved after a warm-up), the throughput."""
    with workspace() as folder:
        teacher, teacher_info = digits_teacher()
        cfg = trial_config(teacher.checkpoint, cfg_s["epochs"])
        _direct(cfg.with_values({"train.epochs": 1}))  # warm-up: imports, caches, allocator
        direct, sweep = [], []
        for _ in range(cfg_s["repeats"]):
            direct.append(_direct(cfg))
            sweep.append(_sweep(cfg, folder))
        shutdown_ray()
        tp = _throughput(teacher.checkpoint, cfg_s["tp_epochs"], cfg_s["tp_repeats"])
    return teacher_info, direct, sweep, tp


def _notes(teacher_info: dict[str, Any]) -> list[str]:
    """The entry's "how it was measured" lines."""
    return [
        f"Teacher: digits_quick's resnet56 (15 epochs on all 1,438 digits training images), trained once into "
        f"the benchmark cache ({cache_dir()}, or ${CACHE_ENV}); "
        + ("found in the cache." if teacher_info["checkpoint_cached"]
           else f"trained in this run ({teacher_info['seconds']} s, outside every timing)."),
        "Direct: load the teacher from its checkpoint, the data set, the cached representations and r2_cca matrix, "
        "choose the paper-mode hints, then train_student (1 torch thread). Sweep: run_sweep on a config with no "
        "search space and no baselines (exactly one trial of 1 CPU, so 1 torch thread, as in digits_quick.yaml), "
        "a fresh local Ray and a "
        "fresh SQLite MLflow store each time; its figure includes ray.init, the shared work as a Ray task, "
        "the parent run, Tune's per-epoch report and checkpoint, MLflow logging, the leaderboard and ray.shutdown.",
        "Tuner.fit is timed by wrapping the method for the duration of the benchmark; the trial's own span runs "
        "from the creation of its MLflow run to the timestamp of its last val_acc.",
        "Throughput: separate processes that each load the teacher and data, wait at a barrier, then train the "
        "same student with torch.set_num_threads(n) as a Tune trial with n CPUs does; images/s = images trained "
        "by all of them ÷ (last end − first start).",
    ]


def run(quick: bool, tiny: bool = False) -> dict[str, Any]:
    """Direct vs 1-trial sweep (interleaved repeats after a warm-up), then the concurrency throughput."""
    cfg_s = _settings(quick, tiny)
    device = pick_device()
    teacher_info, direct, sweep, tp = _measure(cfg_s)

    med = lambda rows, key: statistics.median(r[key] for r in rows)  # noqa: E731
    d_total, s_total = med(direct, "total_s"), med(sweep, "total_s")
    d_train, s_fit, s_span = med(direct, "train_s"), med(sweep, "tuner_fit_s"), med(sweep, "trial_span_s")
    d_ep, s_ep = med(direct, "epoch_time_sum_s"), med(sweep, "epoch_time_sum_s")
    epochs = cfg_s["epochs"]
    headline = ratio(s_total, d_total)
    figures = {
        "epochs": epochs, "teacher": teacher_info, "direct": direct, "sweep": sweep,
        "direct_total_s": d_total, "sweep_total_s": s_total,
        "ratio_end_to_end": headline,
        "ratio_tuner_fit_over_direct_train": ratio(s_fit, d_train),
        "ratio_trial_span_over_direct_train": ratio(s_span, d_train),
        "ratio_epoch_time": ratio(s_ep, d_ep),
        "ray_and_setup_outside_tuner_s": s_total - s_fit,
        "per_epoch_overhead_s": (s_span - s_ep) / epochs - (d_train - d_ep) / epochs,
        "same_hints": all(r["hints"] == direct[0]["hints"] for r in direct + sweep),
        "throughput": tp,
    }
    rows = [
        ["end to end (sweep: run_sweep incl. Ray start-up and shutdown; direct: teacher, selection, training)",
         d_total, s_total, headline],
        ["training only (sweep: Tuner.fit; direct: train_student)", d_train, s_fit, figures[
            "ratio_tuner_fit_over_direct_train"]],
        ["the trial itself (MLflow child run start → last epoch logged; direct: train_student)", d_train, s_span,
         figures["ratio_trial_span_over_direct_train"]],
        ["sum of per-epoch times (train + validation)", d_ep, s_ep, figures["ratio_epoch_time"]],
    ]
    tp_rows = [[k, tp["images_per_s"][k], ratio(tp["images_per_s"][k], tp["images_per_s"]["1 trial × 2 CPUs"])]
               for k in tp["images_per_s"]]
    trial_s = d_train
    return {
        "title": TITLE, "aim": AIM, "ratio": headline,
        "ratio_definition": "wall seconds of the 1-trial sweep (run_sweep end to end, Ray start-up included) ÷ "
                            f"the same training run directly (a {trial_s:.0f} s training, {epochs} epochs)",
        "aim_met": bool(headline <= 1.05 and tp["two_1cpu_over_one_2cpu"] > 1.0) if not (quick or tiny) else None,
        "figures": figures,
        "tables": [
            table(f"Seconds, direct vs 1-trial sweep (median of {cfg_s['repeats']} interleaved repeats; resnet56 → "
                  f"resnet8 on digits at 16 px, AT through the paper-mode hints, {epochs} epochs)",
                  ["what", "direct s", "sweep s", "sweep ÷ direct"], rows),
            table(f"Student images per second, summed over concurrent trainers ({tp['epochs']} epochs each, median "
                  f"of {cfg_s['tp_repeats']} interleaved repeats)", ["layout", "images/s", "÷ one 2-CPU trial"],
                  tp_rows),
        ],
        "notes": _notes(teacher_info),
        "machine": machine(device), "date": now(), "quick": quick, "tiny": tiny,
        "command": command(NAME, quick, tiny),
    }
