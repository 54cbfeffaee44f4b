"""The teacher: load its checkpoint, or train it once and cache it by the content hash of its config."""

from __future__ import annotations

import functools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..data import ImageDataset, load_dataset, train_val_loaders
from ..infra.devices import place_model, runtime_device
from .loop import Callback, FitResult, fit, seed_everything
from ..errors import CheckpointError
from ..infra.paths import runs_dir  # noqa: F401 (re-exported: teacher.runs_dir)
from ..models import create_model, load_checkpoint, save_checkpoint, weights_sha256


@dataclass
class Teacher:
    """A trained teacher ready for hint selection: the model (eval mode), where it came from, its hash."""

    model: nn.Module
    arch: str
    checkpoint: Path
    sha256: str
    meta: dict[str, Any]


def dataset_for(cfg: Config) -> ImageDataset:
    """The data set the config names, with its sizes and subsets, in three splits: training, selection
    (``data.val_fraction`` of the training data) and test (the data set's held-out part). The splits depend
    on the config's ``seed`` only, never on a confirmation run's seed. ImageFolder splits stay memory-mapped
    unless ``data.memory_map`` is false."""
    d = cfg.data
    return _dataset(d.dataset, d.root, d.image_size, d.train_samples, d.val_samples, cfg.seed, d.val_fraction,
                    d.memory_map)


@functools.lru_cache(maxsize=1)
def _dataset(name: str, root: Optional[str], image_size: Optional[int], train_samples: Optional[int],
             val_samples: Optional[int], seed: int, val_fraction: float, memory_map: bool = True) -> ImageDataset:
    """The last data set loaded, kept: preflight loads it to check the splits, and the command that follows
    uses the same one instead of decoding it again."""
    return load_dataset(name, root=root, image_size=image_size, train_samples=train_samples,
                        val_samples=val_samples, seed=seed, val_fraction=val_fraction, memory_map=memory_map)


def teacher_cache_dir(cfg: Config) -> Path:
    """``runs/teachers/<hash>``: the same teacher config (arch, recipe, data, seed) maps to one folder."""
    key = cfg.section_hash("teacher.arch", "teacher.train", "data", "seed")
    return runs_dir() / "teachers" / f"{cfg.teacher.arch.replace(':', '_')}-{key}"


def train_teacher(cfg: Config, out_dir: Optional[Path] = None, *, ds: Optional[ImageDataset] = None,
                  device: Optional[torch.device] = None, progress: bool = True,
                  callbacks: Sequence[Callback] = ()) -> Path:
    """Train ``teacher.arch`` with ``teacher.train`` and write ``teacher.pt`` with its metadata.

    Checkpoints every epoch to ``train_state.pt`` and resumes from it after an interruption.
    Returns the final checkpoint's path.
    """
    out = Path(out_dir) if out_dir is not None else teacher_cache_dir(cfg)
    final = out / "teacher.pt"
    if final.exists():
        return final
    ds = ds if ds is not None else dataset_for(cfg)
    device = device or runtime_device()
    seed = cfg.teacher.train.run_seed(cfg.seed)
    seed_everything(seed)
    model = place_model(create_model(cfg.teacher.arch, ds.num_classes, in_channels=ds.channels), device)
    out.mkdir(parents=True, exist_ok=True)
    recipe = cfg.teacher.train
    train_loader, val_loader = train_val_loaders(ds, recipe.batch_size, augment=cfg.data.augment, device=device,
                                                 seed=seed, budget_gb=cfg.data.device_budget_gb)

    def ce(images: torch.Tensor, labels: torch.Tensor, _idx: torch.Tensor):
        logits = model(images)
        return logits, {"ce": F.cross_entropy(logits.float(), labels)}

    result: FitResult = fit({"model": model}, ce, recipe, train_loader=train_loader, val_loader=val_loader,
                            eval_model=model, device=device, checkpoint_path=out / "train_state.pt",
                            callbacks=callbacks, progress=progress, desc=f"teacher {cfg.teacher.arch}",
                            seed=seed)
    if result.status != "completed":
        raise CheckpointError(f"teacher training diverged: {result.message}")
    meta = {
        "arch": cfg.teacher.arch, "num_classes": ds.num_classes, "in_channels": ds.channels,
        "dataset": ds.name, "image_size": ds.image_size, "val_acc": result.final_val_acc,
        "best_val_acc": result.best_val_acc, "epochs": recipe.epochs, "seed": cfg.seed,
        "config_hash": cfg.section_hash("teacher.arch", "teacher.train", "data", "seed"),
    }
    sha = save_checkpoint(final, model, meta)
    meta["sha256"] = sha
    (out / "teacher.json").write_text(json.dumps(meta, indent=2))
    for leftover in ("train_state.pt", "train_state.pt.prev"):
        (out / leftover).unlink(missing_ok=True)
    return final


def load_teacher(cfg: Config, *, ds: Optional[ImageDataset] = None, device: Optional[torch.device] = None,
                 progress: bool = True) -> Teacher:
    """The config's teacher in eval mode: from ``teacher.checkpoint``, the cache, or trained now."""
    ds = ds if ds is not None else dataset_for(cfg)
    device = device or runtime_device()
    if cfg.teacher.checkpoint:
        path = Path(cfg.teacher.checkpoint).expanduser()
        if not path.is_file():
            raise CheckpointError(f"teacher.checkpoint {str(path)!r} does not exist; give the path of a "
                                  f"checkpoint for {cfg.teacher.arch}, or leave it empty to train one")
    else:
        path = train_teacher(cfg, ds=ds, device=device, progress=progress)
    model = create_model(cfg.teacher.arch, ds.num_classes, in_channels=ds.channels)
    meta = load_checkpoint(model, path, arch=cfg.teacher.arch)
    sha = weights_sha256(model.state_dict())
    model = place_model(model, device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return Teacher(model=model, arch=cfg.teacher.arch, checkpoint=path, sha256=sha, meta=dict(meta or {}))


def export_teacher(src: Path, dest: Path) -> Path:
    """Copy a trained teacher checkpoint (and its metadata file) to ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    side = src.with_suffix(".json")
    if side.exists():
        shutil.copyfile(side, dest.with_suffix(".json"))
    return dest
