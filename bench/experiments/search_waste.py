"""Search without waste: the same sweep over a raw-β space (``hint_weight: {loguniform: [10, 1000]}``, the
demo's space before calibration) and over the calibrated space (``hint_weight: auto`` with ``hint_ratio``
searched), same seed, same number of trials.

Two figures per space:
- **Waste**: the share of searched trials whose final selection-split accuracy falls more than 5 points
  below a CE-only student (same recipe, same seed, no teacher): a collapsed trial is compute lost.
- **Time to a good answer**: the confirmed test accuracy of the sweep's winner (its confirmation stage:
  the top configuration over 3 seeds) per trial-hour (the summed training time of every search and
  confirmation trial, teacher excluded).

On the demo's digits space (``search_spaces/digits_quick.yaml``), and on a CIFAR-shaped space (real
CIFAR-10 photographs, 32 px, a resnet20 teacher trained once and cached) when the photographs are there; the
CIFAR-shaped pair also runs a third space, ``calibrated_by_method``: r searched per method around the ratio
each method's published β means at 32 px, as the paper configs search it.
Every searched trial runs the full budget (FIFO), so a trial is never judged on an early-stopped epoch.
"""

from __future__ import annotations

import copy
import json
import os
import time
from pathlib import Path
from typing import Any, Optional

from pursuhint.config import Config, config_from_dict
from pursuhint.search.results import TrialRow, read_trials
from pursuhint.search.sweep import run_sweep

from ..common import (cache_dir, ce_only, cifar10_subset, cifar_raw, cifar_teacher, command, demo_raw, digits_teacher,
                      machine, now, pick_device, ratio, search_waste_settings, shutdown_ray, sweep_storage, table,
                      threads, workspace)

NAME = "search_waste"
TITLE = "Search without waste: a calibrated hint_ratio space vs a raw-β space"
AIM = ("no collapsed searched trial in the calibrated space (waste 0), and more confirmed test accuracy per "
       "trial-hour than the raw-β space")
COLLAPSE_POINTS = 5.0  # a trial more than this far below the CE-only student has collapsed
# "cifar": run only the CIFAR-shaped pair and keep the digits figures bench/results.json already holds (the
# digits pair is ~10 minutes; the CIFAR pair ~40 minutes on 2 cores, so the two can be run on different days)
ONLY_ENV = "PURSUHINT_WASTE_ONLY"

# "calibrated_by_method" (comma-separated space names): run only these spaces and keep the other spaces' figures
# from the entry bench/results.json holds (same settings)
SPACES_ENV = "PURSUHINT_WASTE_SPACES"

SPACES = {  # what differs between the sweeps: the hint-weight leaves
    "raw_beta": {"hint_weight": {"loguniform": [10, 1000]}, "hint_ratio": 1.0},
    "calibrated": {"hint_weight": "auto", "hint_ratio": {"loguniform": [0.3, 3]}},
    # the paper configs' 32-px space: r ranges around the ratio each method's published β means at 32 px
    # (hint_ratio_transfer: AT 4.7, FitNet 240), so it runs on the CIFAR-shaped pair only
    "calibrated_by_method": {"hint_weight": "auto", "hint_ratio": {"by_method": {
        "at": {"loguniform": [0.5, 25]}, "fitnet": {"loguniform": [25, 1000]}, "default": {"loguniform": [0.3, 3]}}}},
}
PAIR_SPACES = {"digits": ("raw_beta", "calibrated"), "cifar": ("raw_beta", "calibrated", "calibrated_by_method")}


def sweep_config(raw: dict[str, Any], name: str, space: str, checkpoint: str, s: dict[str, Any]) -> Config:
    """One of the two sweeps: ``raw`` with the space's hint-weight leaves, full budget, a one-configuration
    confirmation stage without baselines (what the winner is worth), nothing else."""
    raw = copy.deepcopy(raw)
    raw["name"] = f"bench_waste_{name}_{space}"
    raw["teacher"]["checkpoint"] = checkpoint
    raw["distill"].update(SPACES[space])
    raw["train"]["epochs"] = s["epochs"]
    raw["selection"]["on_collision"] = "warn"
    raw["search"].update({"num_samples": s["samples"], "scheduler": "fifo", "baselines": [],
                          "confirm": {"top_k": 1, "seeds": s["seeds"], "baselines": []}})
    return config_from_dict(raw, source=raw["name"])


def collapsed(rows: list[TrialRow], reference: float, points: float = COLLAPSE_POINTS) -> list[TrialRow]:
    """The searched trials (not baselines, not replays of another trial) whose final selection-split accuracy
    falls more than ``points`` below ``reference``; an invalid trial trained nothing and is not counted."""
    return [r for r in searched(rows) if not r.final_val_acc >= reference - points]


def searched(rows: list[TrialRow]) -> list[TrialRow]:
    return [r for r in rows if r.baseline == "none" and not r.duplicate_of and r.status != "invalid"]


def trial_hours(*folders: Path) -> float:
    """Summed training time (Tune's ``time_total_s`` of each trial's last result) of the trials in ``folders``."""
    total = 0.0
    for folder in folders:
        if folder.is_dir():
            for trial in read_trials(folder):
                times = [r["time_total_s"] for r in trial.results if isinstance(r.get("time_total_s"), (int, float))]
                total += max(times, default=0.0)
    return total / 3600


def one_space(cfg: Config, folder: Path, reference: float) -> dict[str, Any]:
    t0 = time.perf_counter()
    with threads(1):
        result = run_sweep(cfg, verbose=0, progress=False, **sweep_storage(folder / cfg.name))
    shutdown_ray()
    rows = result.leaderboard
    storage = folder / cfg.name / "ray_results"
    hours = trial_hours(storage / cfg.name, storage / f"{cfg.name}-confirm")
    conf = (result.confirmation or {}).get("configurations", [])
    test = conf[0]["test_acc"]["mean"] if conf else float("nan")
    bad = collapsed(rows, reference)
    return {"wall_s": round(time.perf_counter() - t0, 1), "searched": len(searched(rows)), "collapsed": len(bad),
            "collapsed_final_val_acc": [round(r.final_val_acc, 2) for r in bad],
            "final_val_acc": sorted((round(r.final_val_acc, 2) for r in searched(rows)), reverse=True),
            "hint_weights": [round(r.hint_weight, 4) for r in searched(rows)],
            "confirmed_test_acc": test, "confirmed_sd": conf[0]["test_acc"]["sd"] if conf else float("nan"),
            "winner": conf[0].get("hint_layers", "") if conf else "", "trial_hours": round(hours, 4),
            "test_acc_per_trial_hour": test / hours if hours else float("nan")}


def _pair(raw: dict[str, Any], name: str, checkpoint: str, folder: Path, teacher: Any,
          s: dict[str, Any], kept: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The pair's spaces on one data set, and the CE-only reference; a space ``kept`` holds (figures of an
    earlier run with the same settings) is not run again."""
    kept = kept or {}
    configs = {space: sweep_config(raw, name, space, checkpoint, s) for space in PAIR_SPACES[name]}
    with threads(2):  # the final selection-split accuracy of the student trained alone, same recipe and seed
        reference = float(ce_only(configs["calibrated"], teacher).final_val_acc)
    out = {"ce_only_final_val_acc": reference}
    for space, cfg in configs.items():
        out[space] = kept[space] if space in kept else one_space(cfg, folder, reference)
    return out


def kept_spaces(entry: Optional[dict[str, Any]], pair: str) -> dict[str, Any]:
    """The figures of the spaces not named in $PURSUHINT_WASTE_SPACES, from ``entry`` (all run when it is unset)."""
    wanted = [w for w in os.environ.get(SPACES_ENV, "").split(",") if w]
    if not wanted or entry is None or not entry["figures"].get(pair):
        return {}
    unknown = sorted(set(wanted) - set(SPACES))
    if unknown:
        raise SystemExit(f"{SPACES_ENV} names unknown spaces {unknown}; the spaces are {sorted(SPACES)}")
    return {k: v for k, v in entry["figures"][pair].items() if k in SPACES and k not in wanted}


def run(quick: bool, tiny: bool = False) -> dict[str, Any]:
    s = search_waste_settings(quick, tiny)
    device = pick_device()
    figures: dict[str, Any] = {"settings": s, "cache": str(cache_dir())}
    only_cifar = os.environ.get(ONLY_ENV) == "cifar"
    kept = _kept_entry(quick, tiny) if only_cifar or os.environ.get(SPACES_ENV) else None
    with workspace() as folder:
        if only_cifar:
            figures["digits"] = kept["figures"]["digits"]
        else:
            teacher, info = digits_teacher()
            figures["digits"] = _pair(demo_raw(), "digits", str(teacher.checkpoint), folder, teacher, s,
                                      kept_spaces(kept, "digits"))
            figures["digits"]["teacher"] = info
        root = cifar10_subset()
        if root is None:
            figures["cifar"] = None
        else:
            raw = cifar_raw(root, s)
            t, checkpoint = cifar_teacher(raw)
            figures["cifar"] = _pair(raw, "cifar", checkpoint, folder, t, s, kept_spaces(kept, "cifar"))
            figures["cifar"]["teacher"] = {"arch": t.arch, "val_acc": t.meta.get("val_acc")}
    pairs = {k: v for k, v in figures.items() if k in PAIR_SPACES and v}
    speeds = {space: {k: ratio(v[space]["test_acc_per_trial_hour"], v["raw_beta"]["test_acc_per_trial_hour"])
                      for k, v in pairs.items() if space in v}
              for space in ("calibrated", "calibrated_by_method")}
    speed = speeds["calibrated"]
    waste = sum(v[space]["collapsed"] for v in pairs.values() for space in speeds if space in v)
    figures["speed_vs_raw_beta"] = speeds
    return {
        "title": TITLE, "aim": AIM, "ratio": speed["digits"],
        "ratio_definition": "confirmed test accuracy per trial-hour, calibrated space ÷ raw-β space (digits)",
        "aim_met": bool(waste == 0 and min(speed.values()) > 1), "figures": figures,
        "tables": tables(figures),
        "notes": [f"Collapsed: final selection-split accuracy more than {COLLAPSE_POINTS:g} points below a CE-only "
                  f"student with the same recipe and seed. {s['samples']} searched trials per sweep, FIFO (full budget), "
                  f"the winner confirmed over {s['seeds']} seeds on the test split."]
                 + ([] if figures.get("cifar") else ["The CIFAR-shaped space was skipped: no CIFAR-10 photographs "
                                                     "(set $PURSUHINT_CIFAR10_SUBSET)."])
                 + ([f"Figures not run this time are those of the run of {kept['date']} (same settings; kept with "
                     f"{ONLY_ENV}=cifar for the digits pair, {SPACES_ENV} for the spaces it does not name); the rest "
                     f"ran on {now()}."] if kept is not None else [])
                 + ["calibrated_by_method (CIFAR-shaped pair only) searches r per method around the ratio each "
                    "method's published β means at 32 px (AT [0.5, 25], FitNet [25, 1000]), as the paper configs do."],
        "machine": machine(device), "date": now(), "quick": quick, "tiny": tiny, "command": command(NAME, quick, tiny),
    }


def _kept_entry(quick: bool, tiny: bool) -> dict[str, Any]:
    """The search_waste entry bench/results.json holds, when it ran with these settings (figures to keep)."""
    path = Path(__file__).resolve().parents[1] / "results.json"
    entry = json.loads(path.read_text(encoding="utf-8")).get(NAME) if path.is_file() else None
    if (not entry or entry["figures"].get("settings") != search_waste_settings(quick, tiny)
            or not entry["figures"].get("digits")):
        raise SystemExit(f"{ONLY_ENV}=cifar and {SPACES_ENV} need a search_waste entry of the same variant in "
                         f"{path}; run the benchmark once without them")
    return entry


def tables(figures: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for data in ("digits", "cifar"):
        pair = figures.get(data)
        if not pair:
            continue
        for space in PAIR_SPACES[data]:
            f = pair.get(space)
            if f is None:  # a space added after this pair's run
                continue
            rows.append([data, space, f"{f['collapsed']} of {f['searched']}", pair["ce_only_final_val_acc"],
                         f["final_val_acc"][0] if f["final_val_acc"] else float("nan"),
                         f"{f['confirmed_test_acc']:.2f} ± {f['confirmed_sd']:.2f}", f["trial_hours"],
                         f["test_acc_per_trial_hour"]])
    return [table("The same sweep over a raw-β space and over calibrated spaces",
                  ["data", "space", "collapsed", "CE-only val %", "best final val %", "confirmed test %",
                   "trial-hours", "test % per trial-hour"], rows)]
