"""Does a calibrated hint ratio transfer? ``hint_weight: auto`` makes the hint term start at r times the CE
term (β = r · CE₀ / H₀), so one r might suit every method and resolution. Two measurements:

- **The ratio each method's published β means**: r = β_bench · H₀ / CE₀ for every built-in hint method,
  on the demo's digits pair (resnet56 → resnet8, 16 px) and on a CIFAR-shaped pair (real CIFAR-10
  photographs, 32 px, resnet20 → resnet8: the resolution the CRD benchmark's β were tuned at), with the
  teachers' default hints, measured by the calibration itself (figures in results.json: its first two
  training batches, before the calibration moved onto the first training step's own forward pass).
- **Whether one r suits both pairs**: AT and FitNet students trained with r = 1 and with the ratio their
  published β means at 32 px (where it was tuned), on both pairs (default hints, the demo's recipe, 2
  seeds): if a ratio transferred, the 32-px ratio would do as well at 16 px as it does at 32 px.

The CIFAR-shaped half needs the photographs (``$PURSUHINT_CIFAR10_SUBSET``); without them only the digits
half runs. Teachers come from the benchmark cache (trained once, as ``search_waste`` trains them).
"""

from __future__ import annotations

import copy
import statistics
from typing import Any, Optional

from pursuhint.config import config_from_dict
from pursuhint.distill.methods import METHODS, method_class
from pursuhint.train.student import train_student
from pursuhint.hints.pipeline import teacher_default_hints
from pursuhint.train.teacher import dataset_for

from ..common import (cifar10_subset, cifar_raw, cifar_teacher, command, demo_raw, digits_teacher, machine, now,
                      pick_device, search_waste_settings, table, threads, workspace)

NAME = "hint_ratio_transfer"
TITLE = "Hint-ratio transfer: the ratio each published β means, and whether one r suits 16 px and 32 px"
AIM = ("one r per method that suits both resolutions: published-β ratios within a factor of 3 of each other, "
       "and r = 1 within 1 point of the 32-px ratio on both pairs")
TRAINED = ("at", "fitnet")  # the two methods of the demo's and the paper configs' spaces, trained both ways


def hint_methods() -> list[str]:
    """The built-in methods with a hint loss (not KD-only, not CRD alone)."""
    return [n for n in METHODS.names() if method_class(n).uses_hints and method_class(n).__module__.startswith(
        "pursuhint.")]


def _config(raw: dict[str, Any], name: str, method: str, ratio: float, seed: int, epochs: int,
            train_samples: Optional[int] = None):
    raw = copy.deepcopy(raw)
    raw.pop("search", None)
    raw.update(name=name, seed=seed)
    raw["train"]["epochs"] = epochs
    if train_samples:
        raw["data"]["train_samples"] = train_samples
    raw["distill"] = {"method": method, "hint_weight": "auto", "hint_ratio": ratio, "kd_weight": 0.0,
                      "ce_weight": 1.0}
    return config_from_dict(raw, source=name)


def _student(cfg, teacher, evaluate_test: bool = False):
    ds = dataset_for(cfg)
    hs = teacher_default_hints(teacher.model, teacher.arch, teacher.sha256, ds)
    return train_student(cfg, hs, teacher.model, ds, teacher_sha256=teacher.sha256, evaluate_test=evaluate_test)


def implied_ratios(raw: dict[str, Any], teacher: Any, methods: list[str]) -> dict[str, float]:
    """method → the r at which ``auto`` gives the method's published β (its ``default_weight``): one epoch on
    512 images, whose calibration measures CE₀ and H₀ exactly as a full run's does."""
    out = {}
    for m in methods:
        result = _student(_config(raw, f"bench_ratio_probe_{m}", m, 1.0, 0, 1, train_samples=512), teacher)
        out[m] = float(method_class(m).default_weight) / float(result.weights["hint"])
    return out


def trained(raw: dict[str, Any], teacher: Any, implied: dict[str, float], seeds: list[int],
            epochs: int) -> dict[str, Any]:
    """method → {"1": test accuracies at r = 1, "published": at ``implied[method]`` (the published β's ratio
    at 32 px), "r": that ratio}."""
    out: dict[str, Any] = {}
    for m in TRAINED:
        out[m] = {"r": implied[m], "1": [], "published": [], "beta_1": [], "beta_published": []}
        for seed in seeds:
            for key, r in (("1", 1.0), ("published", implied[m])):
                res = _student(_config(raw, f"bench_ratio_{m}_{key}_{seed}", m, r, seed, epochs), teacher,
                               evaluate_test=True)
                out[m][key].append(float(res.fit.history[-1].extra["test_acc"]))
                out[m][f"beta_{key}"].append(float(res.weights["hint"]))
    return out


def run(quick: bool, tiny: bool = False) -> dict[str, Any]:
    s = search_waste_settings(quick, tiny)
    seeds = [1] if tiny else [1, 2]
    methods = ["at", "fitnet"] if tiny else hint_methods()
    figures: dict[str, Any] = {"settings": s, "seeds": seeds}
    with workspace(), threads(2):
        teacher, _ = digits_teacher()
        pairs = [("digits", demo_raw(), teacher)]
        root = cifar10_subset()
        if root is not None:
            raw = cifar_raw(root, s)
            t, _ = cifar_teacher(raw)
            pairs.append(("cifar", raw, t))
        for name, raw, t in pairs:
            figures[name] = {"implied": implied_ratios(raw, t, methods)}
        reference = figures[pairs[-1][0]]["implied"]  # 32 px when the photographs are here
        for name, raw, t in pairs:
            figures[name]["trained"] = trained(raw, t, reference, seeds, s["epochs"])
    spread = {m: ratio_spread(figures, m) for m in methods}
    worst = max((v for v in spread.values() if v is not None), default=None)
    cost = max((abs(accuracy_gap(figures[p]["trained"][m])) for p in ("digits", "cifar") if p in figures
                for m in TRAINED),
               default=None)
    return {
        "title": TITLE, "aim": AIM, "ratio": round(worst, 3) if worst is not None else None,
        "ratio_definition": "the largest factor between a method's published-β ratio on digits (16 px) and on "
                            "CIFAR-shaped data (32 px)",
        "aim_met": bool(worst is not None and worst <= 3 and cost is not None and cost <= 1),
        "figures": figures, "tables": tables(figures),
        "notes": ["Published β: the CRD benchmark's (at 1000, fitnet 100, sp 3000, nst 50, vid 1, pkt 30000, "
                  "rkd 1, cc 0.02), each method's `default_weight`. Ratio r = β · H₀ / CE₀ with H₀ and CE₀ the "
                  "calibration's own measurement (untrained student, connectors at initialisation).",
                  f"Trained students: the demo's recipe ({s['epochs']} epochs, lr 0.05 cosine, batch 64), "
                  f"default hints, CE + hint terms only, seeds {', '.join(map(str, seeds))}; test accuracy."]
                 + ([] if "cifar" in figures else ["The CIFAR-shaped pair was skipped: no CIFAR-10 photographs "
                                                   "(set $PURSUHINT_CIFAR10_SUBSET)."]),
        "machine": machine(pick_device()), "date": now(), "quick": quick, "tiny": tiny,
        "command": command(NAME, quick, tiny),
    }


def ratio_spread(figures: dict[str, Any], method: str) -> Optional[float]:
    """max/min of the method's published-β ratio over the two pairs (None with one pair)."""
    values = [figures[p]["implied"][method] for p in ("digits", "cifar") if p in figures]
    return max(values) / min(values) if len(values) == 2 else None


def accuracy_gap(t: dict[str, Any]) -> float:
    """Mean test accuracy at r = 1 minus at the published β's r."""
    return statistics.mean(t["1"]) - statistics.mean(t["published"])


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {sd:.2f}"


def tables(figures: dict[str, Any]) -> list[dict[str, Any]]:
    pairs = [p for p in ("digits", "cifar") if p in figures]
    if not pairs:
        return []
    methods = list(figures[pairs[0]]["implied"])
    label = {"digits": "digits, 16 px", "cifar": "CIFAR-shaped, 32 px"}
    ratio_rows = [[m, *[f"{figures[p]['implied'][m]:.3g}" for p in pairs],
                   f"{ratio_spread(figures, m):.1f}×" if ratio_spread(figures, m) is not None else "—"]
                  for m in methods]
    out = [table("The ratio r each method's published β means (hint term ÷ CE term at the first step)",
                 ["method", *[label[p] for p in pairs], "digits vs CIFAR"], ratio_rows)]
    rows = []
    for p in pairs:
        for m, t in figures[p]["trained"].items():
            rows.append([label[p], m, _mean_sd(t["1"]), f"{t['r']:.3g}", _mean_sd(t["published"]),
                         f"{accuracy_gap(t):+.2f}"])
    ref = "the published β's 32-px r" if "cifar" in figures else "the published β's r"
    out.append(table("Test accuracy (%) with r = 1 and with the ratio the published β means at 32 px "
                     "(default hints)", ["data", "method", "r = 1", ref, "at that r", "r = 1 minus it"], rows))
    return out
