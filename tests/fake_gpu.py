"""A fake GPU for cluster tests on a CPU machine (a node started with ``ray start --num-gpus 1``).

Named under ``plugins:`` in a sweep's config, this module is imported by every Ray worker of the sweep (the shared
work's task and each trial) before it picks its device. Where ``PURSUHINT_FAKE_GPU_LOG`` names a folder (set in
the node's environment, so only its workers see it), it replaces ``pursuhint.infra.devices.ray_device`` — the one
place a worker turns what Ray assigned it into a torch device — by a function that writes down what Ray gave the
worker (``ray.get_gpu_ids()``, its assigned resources) in a file of its own there and returns the CPU. Nothing else
needs patching: every other CUDA decision asks torch, which on this machine sees no CUDA device.

With ``PURSUHINT_FAKE_GPU_TRIALS=n`` a trial also waits there (up to ``WAIT_S``) until n trials have arrived, and
its record says whether they all did (``met``): trials that met held their GPU shares at the same time."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from pursuhint.infra import devices

LOG_ENV = "PURSUHINT_FAKE_GPU_LOG"
TRIALS_ENV = "PURSUHINT_FAKE_GPU_TRIALS"
WAIT_S = 90.0


def _write(path: Path, record: dict[str, Any]) -> None:
    """``record`` as ``path``, whole or not at all (another worker may be reading the folder)."""
    part = path.with_suffix(".part")
    part.write_text(json.dumps(record))
    part.replace(path)


def _trials_here(folder: Path) -> int:
    return sum(json.loads(p.read_text())["actor"] for p in folder.glob("*.json"))


def ray_device(gpu_ids: list[Any]) -> torch.device:
    """The CPU, whatever Ray assigned; what it assigned is written to ``$PURSUHINT_FAKE_GPU_LOG/<pid>-<ns>.json``."""
    import ray  # ray: a worker has it imported already

    context = ray.get_runtime_context()
    try:
        trial_id = ray.tune.get_context().get_trial_id()
    except Exception:  # noqa: BLE001 - not a Tune trial (the shared work's task)
        trial_id = None
    record = {"pid": os.getpid(), "time": time.time(), "gpu_ids": [str(i) for i in gpu_ids],
              "resources": context.get_assigned_resources(), "actor": context.get_actor_id() is not None,
              "trial_id": trial_id, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    folder = Path(os.environ[LOG_ENV])
    path = folder / f"{os.getpid()}-{time.time_ns()}.json"
    _write(path, record)
    expected = int(os.environ.get(TRIALS_ENV, "0"))
    if record["actor"] and expected:
        end = time.time() + WAIT_S
        while _trials_here(folder) < expected and time.time() < end:
            time.sleep(0.2)
        _write(path, {**record, "met": _trials_here(folder) >= expected})
    return torch.device("cpu")


if os.environ.get(LOG_ENV):  # a worker of a fake-GPU node; the driver (and any other process) is left alone
    devices.ray_device = ray_device
