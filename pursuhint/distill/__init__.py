"""Distillation: hint methods and their registry, KD, CRD, and the teacher→student hint mapping."""

from .crd import CRDHead
from .kd import kd_loss
from .mapping import map_hints
from .methods import METHODS, DistillMethod, create_method, method_names

__all__ = ["CRDHead", "DistillMethod", "METHODS", "create_method", "kd_loss", "map_hints", "method_names"]
