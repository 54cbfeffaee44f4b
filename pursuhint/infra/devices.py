"""Where and how tensors run: the device (outside Ray: CUDA when present; inside a Ray trial or task: what
Ray assigned), the memory format, the autocast precision, cuDNN's autotuner, full-fp32 passes, and the
CUDA random-number states a checkpoint keeps.

Every CUDA decision is a small function of what torch and Ray report, so tests on a CPU-only machine can
patch ``torch.cuda`` and ``ray.get_gpu_ids`` and check each branch.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Any, Iterator, Optional

import torch
from torch import nn

from ..errors import DeviceError


def pick_device(requested: Optional[str] = None) -> torch.device:
    """Outside Ray: the requested device, else CUDA when present, else CPU."""
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _ray_worker() -> Any:
    """The ``ray`` module when this process is a Ray worker (a trial or a task), else None."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    try:
        return ray if ray.get_runtime_context().worker.mode == ray.WORKER_MODE else None
    except AttributeError:  # an older or newer Ray without these attributes: treat as not a worker
        return None


def ray_device(gpu_ids: list[Any]) -> torch.device:
    """The device for a Ray worker holding ``gpu_ids`` (``ray.get_gpu_ids()``): CPU when it holds none.

    Ray exposes a worker's GPUs through ``CUDA_VISIBLE_DEVICES``, so torch numbers them from 0; when
    that variable does not list the id (``RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES``), the id itself is
    torch's index. A worker that holds a GPU which torch cannot see fails rather than train on the CPU.
    """
    if not gpu_ids:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(
            f"Ray assigned GPU {', '.join(map(str, gpu_ids))} to this trial, but torch {torch.__version__} "
            f"(CUDA build: {torch.version.cuda or 'none'}) cannot see a CUDA device; install the torch build that "
            f"matches this node's NVIDIA driver, or set search.resources_per_trial.gpu to 0")
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    first = str(gpu_ids[0])
    index = visible.index(first) if first in visible else (0 if visible else int(first))
    # the current device too: code that asks CUDA without naming a device (memory queries, new streams, a
    # library's default) must land on this GPU, not on GPU 0, when every GPU of the node is visible
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def runtime_device(requested: Optional[str] = None) -> torch.device:
    """The device to train on here: inside a Ray worker what Ray assigned (never an uncounted GPU), else
    :func:`pick_device`."""
    ray = None if requested else _ray_worker()
    if ray is None:
        return pick_device(requested)
    return ray_device(list(ray.get_gpu_ids()))


def uses_channels_last(device: torch.device) -> bool:
    """channels_last on CUDA (cuDNN's fast NHWC kernels); CPU keeps the contiguous format."""
    return torch.device(device).type == "cuda"


def memory_format(device: torch.device) -> torch.memory_format:
    """The memory format of images and models on ``device``."""
    return torch.channels_last if uses_channels_last(device) else torch.contiguous_format


def place_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move ``model`` to ``device`` in that device's memory format (teacher and student alike, so cuDNN
    never reformats a model's weights or activations on each forward)."""
    model = model.to(device)
    if uses_channels_last(device):
        model = model.to(memory_format=torch.channels_last)
    return model


def autocast_dtype(device: torch.device) -> Optional[torch.dtype]:
    """bf16 on CUDA devices of compute capability 8.0 or newer (Ampere on), else None (full fp32).

    Older GPUs emulate bf16 slowly, and fp16 would need loss scaling that interacts badly with hint
    losses weighted by up to 10^4 (the scaled loss overflows and steps are skipped silently); fp32 is
    exact and needs no scaler, so pre-Ampere GPUs train in fp32.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    major, _minor = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else None


def autocast(device: torch.device) -> torch.autocast:
    """The autocast context for training and evaluation on ``device`` (:func:`autocast_dtype`)."""
    dtype = autocast_dtype(device)
    if dtype is None:
        return torch.autocast(torch.device(device).type if torch.device(device).type != "meta" else "cpu",
                              enabled=False)
    return torch.autocast("cuda", dtype=dtype)


def precision_name(device: torch.device) -> str:
    """``bf16`` or ``fp32``: what training on ``device`` computes in (for logs and benchmark tables)."""
    return "bf16" if autocast_dtype(device) == torch.bfloat16 else "fp32"


def configure_training(device: torch.device) -> bool:
    """Turn cuDNN's autotuner on for training on CUDA, unless deterministic algorithms were asked for
    (``torch.use_deterministic_algorithms(True)``, as determinism tests do). Returns the setting."""
    on = torch.device(device).type == "cuda" and not torch.are_deterministic_algorithms_enabled()
    torch.backends.cudnn.benchmark = on
    return on


@contextmanager
def full_fp32() -> Iterator[None]:
    """No TF32 inside: cuDNN convolutions and CUDA matmuls in full fp32 (the representation pass and the
    similarity measures), so a CPU and a GPU pick the same hints when layers are nearly tied."""
    backends = precision_backends()
    if backends:  # torch >= 2.9: the fp32_precision API (the legacy flags raise once it has been used)
        before = [b.fp32_precision for b in backends]
        for b in backends:
            b.fp32_precision = "ieee"
        try:
            yield
        finally:
            for b, value in zip(backends, before):
                b.fp32_precision = value
        return
    conv, mm = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = conv
        torch.backends.cuda.matmul.allow_tf32 = mm


def precision_backends() -> list[Any]:
    """The backends whose ``fp32_precision`` decides TF32 for convolutions and matmuls (torch >= 2.9); [] on
    older torch, where only the legacy ``allow_tf32`` flags exist."""
    conv = getattr(getattr(torch.backends.cudnn, "conv", None), "fp32_precision", None)
    mm = getattr(torch.backends.cuda.matmul, "fp32_precision", None)
    if conv is None or mm is None:
        return []
    return [torch.backends.cudnn.conv, torch.backends.cuda.matmul]


def numerics_tag(device: torch.device) -> str:
    """What could change a representation's numbers besides the teacher and the probe images: the device
    kind and the precision of the pass (part of the similarity cache key)."""
    device = torch.device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"cuda-sm{major}{minor}-fp32"
    return f"{device.type}-fp32"


def cuda_rng_states() -> list[torch.Tensor]:
    """The RNG state of every CUDA device torch has initialised ([] on a CPU-only run)."""
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return []
    return [s.cpu() for s in torch.cuda.get_rng_state_all()]


def restore_cuda_rng_states(states: Optional[list[torch.Tensor]]) -> None:
    """Restore :func:`cuda_rng_states`; a checkpoint from another number of GPUs restores what matches."""
    if not states or not torch.cuda.is_available():
        return
    for index, state in enumerate(states[: torch.cuda.device_count()]):
        torch.cuda.set_rng_state(state, index)


def assigned_gpu_fraction() -> Optional[float]:
    """The share of a GPU Ray gave this worker (0.25 for ``resources_per_trial.gpu: 0.25``; at most 1 per
    device); None outside a Ray worker or for a worker without a GPU."""
    ray = _ray_worker()
    if ray is None:
        return None
    try:
        gpu = float(ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0))
    except (AttributeError, TypeError, ValueError):  # a Ray without this API: no fraction known
        return None
    return min(gpu, 1.0) if gpu > 0 else None


def total_bytes(device: torch.device) -> Optional[int]:
    """A CUDA ``device``'s memory (None for the CPU)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return int(torch.cuda.mem_get_info(device)[1])


def free_bytes(device: torch.device) -> Optional[int]:
    """Free memory on a CUDA ``device`` (None for the CPU)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)
