"""Step syncs: training steps per second with the loss bookkeeping on the device (what ``fit`` does now) ÷
with a host read of every loss term, the correct count and a finiteness check after each step (what it
did before). On a GPU each host read stalls the queue; on the CPU it costs little.

The same resnet56 → resnet20 AT distillation step on CIFAR-shaped batches (32 px, batch 64) runs in both
variants, interleaved; only the per-step bookkeeping differs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from pursuhint.infra.devices import autocast, configure_training, place_model, precision_name
from pursuhint.train.loop import FINITE_CHECK_EVERY, EpochSums
from pursuhint.distill.methods import create_method
from pursuhint.hints import candidate_layers
from pursuhint.train.student import taps
from pursuhint.models import create_model

from .common import CIFAR100_MEAN, CIFAR100_STD, cifar_like, command, interleaved, machine, now, pick_device, ratio, seeded, table
from pursuhint.data import DeviceLoader

NAME = "step_syncs"
TITLE = "Step syncs: device-side loss bookkeeping vs a host read after every step"
AIM = "no slower (ratio ≥ 0.98, the timing noise); a gain where the host reads stall a queue the device runs ahead on"
TEACHER, STUDENT = "resnet56", "resnet20"


def _setup(device: torch.device, n_images: int):
    with seeded(0):
        teacher = place_model(create_model(TEACHER, 100), device).eval()
        student = place_model(create_model(STUDENT, 100), device)
    shape = (3, 32, 32)
    t_names = [l.name for l in candidate_layers(teacher, input_shape=shape) if l.index in (8, 17, 26)]
    s_layers = candidate_layers(student, input_shape=shape)
    s_names = [s_layers[i].name for i in (2, 5, 8)]
    s_shapes = [(s_layers[i].channels, *s_layers[i].spatial) for i in (2, 5, 8)]
    t_all = {l.name: l for l in candidate_layers(teacher, input_shape=shape)}
    t_shapes = [(t_all[n].channels, *t_all[n].spatial) for n in t_names]
    method = create_method("at", s_shapes, t_shapes).to(device)
    x, y = cifar_like(n_images, seed=1)
    loader = DeviceLoader(x, y, 64, train=True, augment="crop_flip", mean=CIFAR100_MEAN, std=CIFAR100_STD,
                          device=device)
    opt = torch.optim.SGD(list(student.parameters()) + list(method.parameters()), lr=0.05, momentum=0.9)
    return teacher, student, method, t_names, s_names, loader, opt


def _epoch(device, parts, host_reads: bool) -> int:
    teacher, student, method, t_names, s_names, loader, opt = parts
    steps = 0
    with taps(teacher, t_names) as tt, taps(student, s_names) as st:
        sums = EpochSums(device)
        host: dict[str, float] = {}
        correct = 0
        for step, (images, labels) in enumerate(loader, 1):
            with autocast(device):
                with torch.no_grad():
                    logits_t = teacher(images)
                logits = student(images)
                terms = {"ce": F.cross_entropy(logits.float(), labels),
                         "kd": 0.9 * F.kl_div(F.log_softmax(logits.float() / 4, 1), F.softmax(logits_t.float() / 4, 1),
                                              reduction="batchmean"),
                         "hint": 1000.0 * method(st.outputs, tt.outputs)["hint"]}
            total = sum(terms.values())
            if host_reads and not torch.isfinite(total.detach()):  # the old per-step check: a sync
                raise FloatingPointError("diverged")
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            if host_reads:
                for k, v in terms.items():
                    host[k] = host.get(k, 0.0) + float(v.detach()) * labels.numel()
                correct += int((logits.detach().argmax(1) == labels).sum())
            else:
                sums.add(total, terms, logits, labels)
                if step % FINITE_CHECK_EVERY == 0 and not sums.finite():
                    raise FloatingPointError("diverged")
            steps += 1
        if not host_reads:
            sums.read()
    return steps


def measure(device: torch.device, n_images: int, repeats: int) -> dict[str, Any]:
    """Median epoch seconds of both variants (interleaved) and steps per second of each."""
    configure_training(device)
    parts = _setup(device, n_images)
    steps = len(parts[5])
    times = interleaved({"device_side": lambda: _epoch(device, parts, False),
                         "host_reads": lambda: _epoch(device, parts, True)}, repeats=repeats, device=device)
    dev_sps = steps / times["device_side"]["median_s"]
    host_sps = steps / times["host_reads"]["median_s"]
    return {"device": str(device), "precision": precision_name(device), "images": n_images, "steps_per_epoch": steps,
            "device_side_steps_per_s": dev_sps, "host_reads_steps_per_s": host_sps,
            "ratio": ratio(dev_sps, host_sps), "times": times}


def run(quick: bool, tiny: bool = False) -> dict[str, Any]:
    device = pick_device()
    n = 640 if tiny else (1280 if quick or device.type == "cpu" else 10_240)
    m = measure(device, n, repeats=3 if quick or tiny else 5)
    return {
        "title": TITLE, "aim": AIM, "ratio": m["ratio"], "skipped": False,
        "ratio_definition": "steps/s with device-side bookkeeping ÷ steps/s with host reads after every step",
        "aim_met": m["ratio"] >= 0.98,
        "figures": m,
        "tables": [table(f"{TEACHER} → {STUDENT}, AT + KD, batch 64, 32 px, {m['images']:,} images per epoch "
                         f"({m['device']}, {m['precision']})",
                         ["variant", "steps/s", "median epoch s"],
                         [["device-side sums, finiteness every %d steps" % FINITE_CHECK_EVERY,
                           m["device_side_steps_per_s"], m["times"]["device_side"]["median_s"]],
                          ["host read after every step", m["host_reads_steps_per_s"], m["times"]["host_reads"]["median_s"]]])],
        "notes": ["Both variants run the same forward, backward and SGD step; only the bookkeeping differs."],
        "machine": machine(device), "date": now(), "quick": quick, "tiny": tiny, "command": command(NAME, quick, tiny),
    }
