"""ASHA savings: the same digits sweep (same space, seed and trials) with ``scheduler: asha`` and ``fifo``.

Counts the student epochs each sweep actually trained (a duplicate trial replays its owner's history
without training, so it counts nothing), its wall time and the best ``val_acc`` it found. Both sweeps
run on one local Ray started once, so Ray's start-up is in neither figure.
"""

from __future__ import annotations

import time
from typing import Any

from pursuhint.config import Config
from pursuhint.search.results import TrialRow
from pursuhint.search.sweep import run_sweep

from .common import (command, digits_quick, digits_teacher, machine, now, pick_device, ratio, shutdown_ray,
                     sweep_storage, table, workspace)

NAME = "asha_savings"
TITLE = "ASHA savings: the same sweep with ASHA and with FIFO"
AIM = "ASHA trains clearly fewer student epochs than FIFO (ratio < 1) and finds a best val_acc within a point of FIFO's"

def _settings(quick: bool, tiny: bool) -> dict[str, Any]:
    if tiny:
        return {"samples": 2, "epochs": 2, "grace": 1}
    if quick:
        return {"samples": 8, "epochs": 4, "grace": 1}
    return {"samples": 16, "epochs": 8, "grace": 1}


def sweep_config(checkpoint: Any, scheduler: str, samples: int, epochs: int, grace: int) -> Config:
    """The benchmark's sweep with the given scheduler (everything else identical)."""
    return digits_quick(f"bench_asha_{scheduler}", {  # its space and recipe; every trial one ASHA may stop
        "teacher.checkpoint": str(checkpoint), "train.epochs": epochs, "search.num_samples": samples,
        "search.scheduler": scheduler, "search.grace_period": grace, "search.reduction_factor": 2,
        "search.baselines": [], "selection.on_collision": "warn", "search.confirm.top_k": 0})


def outcome(row: TrialRow) -> str:
    """The trial's status, or ``duplicate`` for a trial that replayed another's result."""
    return "duplicate" if row.duplicate_of else row.status


def epochs_trained(rows: list[TrialRow]) -> int:
    """Student epochs a sweep really trained: every trial's last epoch, except duplicates (replays)."""
    return sum(r.epochs for r in rows if outcome(r) not in ("duplicate", "invalid"))


def _one(cfg: Config, folder: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    result = run_sweep(cfg, verbose=0, progress=False, **sweep_storage(folder / cfg.name))
    wall = time.perf_counter() - t0
    rows = result.leaderboard
    trained = [r for r in rows if outcome(r) not in ("duplicate", "invalid")]
    stopped = sum(1 for r in trained if r.epochs < cfg.train.epochs)
    best = rows[0]
    counts: dict[str, int] = {}
    for r in rows:
        counts[outcome(r)] = counts.get(outcome(r), 0) + 1
    return {"wall_s": wall, "trials": len(rows), "epochs_trained": epochs_trained(rows),
            "epochs_reported": sum(r.epochs for r in rows), "statuses": counts,
            "stopped_early": stopped, "trained_trials": len(trained), "best_val_acc": best.best_val_acc,
            "best_config": {k: (round(v, 3) if isinstance(v, float) else v) for k, v in best.sampled.items()},
            "per_trial": [{"epochs": r.epochs, "status": outcome(r), "best_val_acc": round(r.best_val_acc, 2)}
                          for r in rows]}


def run(quick: bool, tiny: bool = False) -> dict[str, Any]:
    """Run the FIFO sweep, then the ASHA sweep, on one local Ray; headline = ASHA epochs ÷ FIFO epochs."""
    import ray  # ray: deferred, cheap import of the benchmark list

    s = _settings(quick, tiny)
    device = pick_device()
    results: dict[str, dict[str, Any]] = {}
    with workspace() as folder:
        teacher, teacher_info = digits_teacher()
        ray.init(address="local", include_dashboard=False, num_cpus=2, log_to_driver=False)
        try:
            for scheduler in ("fifo", "asha"):
                cfg = sweep_config(teacher.checkpoint, scheduler, s["samples"], s["epochs"], s["grace"])
                results[scheduler] = _one(cfg, folder)
        finally:
            shutdown_ray()
    fifo, asha = results["fifo"], results["asha"]
    headline = ratio(asha["epochs_trained"], fifo["epochs_trained"])
    rungs = []
    t = s["grace"]
    while t < s["epochs"]:
        rungs.append(t)
        t *= 2
    rows = [[k, r["trials"], r["epochs_trained"], r["epochs_reported"], r["stopped_early"],
             r["statuses"].get("duplicate", 0), r["wall_s"], r["best_val_acc"]] for k, r in results.items()]
    return {
        "title": TITLE, "aim": AIM, "ratio": headline,
        "ratio_definition": "student epochs trained by the ASHA sweep ÷ by the FIFO sweep (same space, seed "
                            f"and {s['samples']} trials of ≤ {s['epochs']} epochs; duplicates' replays not counted)",
        "aim_met": bool(headline < 1 and asha["best_val_acc"] >= fifo["best_val_acc"] - 1.0),
        "figures": {"settings": s, "rungs": rungs, "teacher": teacher_info, "fifo": fifo, "asha": asha,
                    "wall_ratio": ratio(asha["wall_s"], fifo["wall_s"]),
                    "best_val_acc_difference": asha["best_val_acc"] - fifo["best_val_acc"]},
        "tables": [table(
            f"{s['samples']} trials of ≤ {s['epochs']} epochs, 2 concurrent 1-CPU trials (ASHA: grace period "
            f"{s['grace']}, reduction factor 2, rungs at epochs {', '.join(map(str, rungs))})",
            ["scheduler", "trials", "epochs trained", "epochs reported (incl. replays)", "stopped early",
             "duplicates", "wall s", "best val_acc"], rows),
            table("Best trial of each sweep", ["scheduler", "best val_acc", "its config"],
                  [[k, r["best_val_acc"], ", ".join(f"{a}={b}" for a, b in r["best_config"].items())]
                   for k, r in results.items()])],
        "notes": [
            "Sweep: search_spaces/digits_quick.yaml's space (similarity, n_hints 2–3, clustering, center rule, "
            f"method at/fitnet, calibrated β with hint ratio 0.3–3 log-uniform) and optimiser, {s['epochs']} epochs "
            f"(digits_quick: "
            "6, grace period 2), seeded Optuna TPE, resnet56 → resnet8 on all digits at 16 px, `baselines: []` so "
            "that every trial is one ASHA may stop (baselines always run the full budget).",
            "FIFO runs first, so it also computes the cka_linear and cka_rbf matrices that ASHA then finds in the "
            "cache (a few seconds of its wall time).",
            "Epochs trained = the sum over trials of the last epoch each reported, leaving out duplicate trials "
            "(same hint set and recipe as an earlier trial: they replay its history and train nothing) and invalid "
            "ones. The searcher sees different results once ASHA stops trials, so after Optuna's random start-up "
            "trials the two sweeps may sample different points.",
            "Both sweeps share one local Ray (2 CPUs) started before them; wall time is run_sweep's, FIFO first.",
        ],
        "machine": machine(device), "date": now(), "quick": quick, "tiny": tiny,
        "command": command(NAME, quick, tiny),
    }
