"""Registry of hint-based distillation methods and the factory the trainer calls.

``create_method("at", student_shapes, teacher_shapes)``; ``"at+crd"`` adds a CRD term (needs
``n_data``, ``s_dim``, ``t_dim``; weighed by ``crd_weight``, 0.8 by default); ``"crd"`` is CRD alone;
``"kd_only"``/``"none"`` have no hint loss.

A method describes itself, so adding one is one file: a ``DistillMethod`` subclass whose
``__init__(student_shapes, teacher_shapes, **own_params)`` builds its learnable parts, which sets
``default_weight`` (its β when ``distill.hint_weight`` is null; required) and, if it learns through no
hint pairs, ``uses_hints = False``; registered with ``@METHODS.register("mine")``. A config names the
file's module under ``plugins`` so that the CLI and every Ray worker import it.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Sequence, Union

from ...errors import PursuhintError
from ...infra.registry import unknown_name_message
from ..crd import CRD_WEIGHT, CRDHead
from .base import DistillMethod, flatten, pool_to_common
# Importing the method modules registers their methods; this order is the listing (messages, method_names):
# the benchmark's feature-map and relation methods, the KD-only and CE-only baselines and CRD, then the later ones.
from .feature_maps import AT, NST, VID, ConvReg, FitNet
from .relations import CC, PKT, RKD, SP
from .no_hints import CRD, NoHint
from .dkd import DKD
from .reviewkd import ReviewKD
from .semckd import SemCKD
from .registry import METHODS, check_method

CRD_SUFFIX = "+crd"
CRD_REQUIRED = ("n_data", "s_dim", "t_dim")
CRD_OPTIONAL = ("feat_dim", "nce_k", "nce_t", "nce_m")
CRD_WEIGHT_PARAM = "crd_weight"  # the CRD term's weight in the trainer's loss, a parameter of every X+crd and crd
WIRED = ("batch_size",)  # set by the trainer from the config (SemCKD's embeddings take the batch size), not by users


def method_names() -> list[str]:
    """Every name ``create_method`` accepts: the registered methods and each with ``+crd`` (but CRD's own)."""
    names = METHODS.names()
    return names + [f"{n}{CRD_SUFFIX}" for n in names if not METHODS.get(n).includes_crd]


def method_class(name: str) -> type[DistillMethod]:
    """The class behind method ``name`` (for ``X+crd``, X's): what the method says about itself."""
    return METHODS.get(_split(name)[0])


def adds_crd(name: str) -> bool:
    """Whether method ``name`` trains a CRD term (``crd`` itself, or ``X+crd``)."""
    return _split(name)[1]


def hint_weight_for(name: str, configured: Union[float, str, None]) -> Union[float, str]:
    """The configured β, ``"auto"`` (calibrated when training starts), or the method's own ``default_weight``
    (for ``X+crd``, X's)."""
    if configured == "auto":
        return "auto"
    if configured is not None:
        return float(configured)
    return float(method_class(name).default_weight)


def method_params(name: str) -> list[str]:
    """The keyword parameters ``create_method(name, ...)`` accepts."""
    base, uses_crd = _split(name)
    own = [p for p in inspect.signature(METHODS.get(base).__init__).parameters
           if p not in ("self", "student_shapes", "teacher_shapes")]
    return own + ([*CRD_REQUIRED, CRD_WEIGHT_PARAM, *CRD_OPTIONAL] if uses_crd else [])


NO_PARAMS = ("kd_only", "none")  # the KD-only baseline ignores a flat ``distill.params``


def own_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """What method ``name`` gets from ``distill.params``: the flat mapping (not for the KD-only baseline), or
    its own entry of a per-method mapping (``X+crd`` falls back to X's)."""
    if params and all(isinstance(v, dict) for v in params.values()):
        return dict(params.get(name, params.get(_split(name)[0], {})))
    return {} if name in NO_PARAMS else dict(params)


def check_params(methods: Sequence[str], params: dict[str, Any]) -> None:
    """Refuse a parameter a method the config may train does not take, or a per-method key that is no method."""
    if params and all(isinstance(v, dict) for v in params.values()):
        for key in params:
            if key not in method_names():
                raise PursuhintError(unknown_name_message("distillation method", key, method_names()))
    for name in methods:
        valid = [p for p in method_params(name) if p not in CRD_REQUIRED + WIRED]
        unknown = [p for p in own_params(name, params) if p not in valid]
        if unknown:
            several = f" (with several methods, give each its own: {{{name}: {{...}}}})" if len(methods) > 1 else ""
            raise PursuhintError(f"{unknown[0]!r} is not a parameter of distillation method {name!r}; valid: "
                                 f"{', '.join(valid) or 'none'}{several}")


def create_method(
    name: str,
    student_shapes: Sequence[Sequence[int]],
    teacher_shapes: Sequence[Sequence[int]],
    **params: Any,
) -> DistillMethod:
    """Build method ``name`` for K hint pairs of the given per-sample shapes ((C, H, W) or (D,)).

    Learnable parts (connectors, VID variances, CC/CRD embeddings) are created here, one per pair.
    """
    base, uses_crd = _split(name)
    valid = method_params(name)
    unknown = [p for p in params if p not in valid]
    if unknown:
        raise PursuhintError(
            f"parameter {unknown[0]!r} is not valid for distillation method {name!r}; "
            f"valid: {', '.join(valid) or 'none'}."
        )
    crd_weight = params.pop(CRD_WEIGHT_PARAM, CRD_WEIGHT)
    crd_params = {k: params.pop(k) for k in CRD_REQUIRED + CRD_OPTIONAL if k in params}
    if uses_crd:
        missing = [k for k in CRD_REQUIRED if k not in crd_params]
        if missing:
            raise PursuhintError(
                f"distillation method {name!r} needs parameter {missing[0]!r}; CRD needs n_data (training-set "
                f"size), s_dim and t_dim (student and teacher embedding widths)."
            )
        _check_crd_weight(crd_weight)
    method = METHODS.get(base)(student_shapes, teacher_shapes, **params)
    if uses_crd:
        method.crd = CRDHead(**crd_params)
        method.crd_weight = float(crd_weight)
    method.name = name
    return method


def _check_crd_weight(weight: Any) -> None:
    """Refuse a CRD weight that is not a finite number >= 0."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
        raise PursuhintError(f"CRD parameter {CRD_WEIGHT_PARAM}={weight!r} is invalid; use a number >= 0 (default "
                             f"{CRD_WEIGHT}, the CRD benchmark's).")


def _split(name: str) -> tuple[str, bool]:
    """``"at+crd"`` → ("at", True); ``"crd"`` → ("crd", True); ``"at"`` → ("at", False)."""
    if not isinstance(name, str) or name not in method_names():
        raise PursuhintError(unknown_name_message("distillation method", name, method_names()))
    if name.endswith(CRD_SUFFIX):
        return name[: -len(CRD_SUFFIX)], True
    return name, METHODS.get(name).includes_crd


__all__ = [
    "AT", "CC", "CRD", "DKD", "METHODS", "NST", "PKT", "RKD", "SP", "VID", "ConvReg", "DistillMethod", "FitNet",
    "NoHint", "ReviewKD", "SemCKD",
    "adds_crd", "check_method", "check_params", "create_method", "own_params", "flatten", "hint_weight_for",
    "method_class",
    "method_names", "method_params", "pool_to_common",
]
