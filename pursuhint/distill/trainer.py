"""Train a student from a teacher through a hint set: γ·CE + α·KD + β·Σ_k L_hint (+ CRD).

The teacher stays frozen in eval mode and runs once per batch under ``no_grad``; forward hooks sit
only at the hint layers of teacher and student (and at the classifier input when CRD needs the
penultimate embedding).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..data import ImageDataset, train_val_loaders
from ..devices import place_model
from ..errors import HintSetError, PursuhintError
from ..fileio import write_text_atomic
from ..hints.hintset import HintSet
from ..hints.layers import CandidateLayer, candidate_layers
from ..hooks import module_at, taps  # noqa: F401 (taps: re-exported for the benchmarks and tests)
from ..models import create_model, model_classifier
from .calibration import HintCalibration
from .kd import kd_loss
from ..training import Callback, FitResult, fit, seed_everything
from .mapping import map_hints
from .methods import adds_crd, create_method, hint_weight_for, method_class, own_params  # noqa: F401 (hint_weight_for: re-exported)

CRD_WEIGHT = 0.8  # the benchmark's β for CRD


KD_ONLY_WEIGHTS = {"distill.ce_weight": 0.1, "distill.kd_weight": 0.9}  # the benchmark's KD recipe


def kd_only_config(cfg: Config) -> Config:
    """The config for the KD-only baseline: the configured KD weights, or the benchmark's (0.1 CE + 0.9 KD)
    when ``distill.kd_weight`` is 0 — a KD baseline without KD would be plain training."""
    values: dict[str, Any] = {"distill.method": "kd_only"}
    if cfg.distill.kd_weight == 0:
        values.update(KD_ONLY_WEIGHTS)
    return cfg.with_values(values)


def ce_only_config(cfg: Config) -> Config:
    """The config for the CE-only baseline: the student trained on the labels alone (no KD, no hints, and so no
    teacher forward at all), with the sweep's recipe."""
    return cfg.with_values({"distill.method": "none", "distill.kd_weight": 0.0, "distill.ce_weight": 1.0})


@dataclass
class HintPair:
    """One teacher hint point and the student layer that learns from it."""

    teacher: CandidateLayer
    student: CandidateLayer

    def as_dict(self) -> dict[str, Any]:
        return {"teacher": self.teacher.name, "teacher_index": self.teacher.index,
                "student": self.student.name, "student_index": self.student.index}


@dataclass
class StudentResult:
    """What ``train_student`` returns: the trained student, the pairing and the per-epoch history."""

    student: nn.Module
    pairs: list[HintPair]
    method: str
    weights: dict[str, float]
    fit: FitResult
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return self.fit.status

    @property
    def best_val_acc(self) -> float:
        return self.fit.best_val_acc

    @property
    def final_val_acc(self) -> float:
        return self.fit.final_val_acc

    def summary(self) -> dict[str, Any]:
        return {
            "status": self.status, "message": self.fit.message, "method": self.method, "weights": self.weights,
            "final_val_acc": self.final_val_acc, "best_val_acc": self.best_val_acc,
            "epochs": len(self.fit.history), "seconds": round(self.seconds, 2),
            "hint_pairs": [p.as_dict() for p in self.pairs],
            "history": [h.as_metrics() | {"epoch": h.epoch} for h in self.fit.history],
            **({"calibration": self.extra["calibration"]} if "calibration" in self.extra else {}),
        }


def pair_hints(hint_set: Optional[HintSet], teacher: nn.Module, student: nn.Module, ds: ImageDataset,
               granularity: str, rule: str) -> list[HintPair]:
    """Pair the hint set's teacher layers with student layers (``auto``/``stage_ends``/``relative_depth``)."""
    if hint_set is None or not hint_set.indices:
        return []
    shape = (ds.channels, ds.image_size, ds.image_size)
    t_layers = candidate_layers(teacher, granularity, input_shape=shape)
    names = [l.name for l in t_layers]
    for name, idx in zip(hint_set.layers, hint_set.indices):
        if idx >= len(t_layers) or names[idx] != name:
            raise HintSetError(f"hint layer {name!r} (position {idx + 1}) is not a candidate of this teacher; "
                               f"its candidates are {', '.join(names[:4])}, ... ({len(names)} in all)")
    s_layers = candidate_layers(student, "block", input_shape=shape)
    chosen = [t_layers[i] for i in hint_set.indices]
    return [HintPair(t, s) for t, s in map_hints(chosen, s_layers, rule)]


@dataclass
class _Wiring:
    """What a student's training needs besides the data: the hint pairs, the method module, the loss
    weights, and (for CRD) the classifier paths whose inputs are the embeddings."""

    pairs: list[HintPair]
    method: Any
    weights: dict[str, Any]
    s_cls: Optional[str] = None
    t_cls: Optional[str] = None

    @property
    def uses_crd(self) -> bool:
        return self.s_cls is not None


def _wire(cfg: Config, method_name: str, pairs: list[HintPair], teacher: nn.Module, student: nn.Module,
          ds: ImageDataset, device: torch.device) -> _Wiring:
    """Build the distillation method for ``pairs`` (none if the method does not use hints) and its weights;
    ``weights["hint"]`` is still ``"auto"`` when the hint weight is to be calibrated."""
    uses_crd = adds_crd(method_name)
    if not method_class(method_name).uses_hints:
        pairs = []
    s_shapes = [(p.student.channels, *p.student.spatial) for p in pairs]
    t_shapes = [(p.teacher.channels, *p.teacher.spatial) for p in pairs]
    params: dict[str, Any] = own_params(method_name, cfg.distill.params)
    s_cls = t_cls = None
    if uses_crd:
        s_cls, t_cls = _classifier(student), _classifier(teacher)
        params |= {"n_data": int(ds.train_x.shape[0]), "s_dim": module_at(student, s_cls).in_features,
                   "t_dim": module_at(teacher, t_cls).in_features}
    method = place_model(create_method(method_name, s_shapes, t_shapes, **params), device)  # connectors too
    weights = {"ce": cfg.distill.ce_weight, "kd": cfg.distill.kd_weight,
               "hint": hint_weight_for(method_name, cfg.distill.hint_weight) if pairs else 0.0,
               "crd": CRD_WEIGHT if uses_crd else 0.0, "temperature": cfg.distill.temperature}
    return _Wiring(pairs, method, weights, s_cls, t_cls)


def _loss_function(w: _Wiring, teacher: nn.Module, student: nn.Module, t_taps: Any, s_taps: Any,
                   calibration: Optional[HintCalibration]):
    """The weighted loss terms of one batch for ``fit``. With ``calibration`` (``hint_weight: auto``) the first
    step's own CE and hint loss set β before its backward (``w.weights["hint"]`` from then on)."""

    def compute_loss(images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor):
        weights = w.weights
        if weights["kd"] or w.pairs or w.uses_crd or w.method.uses_logits:  # else nothing reads the teacher
            with torch.no_grad():
                logits_t = teacher(images)
        logits_s = student(images)
        terms: dict[str, torch.Tensor] = {}
        if weights["ce"]:
            terms["ce"] = weights["ce"] * F.cross_entropy(logits_s.float(), labels)
        if weights["kd"]:
            terms["kd"] = weights["kd"] * kd_loss(logits_s.float(), logits_t.float(), weights["temperature"])
        if w.method.uses_logits:  # DKD: the method weighs its own terms
            terms["logit"] = w.method.logit_loss(logits_s, logits_t, labels)
        if w.pairs or w.uses_crd:
            crd = w.uses_crd
            out = w.method(s_taps.outputs, t_taps.outputs, emb_s=s_taps.inputs[0] if crd else None,
                           emb_t=t_taps.inputs[0] if crd else None, index=index if crd else None)
            if w.pairs:
                if calibration is not None and weights["hint"] == "auto":
                    weights["hint"] = calibration.weight_for(lambda: F.cross_entropy(logits_s.float(), labels),
                                                             out["hint"])
                terms["hint"] = weights["hint"] * out["hint"]
            if w.uses_crd:
                terms["crd"] = CRD_WEIGHT * out["crd"]
        return logits_s, terms

    return compute_loss


def train_student(cfg: Config, hint_set: Optional[HintSet], teacher: nn.Module, ds: ImageDataset, *,
                  teacher_sha256: Optional[str] = None, out_dir: Optional[Path] = None,
                  callbacks: Sequence[Callback] = (), progress: bool = False,
                  device: Optional[torch.device] = None, checkpoint_name: str = "student_state.pt",
                  evaluate_test: bool = False) -> StudentResult:
    """Distil ``teacher`` into a fresh ``cfg.student.arch`` through ``hint_set`` (None: no hints, KD/CE only).

    ``evaluate_test`` scores the final student on the data set's test split (``test_acc`` in the last
    epoch's ``extra``): only the confirmation stage does, the search never sees the test split.

    Checkpoints each epoch in ``out_dir`` and resumes from it; a NaN/inf loss ends with status
    ``diverged``. The teacher must be the one the hint set was made for.
    """
    t0 = time.perf_counter()
    if hint_set is not None and teacher_sha256 is not None:
        hint_set.check_teacher(teacher_sha256)
    device = device or next(teacher.parameters()).device
    teacher = place_model(teacher, device).eval()  # a no-op when the caller placed it already
    for p in teacher.parameters():
        p.requires_grad_(False)
    seed_everything(cfg.run_seed)
    student = place_model(create_model(cfg.student.arch, ds.num_classes, in_channels=ds.channels), device)
    # no hint set: KD only, unless the method needs none (DKD learns from the logits)
    method_name = cfg.distill.method if hint_set is not None or not method_class(cfg.distill.method).uses_hints else "kd_only"
    pairs = pair_hints(hint_set, teacher, student, ds, cfg.selection.granularity, cfg.distill.mapping)
    w = _wire(cfg, method_name, pairs, teacher, student, ds, device)
    train_loader, val_loader = train_val_loaders(ds, cfg.train.batch_size, augment=cfg.data.augment,
                                                 device=device, seed=cfg.run_seed, with_index=w.uses_crd,
                                                 budget_gb=cfg.data.device_budget_gb)
    w.method.set_schedule(len(train_loader), cfg.train.epochs)  # a warm-up's length (DKD)
    with taps(teacher, [p.teacher.name for p in w.pairs], [w.t_cls] if w.t_cls else []) as t_taps, \
            taps(student, [p.student.name for p in w.pairs], [w.s_cls] if w.s_cls else []) as s_taps:
        calibration = HintCalibration(cfg.distill.hint_ratio) if w.weights["hint"] == "auto" else None
        compute_loss = _loss_function(w, teacher, student, t_taps, s_taps, calibration)
        modules: dict[str, nn.Module] = {"student": student, "method": w.method}
        if calibration is not None:  # β = r · CE₀ / H₀ from the first step; kept in the checkpoint for a resume
            modules["hint_calibration"] = calibration
            callbacks = [_with_resolved_hint_weight(w), *callbacks]
        ckpt = Path(out_dir) / checkpoint_name if out_dir is not None else None
        result = fit(modules, compute_loss, cfg.train,
                     train_loader=train_loader, val_loader=val_loader, eval_model=student, device=device,
                     checkpoint_path=ckpt, callbacks=callbacks, progress=progress,
                     desc=f"{cfg.student.arch} ← {cfg.teacher.arch} [{method_name}]", seed=cfg.run_seed,
                     final_loaders=_test_loader(ds, cfg, device) if evaluate_test else None)
    measured = calibration.result() if calibration is not None else None
    if measured is not None:  # also when a finished run was resumed and took no step
        w.weights["hint"] = measured.weight
    return StudentResult(student=student, pairs=w.pairs, method=method_name, weights=w.weights, fit=result,
                         seconds=time.perf_counter() - t0,
                         extra={"calibration": asdict(measured)} if measured else {})


def _with_resolved_hint_weight(w: _Wiring) -> Callback:
    """A callback that adds the calibrated β to every epoch's ``extra`` (so Tune and MLflow see it)."""
    def add(stats: Any) -> None:
        if not isinstance(w.weights["hint"], str):
            stats.extra["hint_weight_resolved"] = w.weights["hint"]
    return add


def _test_loader(ds: ImageDataset, cfg: Config, device: torch.device) -> dict[str, Any]:
    """``{"test": loader}`` over the test split, in order, without augmentation."""
    from ..data import DeviceLoader

    if ds.test_x is None:
        raise PursuhintError(f"data set {ds.name!r} has no test split; set data.val_fraction to carve a selection "
                             f"split so the held-out part can be the test split")
    return {"test": DeviceLoader(ds.test_x, ds.test_y, max(cfg.train.batch_size, 256), train=False, augment="none",
                                 mean=ds.mean, std=ds.std, device=device, budget_gb=cfg.data.device_budget_gb)}


def save_student(result: StudentResult, out_dir: Path, meta: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``student.pt`` (weights + metadata) and ``result.json`` (accuracy, pairs, method, time)."""
    from ..models import save_checkpoint

    out_dir = Path(out_dir)
    summary = result.summary() | meta
    ckpt = out_dir / "student.pt"
    summary["sha256"] = save_checkpoint(ckpt, result.student, {k: v for k, v in summary.items()
                                                               if k not in ("history", "hint_pairs", "weights")})
    res = write_text_atomic(out_dir / "result.json", json.dumps(summary, indent=2))
    return ckpt, res


def _classifier(model: nn.Module) -> str:
    name = model_classifier(model)
    if name is None:
        raise PursuhintError(f"cannot find the classifier of {type(model).__name__} for CRD; give the model a "
                             f"`classifier_path` attribute naming its final nn.Linear")
    return name
