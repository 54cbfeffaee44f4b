"""Hint sets out of a sweep, for other training code: ``write_hint_sets`` (JSON, YAML, a torchdistill fragment),
the fragment itself (``torchdistill.py``) and the feature shapes it needs (``shapes.py``)."""

from .hintsets import FORMATS, student_layers_of, write_hint_sets
from .shapes import ShapeProbe
from .torchdistill import torchdistill_fragment

__all__ = ["FORMATS", "ShapeProbe", "student_layers_of", "torchdistill_fragment", "write_hint_sets"]
