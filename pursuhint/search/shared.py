"""The work every trial shares, done once before the trials: the data set, the teacher (loaded or
trained, cached), its representations and every similarity matrix the space can ask for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..config import AUTO_COHORT_MAX, Config, config_from_text
from ..config.grammar import leaf_values
from ..data import ImageDataset
from ..infra.devices import place_model, total_bytes
from ..hints.hintset import HintSet
from ..hints.pipeline import SelectionInputs, prepare_selection
from ..models import create_model
from ..train.cohort_memory import auto_cohort_size
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
    auto_cohort: int = AUTO_COHORT_MAX  # students per confirmation trial for cohort: auto (what fits on its GPU)

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
                      default_hints=inputs.default(), auto_cohort=cohort_fit(cfg, ds, teacher.model))


def cohort_fit(cfg: Config, ds: ImageDataset, teacher: torch.nn.Module) -> int:
    """Students per confirmation trial for ``cohort: auto``: what fits a trial's share of this task's GPU (the
    shared task runs on a GPU whenever the trials do), or :data:`AUTO_COHORT_MAX` on the CPU."""
    fraction = cfg.search.resources_per_trial.gpu
    if fraction <= 0 or not torch.cuda.is_available():
        return AUTO_COHORT_MAX
    student = create_model(cfg.student.arch, ds.num_classes, in_channels=ds.channels)
    return auto_cohort_size(student, teacher, tuple(ds.train_x.shape[1:]), cfg.train.batch_size,
                            total_bytes(torch.device("cuda", torch.cuda.current_device())), fraction)
