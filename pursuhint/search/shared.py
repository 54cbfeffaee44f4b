"""The work every trial shares, done once before the trials: the data set, the teacher (loaded or
trained, cached), its representations and every similarity matrix the space can ask for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..config import Config, config_from_text
from ..config.grammar import leaf_values
from ..data import ImageDataset
from ..infra.devices import place_model
from ..hints.hintset import HintSet
from ..hints.pipeline import SelectionInputs, prepare_selection
from ..models import create_model
from ..train.teacher import dataset_for, load_teacher


@dataclass
class SharedWork:
    """Shipped to every trial through Ray's object store (``tune.with_parameters``)."""

    config_yaml: str
    dataset: ImageDataset
    teacher_arch: str
    teacher_state: dict[str, torch.Tensor]
    teacher_sha256: str
    teacher_meta: dict[str, Any]
    selection: SelectionInputs
    default_hints: HintSet

    def teacher(self, device: torch.device) -> torch.nn.Module:
        """A frozen teacher in eval mode on ``device`` (in its memory format), rebuilt from the shipped weights."""
        model = create_model(self.teacher_arch, self.dataset.num_classes, in_channels=self.dataset.channels)
        model.load_state_dict(self.teacher_state)
        model = place_model(model, device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model


def metrics_in_space(cfg: Config) -> list[str]:
    """Every similarity measure the sweep may sample (or the configured one)."""
    return leaf_values(cfg, "selection.similarity")


def prepare_shared(config_yaml: str, progress: bool = True) -> SharedWork:
    """Load data and teacher, compute representations and matrices (cached on disk), once."""

    cfg = config_from_text(config_yaml)
    ds = dataset_for(cfg)
    teacher = load_teacher(cfg, ds=ds, progress=progress)
    sel = cfg.selection
    inputs = prepare_selection(teacher.model, teacher.arch, teacher.sha256, ds, metrics_in_space(cfg),
                               probe_size=cfg.data.probe_size, granularity=sel.granularity, preact=sel.preact,
                               rbf_max_samples=sel.rbf_max_samples, progress=progress)
    return SharedWork(config_yaml=config_yaml, dataset=ds, teacher_arch=teacher.arch,
                      teacher_state={k: v.detach().cpu() for k, v in teacher.model.state_dict().items()},
                      teacher_sha256=teacher.sha256, teacher_meta=teacher.meta, selection=inputs,
                      default_hints=inputs.default())
