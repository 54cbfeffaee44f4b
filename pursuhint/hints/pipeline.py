"""From a trained teacher to hint sets: candidate layers, one probe pass, similarity matrices (cached).

The expensive work (representations, L × L matrices) is done once per (teacher sha256, probe set,
granularity, measure) and stored under ``runs/cache/``; choosing hints from a matrix takes
milliseconds, so sweeps call :func:`choose_hints` per trial on prepared :class:`SelectionInputs`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import torch
from torch import nn

from ..data import ImageDataset, probe_images, probe_loader
from ..infra.devices import numerics_tag
from ..errors import HintSetError, PursuhintError
from ..infra.fileio import save_torch_atomic, write_text_atomic
from ..models import create_model, model_block_stages
from ..infra.paths import runs_dir
from .hintset import HintSet, default_hints, random_hints, select_hints, uniform_hints
from .layers import CandidateLayer, candidate_layers
from .representations import layer_representations
from .similarity import SimilarityMatrix, similarity_matrix

_log = logging.getLogger("pursuhint.hints")


@dataclass
class SelectionInputs:
    """Everything a trial needs to choose hints: candidates and one similarity matrix per measure."""

    layers: list[CandidateLayer]
    matrices: dict[str, SimilarityMatrix]
    teacher_arch: str
    teacher_sha256: str
    granularity: str
    probe_size: int
    probe_key: str
    cache_hits: dict[str, bool] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def default(self) -> HintSet:
        """The baseline: the last candidate of each teacher stage."""
        hs = default_hints(self.layers)
        return self.stamp(hs)

    def uniform(self, k: int) -> HintSet:
        """Baseline: K evenly spaced candidates (the middle of each of K equal slices of depth)."""
        return self.stamp(uniform_hints(self.layers, k))

    def random(self, k: int, seed: int) -> HintSet:
        """Baseline: K distinct candidates drawn with ``seed``; each seed draws anew."""
        return self.stamp(random_hints(self.layers, k, seed))

    def stamp(self, hs: HintSet) -> HintSet:
        """``hs`` with this teacher's identity, granularity and probe size (every hint set the trial uses)."""
        hs.teacher_arch = self.teacher_arch
        hs.teacher_sha256 = self.teacher_sha256
        hs.granularity = self.granularity
        hs.probe_size = self.probe_size
        return hs


def cache_root() -> Path:
    """``$PURSUHINT_RUNS/cache`` (default ``./runs/cache``)."""
    return runs_dir() / "cache"


def probe_key(images: torch.Tensor) -> str:
    """Content hash of the probe images: the same images give the same key wherever they came from."""
    h = hashlib.sha256()
    h.update(str(tuple(images.shape)).encode())
    h.update(images.contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _tag(granularity: str, preact: bool) -> str:
    g = granularity if granularity == "block" else "pattern-" + hashlib.sha256(granularity.encode()).hexdigest()[:10]
    return g + ("-preact" if preact else "")


def prepare_selection(teacher: nn.Module, teacher_arch: str, teacher_sha256: str, ds: ImageDataset,
                      metrics: Iterable[str], *, probe_size: int, granularity: str = "block",
                      preact: bool = False, rbf_max_samples: int = 4000, batch_size: int = 256,
                      progress: bool = False, cache: bool = True) -> SelectionInputs:
    """Candidate layers, representations (one hooked pass) and a matrix per measure, all cached."""
    device = next(teacher.parameters()).device
    loader = probe_loader(ds, probe_size, batch_size=batch_size, device=device)
    key = probe_key(probe_images(ds, probe_size))
    layers = candidate_layers(teacher, granularity, input_shape=(ds.channels, ds.image_size, ds.image_size))
    # the numerics tag (device kind, precision) is in the key: another device may round differently
    folder = cache_root() / teacher_sha256[:16] / f"probe-{key}" / f"{_tag(granularity, preact)}-{numerics_tag(device)}"
    hits: dict[str, bool] = {}
    reps: Optional[list[torch.Tensor]] = None

    def representations() -> list[torch.Tensor]:
        nonlocal reps
        if reps is None:
            path = folder / "representations.pt"
            if cache and path.exists():
                try:
                    reps = [r.to(device) for r in torch.load(path, map_location="cpu", weights_only=True)]
                    hits["representations"] = True
                except Exception as exc:  # noqa: BLE001 - torch.load fails in many ways on a damaged file
                    _log.warning("cached representations %s are unreadable (%s); computing them again", path, exc)
                    reps = None
            if reps is None:
                reps = layer_representations(teacher, loader, layers, preact=preact, device=device,
                                             progress=progress)
                hits["representations"] = False
                if cache:
                    save_torch_atomic([r.cpu() for r in reps], path)
        return reps

    matrices: dict[str, SimilarityMatrix] = {}
    for metric in dict.fromkeys(metrics):
        suffix = f"-{rbf_max_samples}" if metric == "cka_rbf" else ""
        path = folder / f"similarity-{metric}{suffix}.npz"
        S = None
        if cache and path.exists():
            try:
                S = SimilarityMatrix.load(path)
                hits[metric] = True
            except PursuhintError as exc:  # damaged or from a newer version: compute it again
                _log.warning("%s; computing the similarity matrix again", exc)
                S = None
        if S is None:
            S = similarity_matrix(representations(), metric, names=[l.name for l in layers],
                                  rbf_max_samples=rbf_max_samples)
            hits[metric] = False
            if cache:
                path.parent.mkdir(parents=True, exist_ok=True)
                S.save(path)
        matrices[metric] = S
    if cache:
        write_text_atomic(folder / "layers.json", json.dumps([l.to_dict() for l in layers], indent=1))
    return SelectionInputs(layers=layers, matrices=matrices, teacher_arch=teacher_arch,
                           teacher_sha256=teacher_sha256, granularity=granularity, probe_size=probe_size,
                           probe_key=key, cache_hits=hits)


def choose_hints(inputs: SelectionInputs, similarity: str, n_hints: int, algorithm: str = "pursuhint",
                 center: str = "mean_index", seed: int = 0, on_collision: str = "error") -> HintSet:
    """Cluster the prepared matrix for ``similarity`` and return the stamped hint set."""
    if similarity not in inputs.matrices:
        raise HintSetError(f"no similarity matrix for {similarity!r} was prepared; prepared: "
                           f"{', '.join(inputs.matrices)}")
    hs = select_hints(inputs.matrices[similarity], n_hints, algorithm=algorithm, center=center, seed=seed,
                      on_collision=on_collision)
    return inputs.stamp(hs)




def student_stage_count(student_arch: str, ds: ImageDataset) -> int:
    """How many stages the student has: the paper pairs one hint with each stage end."""

    stages = model_block_stages(create_model(student_arch, ds.num_classes, in_channels=ds.channels))
    if not stages:
        raise HintSetError(f"student {student_arch!r} has no known stages; set selection.n_hints explicitly")
    return len(stages)


def resolve_n_hints(n_hints: Optional[int], student_arch: str, ds: ImageDataset) -> int:
    """``n_hints`` as configured, or (when null) the student's number of stages, as in the paper."""
    return int(n_hints) if n_hints is not None else student_stage_count(student_arch, ds)


def teacher_default_hints(teacher: nn.Module, teacher_arch: str, teacher_sha256: str, ds: ImageDataset,
                          granularity: str = "block") -> HintSet:
    """The default hint set (last block of each stage) for a teacher, without any probe pass."""
    layers = candidate_layers(teacher, granularity, input_shape=(ds.channels, ds.image_size, ds.image_size))
    hs = default_hints(layers)
    hs.teacher_arch, hs.teacher_sha256, hs.granularity = teacher_arch, teacher_sha256, granularity
    return hs
