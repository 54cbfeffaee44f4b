"""Each hint pair's feature shapes, from a teacher and a student of the sweep's architectures: what decides
whether torchdistill can compare a pair and how large FitNet's and VID's connectors are."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from torch import nn

from ..errors import PursuhintError
from ..models.hooks import output_shapes
from ..models import create_model
from ..train.teacher import dataset_for

if TYPE_CHECKING:
    from ..config import Config

Shape = tuple[int, ...]
PairShape = tuple[Shape, Shape]  # (student, teacher) per-sample feature shapes of one hint pair


@dataclass
class ShapeProbe:
    """A teacher and a student of the sweep's architectures (any weights) and the input shape (C, H, W),
    to learn each hint pair's feature shapes: what decides whether torchdistill can compare a pair and
    how large FitNet's and VID's connectors are."""

    teacher: nn.Module
    student: nn.Module
    input_shape: tuple[int, int, int]

    def pair_shapes(self, teacher_layers: Sequence[str], student_layers: Sequence[str]) -> list[PairShape]:
        """(student shape, teacher shape) without the batch dim, pair by pair."""
        t = _output_shapes(self.teacher, teacher_layers, self.input_shape)
        s = _output_shapes(self.student, student_layers, self.input_shape)
        return list(zip(s, t))

    @classmethod
    def from_config(cls, cfg: "Config") -> "ShapeProbe":
        """Freshly initialised teacher and student of ``cfg``, at its data set's channels and image size
        (loads the data set, as training does)."""
        ds = dataset_for(cfg)
        return cls(create_model(cfg.teacher.arch, ds.num_classes, in_channels=ds.channels),
                   create_model(cfg.student.arch, ds.num_classes, in_channels=ds.channels),
                   (ds.channels, ds.image_size, ds.image_size))


def _output_shapes(model: nn.Module, names: Sequence[str], input_shape: Sequence[int]) -> list[Shape]:
    """The per-sample output shape of each named module for one forward pass of zeros (eval mode)."""
    found = output_shapes(model, list(names), input_shape)
    missing = [name for name in names if name not in found]
    if missing:
        raise PursuhintError(f"layer {missing[0]!r} of {type(model).__name__} did not run in a forward pass")
    return [found[name] for name in names]
