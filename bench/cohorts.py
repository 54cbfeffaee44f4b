"""Cohorts: the arms of one confirmation seed trained together (one loader pass per epoch, one teacher forward per
batch) against the same arms trained one after another, as separate trials train them. Ratios in one run,
the separate arms and the cohort alternating; the final weights of every arm must be equal bit for bit.

With a teacher forward of t, a student step of s and k members, the bound is k(t + s) / (t + k·s): the cohort
pays the teacher (and the loader) once. t is measured alone (the teacher's forward over one epoch's batches),
s as a separate arm's epoch less t. When only m of the k arms run the teacher (the CE-only student does not),
the arms one after another take T = Σ arms and a cohort at best T − (m − 1)·t: the bound is
T / (T − (m − 1)·t). Per-trial set-up that a cohort also pays once (a Tune trial's actor, the
teacher's rebuild, the MLflow run) is not in these figures: they are the trainer's alone.

Pairs (randomly initialised models, one torch thread, batch 64; the time does not depend on the weights):
- the demo's: digits 16 px, ResNet-56 → ResNet-8, 4 arms (AT through the default hints, AT through uniform
  hints, KD only, the CE-only student);
- CIFAR-shaped: 32 px random images, ResNet-56 → ResNet-20, 5 arms (the same and FitNet through the default
  hints);
- on a GPU: ResNet-110 → ResNet-20, CIFAR-shaped, the same 5 arms.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from pursuhint.config import config_from_text
from pursuhint.data import train_val_loaders
from pursuhint.train.student import CohortMember, train_cohort, train_student
from pursuhint.hints.hintset import uniform_hints
from pursuhint.hints.layers import candidate_layers
from pursuhint.hints.pipeline import teacher_default_hints
from pursuhint.infra.devices import autocast, place_model
from pursuhint.models import create_model
from pursuhint.train.teacher import dataset_for

from .common import Progress, cifar_dataset, command, machine, now, pick_device, seeded, table, threads

NAME = "cohorts"
TITLE = "Cohorts: the arms of one seed trained together vs one after another"
AIM = "at least 0.9 of the bound k(t + s) / (t + k·s) on each pair, the weights equal bit for bit"

DIGITS = """
seed: 1
data: {dataset: digits, image_size: 16}
teacher: {arch: resnet56}
student: {arch: resnet8}
distill: {method: at, hint_weight: auto}
train: {epochs: 1, batch_size: 64, lr: 0.05, lr_schedule: cosine}
"""


def _pair(teacher_arch: str, student: str, images: int | None, epochs: int, device: torch.device,
          tiny: bool = False):
    text = DIGITS.replace("resnet56", teacher_arch).replace("resnet8}", f"{student}}}")
    if images is not None:
        text = text.replace("data: {dataset: digits, image_size: 16}\n", "")
    cfg = config_from_text(text).with_values({"train.epochs": epochs})
    if tiny and images is None:  # the smoke test's size: 320 digits, 120 to validate on
        cfg = cfg.with_values({"data.train_samples": 320, "data.val_samples": 120})
    # tiny: a validation set at most the training set's size (each arm evaluates it every epoch; the smoke test
    # checks the arithmetic and the equality, not the seconds)
    ds = dataset_for(cfg) if images is None else cifar_dataset(images, val=min(images, 1000) if tiny else 1000)
    with seeded(0):
        teacher = create_model(teacher_arch, ds.num_classes, in_channels=ds.channels).to(device).eval()
    return cfg, ds, teacher


def arms(cfg, ds, teacher, teacher_arch: str, k: int) -> list[tuple[Any, Any]]:
    """The pair's ``k`` arms: (config, hint set)."""
    default = teacher_default_hints(teacher, teacher_arch, None, ds)
    layers = candidate_layers(teacher, "block", input_shape=(ds.channels, ds.image_size, ds.image_size))
    uniform = uniform_hints(layers, default.n_hints)
    out = [(cfg, default), (cfg, uniform), (cfg.with_values({"distill.method": "kd_only", "distill.kd_weight": 0.9,
                                                             "distill.ce_weight": 0.1}), None),
           (cfg.with_values({"distill.method": "none", "distill.kd_weight": 0.0}), None),
           (cfg.with_values({"distill.method": "fitnet"}), default)]
    return out[:k]


def teacher_epoch_s(cfg, ds, teacher, device: torch.device) -> float:
    """Seconds of the teacher's forward over one epoch's batches (no_grad), the loader's time excluded: as the
    trainer runs it (the device's memory format and autocast precision, after a warm-up batch). On a lent H200 a
    bare fp32 forward, cuDNN's first choices included, took longer than an arm's whole training."""
    loader, _ = train_val_loaders(ds, cfg.train.batch_size, augment=cfg.data.augment, device=device,
                                  seed=cfg.run_seed)
    batches = [images for images, _ in loader]
    place_model(teacher, device)
    with torch.no_grad(), autocast(device):
        teacher(batches[0])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    with torch.no_grad(), autocast(device):
        for images in batches:
            teacher(images)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def measure(teacher_arch: str, student: str, images: int | None, k: int, epochs: int, repeats: int,
            device: torch.device, tiny: bool = False) -> dict[str, Any]:
    """Median seconds of the k arms trained one after another and as one cohort (alternating), the teacher's
    epoch, the bound, and whether every arm's final weights are equal."""
    cfg, ds, teacher = _pair(teacher_arch, student, images, epochs, device, tiny)
    plan = arms(cfg, ds, teacher, teacher_arch, k)
    members = [CohortMember(c, h) for c, h in plan]
    separate_s, cohort_s, teacher_s = [], [], []
    exact = True
    if device.type == "cuda":  # warm-up, untimed: else the first side timed pays cuDNN's autotuning and the
        # allocator's first blocks (on a lent H200 the tiny run's first pairs read 33× and 17× against bounds of 3×)
        train_cohort(members, teacher, ds, device=device)
    for i in range(repeats):
        for side in (("separate", "cohort") if i % 2 == 0 else ("cohort", "separate")):
            t0 = time.perf_counter()
            if side == "separate":
                alone = [train_student(c, h, teacher, ds, device=device) for c, h in plan]
                separate_s.append(time.perf_counter() - t0)
            else:
                together = train_cohort(members, teacher, ds, device=device)
                cohort_s.append(time.perf_counter() - t0)
        teacher_s.append(teacher_epoch_s(cfg, ds, teacher, device) * epochs)
        exact = exact and all(_same(a, b) for a, b in zip(alone, together))
    sep, coh, t = (sorted(v)[len(v) // 2] for v in (separate_s, cohort_s, teacher_s))
    m = sum(1 for c, h in plan if needs_teacher(c, h))
    figures = bound_figures(sep, coh, t, k, m)
    return {"arms": k, "teacher_arms": m, "epochs": epochs, "images": int(ds.train_x.shape[0]), "separate_s": sep,
            "cohort_s": coh, "teacher_s": t, **figures,
            "arm_seeds_per_hour_separate": 3600 * k / sep,
            "arm_seeds_per_hour_cohort": 3600 * k / coh, "cpu_s_per_arm_seed_separate": sep / k,
            "cpu_s_per_arm_seed_cohort": coh / k, "exact": exact, "repeats": repeats,
            "methods": [c.distill.method for c, _ in plan]}


def needs_teacher(cfg, hint_set) -> bool:
    """Whether an arm runs the teacher alone: KD, hints or a method on the logits (not the CE-only student)."""
    return bool(cfg.distill.kd_weight > 0 or hint_set is not None or cfg.distill.method not in ("none", "kd_only"))


def bound_figures(sep: float, coh: float, t: float, k: int, m: int) -> dict[str, float]:
    """The bound and the ratios from the measured seconds: k arms one after another take ``sep``, m of them run the
    teacher (t each); a cohort runs it once, so at best it takes sep − (m − 1)·t. With every arm a teacher's
    (m = k) and s = sep / k − t, that is k(t + s) / (t + k·s)."""
    best = sep - max(m - 1, 0) * t
    speedup = sep / coh
    return {"student_s": (sep - m * t) / k, "teacher_share": t / (sep / k), "bound": sep / best,
            "speedup": speedup, "of_bound": speedup / (sep / best)}


def _same(a, b) -> bool:
    sa, sb = a.student.state_dict(), b.student.state_dict()
    if a.student.parameters().__next__().device.type == "cuda":  # CUDA kernels may differ in the last bits
        return all(torch.allclose(sa[n].float(), sb[n].float(), atol=1e-4) for n in sa)
    return all(torch.equal(sa[n], sb[n]) for n in sa) and \
        [h.val_acc for h in a.fit.history] == [h.val_acc for h in b.fit.history]


def run(quick: bool, tiny: bool = False) -> dict[str, Any]:
    device = pick_device()
    repeats = 1 if tiny else (2 if quick else 3)
    pairs = {"digits resnet56 → resnet8, 16 px": ("resnet56", "resnet8", None, 4, 1 if tiny else 2),
             "CIFAR-shaped resnet56 → resnet20, 32 px": ("resnet56", "resnet20", 128 if tiny else
                                                         (2_000 if quick else 5_000), 5, 1)}
    if device.type == "cuda":
        # tiny: `make gpu-check`'s form, within its budget (2 000 images: enough batches to time)
        pairs["CIFAR-shaped resnet110 → resnet20, 32 px (GPU)"] = ("resnet110", "resnet20", 2_000 if tiny else
                                                                   10_000, 5, 1)
    figures = {}
    say = Progress(NAME)
    with threads(1):
        for name, (t_arch, s_arch, images, k, epochs) in pairs.items():
            say(f"{name}: {k} arms apart and as one cohort, {repeats} time(s)")
            figures[name] = measure(t_arch, s_arch, images, k, epochs, repeats, device, tiny)
    worst = min(f["of_bound"] for f in figures.values())
    return {
        "title": TITLE, "aim": AIM, "ratio": float(f"{min(f['speedup'] for f in figures.values()):.4g}"),
        "ratio_definition": "the smallest speed-up over the pairs: the arms one after another ÷ the same arms as "
                            "one cohort (wall seconds, one thread)",
        "aim_met": bool(worst >= 0.9 and all(f["exact"] for f in figures.values())),
        "figures": figures,
        "tables": [table("The arms of one seed: one after another vs one cohort (median seconds, one thread)",
                         ["pair", "arms (with teacher)", "one after another s", "cohort s", "speed-up", "bound",
                          "of the bound", "teacher share of an arm", "arm-seeds/h apart → cohort",
                          "CPU-s per arm-seed apart → cohort", "weights equal"],
                         [[name, f"{f['arms']} ({f['teacher_arms']})", f["separate_s"], f["cohort_s"],
                           f"{f['speedup']:.2f}×",
                           f"{f['bound']:.2f}×", f"{f['of_bound']:.2f}", f"{100 * f['teacher_share']:.0f} %",
                           f"{f['arm_seeds_per_hour_separate']:.0f} → {f['arm_seeds_per_hour_cohort']:.0f}",
                           f"{f['cpu_s_per_arm_seed_separate']:.1f} → {f['cpu_s_per_arm_seed_cohort']:.1f}",
                           "bitwise" if f["exact"] and device.type == "cpu" else f["exact"]]
                          for name, f in figures.items()])],
        "notes": ["The bound is T / (T − (m − 1)·t): T the k arms' seconds one after another, t the teacher's "
                  "forward over the epochs' batches timed alone, m the arms that run the teacher (the CE-only "
                  "student does not); with m = k it is k(t + s) / (t + k·s), s an arm's seconds less t. The "
                  "loader's pass is shared too, so a cohort may beat the bound slightly.",
                  "Not counted: a Tune trial's own set-up (its actor, the teacher's rebuild, the MLflow run), "
                  "which a cohort of k arms pays once instead of k times."],
        "machine": machine(device), "date": now(), "quick": quick, "tiny": tiny, "command": command(NAME, quick, tiny),
    }
