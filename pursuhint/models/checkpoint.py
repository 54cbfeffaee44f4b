"""Model checkpoints: safe loading of the benchmark's formats, strict loading with clear errors,
atomic saving, and a device-independent hash of the weights."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import CheckpointError
from ..infra.fileio import save_torch_atomic

_FEW = 5  # how many offending keys an error message lists


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _strip_module_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the ``module.`` that DataParallel/DDP put before every key."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _read(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not exist or is not a file; give the path of a saved model"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load fails in many ways (zip, pickle, KeyError, …) on a bad file
        first = str(exc).strip().split("\n")[0].split(". ")[0][:100]
        reason = f"{type(exc).__name__}: {first}".rstrip(": .")
        raise CheckpointError(
            f"checkpoint {str(path)!r} is unreadable: it is truncated, not a torch checkpoint, "
            f"or holds objects other than tensors ({reason})"
        ) from None


def _split(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state_dict, metadata) from a raw state_dict, ``{"model": ...}`` or ``{"state_dict": ...}``."""
    if _is_state_dict(obj):
        return _strip_module_prefix(obj), {}
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if key in obj and _is_state_dict(obj[key]):
                return _strip_module_prefix(obj[key]), _metadata(obj)
    raise CheckpointError(
        f"checkpoint {str(path)!r} holds no model weights; expected a state_dict, "
        "{'model': state_dict} or {'state_dict': state_dict}"
    )


def _metadata(obj: Mapping) -> dict:
    """Our ``meta`` entry, else the benchmark's scalar entries (e.g. ``epoch``, ``best_acc``)."""
    meta = obj.get("meta")
    if isinstance(meta, Mapping):
        return dict(meta)
    out: dict = {}
    for key, value in obj.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(key, str) and isinstance(value, (str, int, float, bool)):
            out[key] = value
    return out


def _check_plain(value: Any, where: str) -> None:
    """Metadata must survive ``weights_only=True`` loading: str, int, float, bool, None, lists, tuples
    and str-keyed dicts of them."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CheckpointError(f"checkpoint metadata key {key!r} at {where} is not a string; use string keys")
            _check_plain(item, f"{where}.{key}")
        return
    raise CheckpointError(
        f"checkpoint metadata {where} is a {type(value).__name__}; use str, int, float, bool, None, lists or dicts"
    )


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The state_dict in ``path`` (on CPU, ``module.`` prefix removed), read with ``weights_only=True``."""
    path = Path(path)
    return _split(_read(path), path)[0]


def _mismatch_message(model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, arch: str | None) -> str | None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) ({', '.join(missing[:_FEW])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) ({', '.join(unexpected[:_FEW])})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es), checkpoint vs model ({'; '.join(shapes[:_FEW])})")
    target = f"architecture {arch!r}" if arch else f"model {type(model).__name__}"
    return f"checkpoint {str(path)!r} does not fit {target}: {', '.join(parts)}"


def load_checkpoint(model: nn.Module, path: str | Path, arch: str | None = None) -> dict:
    """Load ``path`` into ``model`` strictly (onto the model's device); returns the checkpoint's metadata."""
    path = Path(path)
    state, meta = _split(_read(path), path)
    problem = _mismatch_message(model, state, path, arch)
    if problem:
        raise CheckpointError(problem)
    model.load_state_dict(state, strict=True)
    return meta


def weights_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over keys (sorted), dtypes, shapes and CPU bytes: the same on every device and after save/load."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_checkpoint(path: str | Path, model_or_state: nn.Module | Mapping[str, torch.Tensor], metadata: dict) -> str:
    """Write ``{"model": state_dict, "meta": metadata}`` atomically (temp file + rename); return the weights' sha256."""
    path = Path(path)
    _check_plain(dict(metadata), "meta")
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    state = {k: v.detach().to("cpu") for k, v in _strip_module_prefix(state).items()}
    save_torch_atomic({"model": state, "meta": dict(metadata)}, path)
    return weights_sha256(state)
