"""Distillation step: what a hint-distillation step costs beyond its unavoidable parts.

ratio = (teacher forward + student forward/backward/step + CE, KD and hint losses through the real
taps and methods) / (the student's own training step + one teacher forward), per teacher → student
pair and method, at 32 px and batch 64, with the default hint points (the last block of each teacher
stage) paired to the student's stage ends, as ``train_student`` does.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from pursuhint.data import DeviceLoader
from pursuhint.distill import create_method, kd_loss, map_hints
from pursuhint.train.loop import autocast
from pursuhint.train.student import hint_weight_for, taps
from pursuhint.hints import candidate_layers, default_hints
from pursuhint.models import create_model

from .common import (CIFAR100_MEAN, CIFAR100_STD, cifar_like, command, interleaved, machine, now, pick_device,
                     ratio, seeded, table)

NAME = "distill_step"
TITLE = "Distillation step: overhead over the student's own step plus one teacher forward"
AIM = "≤ 1.2 for every pair and method"
BATCH = 64
PAIRS = (("resnet110", "resnet20"), ("wrn_40_2", "wrn_16_2"))
KD_WEIGHT, TEMPERATURE = 0.9, 4.0


def _settings(quick: bool, tiny: bool) -> dict[str, Any]:
    if tiny:
        return {"pairs": (("resnet20", "resnet8"),), "methods": ("at",), "steps": 1, "repeats": 2}
    if quick:
        return {"pairs": PAIRS, "methods": ("at",), "steps": 1, "repeats": 7}
    return {"pairs": PAIRS, "methods": ("at", "fitnet"), "steps": 2, "repeats": 9}


class _Pair:
    """A teacher, a student, the default hint pairs between them and a batch source."""

    def __init__(self, t_arch: str, s_arch: str, device: torch.device) -> None:
        self.device = device
        fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
        with seeded(0):
            self.teacher = create_model(t_arch, 100).to(device, memory_format=fmt).eval()
            self.student = create_model(s_arch, 100).to(device, memory_format=fmt).train()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        shape = (3, 32, 32)
        t_layers = candidate_layers(self.teacher, input_shape=shape)
        s_layers = candidate_layers(self.student, input_shape=shape)
        chosen = [t_layers[i] for i in default_hints(t_layers).indices]
        self.pairs = map_hints(chosen, s_layers, "auto")
        x, y = cifar_like(8 * BATCH, seed=2)
        loader = DeviceLoader(x, y, BATCH, train=True, augment="crop_flip", mean=CIFAR100_MEAN, std=CIFAR100_STD,
                              device=device, seed=0)
        self.batches = itertools.cycle(list(loader))  # made once: the data pipeline is not what is measured
        self.student_opt = _sgd(self.student.parameters())

    def method(self, name: str) -> tuple[nn.Module, torch.optim.Optimizer, float]:
        s_shapes = [(s.channels, *s.spatial) for _, s in self.pairs]
        t_shapes = [(t.channels, *t.spatial) for t, _ in self.pairs]
        method = create_method(name, s_shapes, t_shapes).to(self.device)
        opt = _sgd(itertools.chain(self.student.parameters(), method.parameters()))
        return method, opt, hint_weight_for(name, None)

    def teacher_forward(self, steps: int) -> Callable[[], None]:
        def go() -> None:
            for _ in range(steps):
                images, _ = next(self.batches)
                with torch.no_grad(), autocast(self.device):
                    self.teacher(images)
        return go

    def student_step(self, steps: int) -> Callable[[], None]:
        def go() -> None:
            for _ in range(steps):
                images, labels = next(self.batches)
                with autocast(self.device):
                    loss = F.cross_entropy(self.student(images).float(), labels)
                _step(self.student_opt, loss)
        return go

    def distill_step(self, name: str, steps: int) -> Callable[[], None]:
        method, opt, weight = self.method(name)
        t_names = [t.name for t, _ in self.pairs]
        s_names = [s.name for _, s in self.pairs]

        def go() -> None:
            with taps(self.teacher, t_names) as t_taps, taps(self.student, s_names) as s_taps:
                for _ in range(steps):
                    images, labels = next(self.batches)
                    with autocast(self.device):
                        with torch.no_grad():
                            logits_t = self.teacher(images)
                        logits_s = self.student(images)
                        loss = (F.cross_entropy(logits_s.float(), labels)
                                + KD_WEIGHT * kd_loss(logits_s.float(), logits_t.float(), TEMPERATURE)
                                + weight * method(s_taps.outputs, t_taps.outputs)["hint"])
                    _step(opt, loss)
        return go


def _sgd(params) -> torch.optim.Optimizer:
    """The CRD benchmark's optimiser (a small lr keeps random-label training finite for the whole run)."""
    return torch.optim.SGD(list(params), lr=0.005, momentum=0.9, weight_decay=5e-4)


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """What the trainer does with a loss: a finiteness check (a sync), zero_grad, backward, step, log."""
    bool(torch.isfinite(loss.detach()))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    float(loss.detach())


def run(quick: bool, tiny: bool = False) -> dict[str, Any]:
    """Median step times of distillation, the student alone and the teacher alone; headline = worst ratio."""
    cfg = _settings(quick, tiny)
    device = pick_device()
    steps = cfg["steps"]
    results = []
    for t_arch, s_arch in cfg["pairs"]:
        pair = _Pair(t_arch, s_arch, device)
        fns = {f"distill:{m}": pair.distill_step(m, steps) for m in cfg["methods"]}
        fns["student"] = pair.student_step(steps)
        fns["teacher"] = pair.teacher_forward(steps)
        timed = interleaved(fns, cfg["repeats"], warmup=1, device=device)
        ms = {k: 1000 * v["median_s"] / steps for k, v in timed.items()}
        fast = {k: v["min_s"] for k, v in timed.items()}
        for m in cfg["methods"]:
            results.append({
                "teacher": t_arch, "student": s_arch, "method": m,
                "hint_pairs": [[t.name, s.name] for t, s in pair.pairs],
                "distill_ms": ms[f"distill:{m}"], "student_step_ms": ms["student"], "teacher_forward_ms": ms["teacher"],
                "ratio": ratio(ms[f"distill:{m}"], ms["student"] + ms["teacher"]),
                "ratio_fastest": ratio(fast[f"distill:{m}"], fast["student"] + fast["teacher"]),
                "samples_s": {k: timed[k]["times_s"] for k in (f"distill:{m}", "student", "teacher")},
            })
        del pair
    worst = max(results, key=lambda r: r["ratio"])
    rows = [[f"{r['teacher']} → {r['student']}", r["method"], r["distill_ms"], r["student_step_ms"],
             r["teacher_forward_ms"], r["student_step_ms"] + r["teacher_forward_ms"], r["ratio"], r["ratio_fastest"]]
            for r in results]
    return {
        "title": TITLE, "aim": AIM, "ratio": worst["ratio"],
        "ratio_definition": "distillation step ÷ (student step + teacher forward), the worst over pairs and "
                            f"methods ({worst['teacher']} → {worst['student']}, {worst['method']})",
        "aim_met": bool(worst["ratio"] <= 1.2),
        "figures": {"results": results, "batch": BATCH, "steps_per_sample": steps, "repeats": cfg["repeats"]},
        "tables": [table(f"Milliseconds per step, batch {BATCH} at 32 px (median of {cfg['repeats']} interleaved "
                         f"repeats of {steps} steps after a warm-up)",
                         ["pair", "method", "distillation step", "student step", "teacher forward",
                          "student + teacher", "ratio", "ratio of fastest repeats"], rows)],
        "notes": [
            "Randomly initialised models with CIFAR-100 heads on random CIFAR-shaped batches (augmented once, "
            "before timing): step cost does not depend on the weights.",
            "Distillation step = teacher forward under no_grad + student forward + CE + KD (T = 4) + the method's "
            "hint loss over the default hint pairs through forward hooks (pursuhint.train.student.taps), "
            "then backward and an SGD step over the student and the method's learnable parts; the student "
            "step is forward + CE + backward + SGD step; both include the trainer's finiteness check.",
            "The hint weight is the CRD benchmark's for the method (at 1000, fitnet 100); weights do not change cost.",
        ],
        "machine": machine(device), "date": now(), "quick": quick, "tiny": tiny,
        "command": command(NAME, quick, tiny),
    }
