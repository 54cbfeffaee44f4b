"""Hint-weight calibration cost: a one-epoch student run with ``hint_weight: auto`` ÷ the same run given the
resolved β as a number (identical training, so the difference is the calibration step), as a fraction of
one epoch.

Two settings: the demo's digits pair (resnet56 → resnet8, 16 px, 1 293 training images: 21 batches, so
the two calibration batches are a visible share) and a CIFAR-shaped pair (resnet56 → resnet20, 32 px,
10 000 random images: 157 batches). Randomly initialised models: the cost does not depend on the weights.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from pursuhint.config import config_from_text
from pursuhint.distill.trainer import train_student
from pursuhint.hints.pipeline import teacher_default_hints
from pursuhint.models import create_model
from pursuhint.teacher import dataset_for

from .common import command, machine, now, pick_device, seeded, table
from .gpu import cifar_dataset

NAME = "hint_calibration"
TITLE = "Hint-weight calibration: its cost as a fraction of one epoch"
AIM = "under 1 % of a one-epoch trial"

DIGITS = """
seed: 0
data: {dataset: digits, image_size: 16}
teacher: {arch: resnet56}
student: {arch: resnet8}
distill: {method: at, hint_weight: auto}
train: {epochs: 1, batch_size: 64, lr: 0.05, lr_schedule: cosine}
"""
CIFAR = DIGITS.replace("data: {dataset: digits, image_size: 16}\n", "").replace("resnet8}", "resnet20}")


def _pair(text: str, images: int | None, device: torch.device):
    cfg = config_from_text(text)
    ds = dataset_for(cfg) if images is None else cifar_dataset(images)
    with seeded(0):
        teacher = create_model("resnet56", ds.num_classes, in_channels=ds.channels).to(device).eval()
    return cfg, ds, teacher, teacher_default_hints(teacher, "resnet56", None, ds)


def measure(text: str, images: int | None, device: torch.device, repeats: int) -> dict[str, Any]:
    """Median seconds of the auto run and of the same run with β given (interleaved), and their difference."""
    cfg, ds, teacher, hs = _pair(text, images, device)
    first = train_student(cfg, hs, teacher, ds, device=device)
    beta = first.weights["hint"]
    fixed = cfg.with_values({"distill.hint_weight": beta})
    auto_s, fixed_s = [], []
    for _ in range(repeats):
        for c, out in ((cfg, auto_s), (fixed, fixed_s)):
            t0 = time.perf_counter()
            train_student(c, hs, teacher, ds, device=device)
            out.append(time.perf_counter() - t0)
    auto_s.sort(), fixed_s.sort()
    a, f = auto_s[len(auto_s) // 2], fixed_s[len(fixed_s) // 2]
    return {"images": int(ds.train_x.shape[0]), "batches": int(ds.train_x.shape[0]) // 64, "beta": beta,
            "auto_s": a, "fixed_s": f, "cost_s": a - f, "fraction": (a - f) / f,
            "calibration": first.extra.get("calibration", {})}


def run(quick: bool, tiny: bool = False) -> dict[str, Any]:
    device = pick_device()
    repeats = 1 if tiny else (3 if quick else 5)
    digits = measure(DIGITS, None, device, repeats)
    cifar = measure(CIFAR, 2_000 if (quick or tiny) else 10_000, device, repeats)
    worst = max(digits["fraction"], cifar["fraction"])
    return {
        "title": TITLE, "aim": AIM, "ratio": float(f"{1 + worst:.4g}"),
        "ratio_definition": "one-epoch run time with hint_weight: auto ÷ with the same β given, the larger of the "
                            "two settings",
        "aim_met": bool(worst < 0.01), "figures": {"digits": digits, "cifar_shaped": cifar},
        "tables": [table("One epoch with the calibrated β vs the same β given as a number (median seconds)",
                         ["setting", "training images", "batches", "auto s", "given β s", "calibration s",
                          "share of the epoch"],
                         [[name, m["images"], m["batches"], m["auto_s"], m["fixed_s"], m["cost_s"],
                           f"{100 * m['fraction']:.2f} %"]
                          for name, m in (("digits resnet56 → resnet8, 16 px", digits),
                                          ("CIFAR-shaped resnet56 → resnet20, 32 px", cifar))])],
        "notes": ["Calibration runs the first two training batches forward (teacher, student, hint loss) without "
                  "gradients, then restores every state it touched; the runs are otherwise identical.",
                  "Negative shares are timing noise: the step costs less than the spread between repeats."],
        "machine": machine(device), "date": now(), "quick": quick, "tiny": tiny, "command": command(NAME, quick, tiny),
    }
