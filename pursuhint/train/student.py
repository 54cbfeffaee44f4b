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
from contextlib import ExitStack
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..config import COHORT_SECTIONS, Config
from ..data import DeviceLoader, ImageDataset, train_val_loaders
from ..infra.devices import place_model
from ..errors import HintSetError, PursuhintError
from ..infra.fileio import write_text_atomic
from ..hints.hintset import HintSet
from ..hints.layers import CandidateLayer, candidate_layers
from ..models.hooks import module_at, taps  # noqa: F401 (taps: re-exported for the benchmarks and tests)
from ..models import create_model, require_classifier, save_checkpoint
from ..distill.calibration import HintCalibration
from ..distill.kd import kd_loss
from .loop import Callback, FitResult, Member, fit_cohort, rng_now, seed_everything
from ..distill.mapping import map_hints
from ..distill.methods import adds_crd, create_method, hint_weight_for, method_class, method_params, own_params  # noqa: F401 (hint_weight_for: re-exported)

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
    chosen = _hint_layers(hint_set, candidate_layers(teacher, granularity, input_shape=shape))
    s_layers = candidate_layers(student, "block", input_shape=shape)
    return [HintPair(t, s) for t, s in map_hints(chosen, s_layers, rule)]


def _hint_layers(hint_set: Optional[HintSet], t_layers: list[CandidateLayer]) -> Optional[list[CandidateLayer]]:
    """The hint set's layers among the teacher's candidates (None without hints); a HintSetError names a hint
    layer that is not one of them."""
    if hint_set is None or not hint_set.indices:
        return None
    names = [l.name for l in t_layers]
    for name, idx in zip(hint_set.layers, hint_set.indices):
        if idx >= len(t_layers) or names[idx] != name:
            raise HintSetError(f"hint layer {name!r} (position {idx + 1}) is not a candidate of this teacher; "
                               f"its candidates are {', '.join(names[:4])}, ... ({len(names)} in all)")
    return [t_layers[i] for i in hint_set.indices]


def method_layers(method_name: str, params: dict[str, Any], hint_set: Optional[HintSet], teacher: nn.Module,
                  student: nn.Module, ds: ImageDataset, granularity: str,
                  rule: str) -> tuple[list[CandidateLayer], list[CandidateLayer]]:
    """The (teacher, student) layers method ``method_name`` learns from: the hint set's, paired by ``rule`` (see
    :func:`pair_hints`), or the method's own choice (ReviewKD's stage ends, SemCKD's candidates); none for a
    method without hints. Each model's candidate layers are probed once."""
    cls = method_class(method_name)
    if not cls.uses_hints:
        return [], []
    shape = (ds.channels, ds.image_size, ds.image_size)
    t_all = candidate_layers(teacher, granularity, input_shape=shape)
    s_all = candidate_layers(student, "block", input_shape=shape)
    hints = _hint_layers(hint_set, t_all)
    own = cls.select_layers(t_all, s_all, hints, own_params(method_name, params))
    if own is not None:
        return own
    pairs = map_hints(hints, s_all, rule) if hints else []
    return [t for t, _ in pairs], [s for _, s in pairs]


@dataclass
class _Wiring:
    """What a student's training needs besides the data: the hint pairs, the method module, the loss
    weights, and (for CRD) the classifier paths whose inputs are the embeddings."""

    method: Any
    weights: dict[str, Any]
    s_cls: Optional[str] = None
    t_cls: Optional[str] = None
    t_layers: list[CandidateLayer] = field(default_factory=list)  # the teacher layers the method reads
    s_layers: list[CandidateLayer] = field(default_factory=list)  # the student layers the method reads

    @property
    def pairs(self) -> list[HintPair]:
        """The layers paired one to one (none for a method that relates all to all: SemCKD)."""
        if len(self.t_layers) != len(self.s_layers):
            return []
        return [HintPair(t, s) for t, s in zip(self.t_layers, self.s_layers)]

    @property
    def hinted(self) -> bool:
        return bool(self.t_layers)

    @property
    def uses_crd(self) -> bool:
        return self.s_cls is not None


def _wire(cfg: Config, method_name: str, layers: tuple[list[CandidateLayer], list[CandidateLayer]],
          teacher: nn.Module, student: nn.Module, ds: ImageDataset, device: torch.device) -> _Wiring:
    """Build the distillation method for its (teacher, student) layers and its weights; ``weights["hint"]`` is
    still ``"auto"`` when the hint weight is to be calibrated."""
    uses_crd = adds_crd(method_name)
    t_layers, s_layers = layers
    s_shapes = [(layer.channels, *layer.spatial) for layer in s_layers]
    t_shapes = [(layer.channels, *layer.spatial) for layer in t_layers]
    params: dict[str, Any] = own_params(method_name, cfg.distill.params)
    params |= {k: v for k, v in wired_params(cfg).items() if k in method_params(method_name)}
    s_cls = t_cls = None
    if uses_crd:
        s_cls, t_cls = require_classifier(student, "CRD"), require_classifier(teacher, "CRD")
        params |= {"n_data": int(ds.train_x.shape[0]), "s_dim": module_at(student, s_cls).in_features,
                   "t_dim": module_at(teacher, t_cls).in_features}
    method = place_model(create_method(method_name, s_shapes, t_shapes, **params), device)  # connectors too
    weights = {"ce": cfg.distill.ce_weight, "kd": cfg.distill.kd_weight,
               "hint": hint_weight_for(method_name, cfg.distill.hint_weight) if t_layers else 0.0,
               "crd": method.crd_weight if uses_crd else 0.0, "temperature": cfg.distill.temperature}
    return _Wiring(method, weights, s_cls, t_cls, list(t_layers), list(s_layers))


@dataclass
class TeacherOutputs:
    """The frozen teacher's logits for one batch; its hooked features are in each member's teacher taps."""

    logits: torch.Tensor


def _loss_function(w: _Wiring, student: nn.Module, t_taps: Any, s_taps: Any,
                   calibration: Optional[HintCalibration]):
    """The weighted loss terms of one batch for ``fit_cohort``, from the cohort's teacher pass. With
    ``calibration`` (``hint_weight: auto``) the first step's own CE and hint loss set β before its backward
    (``w.weights["hint"]`` from then on)."""

    def compute_loss(images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor,
                     teacher_out: Optional[TeacherOutputs]):
        weights = w.weights
        logits_t = teacher_out.logits if teacher_out is not None else None
        logits_s = student(images)
        terms: dict[str, torch.Tensor] = {}
        if weights["ce"]:
            terms["ce"] = weights["ce"] * F.cross_entropy(logits_s.float(), labels)
        if weights["kd"]:
            terms["kd"] = weights["kd"] * kd_loss(logits_s.float(), logits_t.float(), weights["temperature"])
        if w.method.uses_logits:  # DKD: the method weighs its own terms
            terms["logit"] = w.method.logit_loss(logits_s, logits_t, labels)
        if w.hinted or w.uses_crd:
            crd = w.uses_crd
            out = w.method(s_taps.outputs, t_taps.outputs, emb_s=s_taps.inputs[0] if crd else None,
                           emb_t=t_taps.inputs[0] if crd else None, index=index if crd else None)
            if w.hinted:
                if calibration is not None and weights["hint"] == "auto":
                    weights["hint"] = calibration.weight_for(lambda: F.cross_entropy(logits_s.float(), labels),
                                                             out["hint"])
                terms["hint"] = weights["hint"] * out["hint"]
            if w.uses_crd:
                terms["crd"] = weights["crd"] * out["crd"]
        return logits_s, terms

    return compute_loss


@dataclass
class CohortMember:
    """One student of a cohort: its config, hint set (None: no hints), checkpoint folder and callbacks."""

    cfg: Config
    hint_set: Optional[HintSet] = None
    out_dir: Optional[Path] = None
    callbacks: Sequence[Callback] = ()
    checkpoint_name: str = "student_state.pt"


def reads_hint_set(cfg: Config) -> bool:
    """Whether the configured method learns from the hint set's layers (ReviewKD picks its own; SemCKD too,
    unless its candidates are the hints; DKD uses none)."""
    name = cfg.distill.method
    return method_class(name).reads_hint_set(own_params(name, cfg.distill.params))


def student_method(cfg: Config, hint_set: Optional[HintSet]) -> str:
    """The method a student trains with: the configured one, or KD only when it reads a hint set and has none."""
    return cfg.distill.method if hint_set is not None or not reads_hint_set(cfg) else "kd_only"


def wired_params(cfg: Config) -> dict[str, Any]:
    """Method parameters the trainer sets from the config, not the user (SemCKD's embeddings take the batch)."""
    return {"batch_size": cfg.train.batch_size}


def _section(cfg: Config, name: str) -> Any:
    return getattr(cfg, name).model_dump(mode="json")


def cohort_key(cfg: Config) -> str:
    """Students whose configs have the same key can train as one cohort: same teacher, data, recipe and seed."""
    parts = {name: _section(cfg, name) for name in COHORT_SECTIONS}
    return json.dumps(parts | {"seed": cfg.run_seed}, sort_keys=True, default=str)


@dataclass
class _Built:
    """A member ready to train: its student, wiring, calibration and taps' layer names."""

    member: CohortMember
    student: nn.Module
    wiring: _Wiring
    method: str
    calibration: Optional[HintCalibration]
    rng: Any

    @property
    def needs_teacher(self) -> bool:
        w = self.wiring
        return bool(w.weights["kd"] or w.hinted or w.uses_crd or w.method.uses_logits)


def _build(m: CohortMember, teacher: nn.Module, ds: ImageDataset, device: torch.device,
           teacher_sha256: Optional[str]) -> _Built:
    """Seed, then build the member's student, hint pairs and method, as it would be built training alone."""
    cfg = m.cfg
    if m.hint_set is not None and teacher_sha256 is not None:
        m.hint_set.check_teacher(teacher_sha256)
    seed_everything(cfg.run_seed)
    student = place_model(create_model(cfg.student.arch, ds.num_classes, in_channels=ds.channels), device)
    method_name = student_method(cfg, m.hint_set)
    layers = method_layers(method_name, cfg.distill.params, m.hint_set, teacher, student, ds,
                           cfg.selection.granularity, cfg.distill.mapping)
    w = _wire(cfg, method_name, layers, teacher, student, ds, device)
    calibration = HintCalibration(cfg.distill.hint_ratio) if w.weights["hint"] == "auto" else None
    return _Built(m, student, w, method_name, calibration, rng_now())


def train_student(cfg: Config, hint_set: Optional[HintSet], teacher: nn.Module, ds: ImageDataset, *,
                  teacher_sha256: Optional[str] = None, out_dir: Optional[Path] = None,
                  callbacks: Sequence[Callback] = (), progress: bool = False,
                  device: Optional[torch.device] = None, checkpoint_name: str = "student_state.pt",
                  evaluate_test: bool = False) -> StudentResult:
    """Distil ``teacher`` into a fresh ``cfg.student.arch`` through ``hint_set`` (None: no hints, KD/CE only):
    a cohort of one (see :func:`train_cohort`).

    ``evaluate_test`` scores the final student on the data set's test split (``test_acc`` in the last
    epoch's ``extra``): only the confirmation stage does, the search never sees the test split.

    Checkpoints each epoch in ``out_dir`` and resumes from it; a NaN/inf loss ends with status
    ``diverged``. The teacher must be the one the hint set was made for.
    """
    member = CohortMember(cfg, hint_set, out_dir, callbacks, checkpoint_name)
    result = train_cohort([member], teacher, ds, teacher_sha256=teacher_sha256, progress=progress, device=device,
                          evaluate_test=evaluate_test)[0]
    if result.fit.error is not None:
        raise result.fit.error
    return result


def train_cohort(members: Sequence[CohortMember], teacher: nn.Module, ds: ImageDataset, *,
                 teacher_sha256: Optional[str] = None, progress: bool = False,
                 device: Optional[torch.device] = None, evaluate_test: bool = False,
                 after_epoch: Optional[Callable[[int], None]] = None) -> list[StudentResult]:
    """Distil ``teacher`` into every member's student at once: one loader pass per epoch and one teacher forward
    per batch, with each member's hooked teacher layers. Each member ends with the weights and metrics it would
    have had trained alone (bitwise on the CPU); a member that diverges or fails ends alone (its status, and
    the exception in ``fit.error``). The members must share :func:`cohort_key`.
    """
    t0 = time.perf_counter()
    keys = {cohort_key(m.cfg) for m in members}
    if len(keys) != 1:
        raise PursuhintError(f"a cohort's students must share the teacher, data, recipe and seed; these "
                             f"{len(members)} differ in {_differing(members)}")
    device = device or next(teacher.parameters()).device
    teacher = place_model(teacher, device).eval()  # a no-op when the caller placed it already
    for p in teacher.parameters():
        p.requires_grad_(False)
    built = [_build(m, teacher, ds, device, teacher_sha256) for m in members]
    cfg = members[0].cfg
    train_loader, val_loader = train_val_loaders(ds, cfg.train.batch_size, augment=cfg.data.augment,
                                                 device=device, seed=cfg.run_seed,
                                                 with_index=any(b.wiring.uses_crd for b in built),
                                                 budget_gb=cfg.data.device_budget_gb)
    shared = _teacher_pass(teacher) if any(b.needs_teacher for b in built) else None
    with ExitStack() as stack:
        fit_members = [_fit_member(b, teacher, stack, len(train_loader)) for b in built]
        results = fit_cohort(fit_members, cfg.train, train_loader=train_loader, val_loader=val_loader,
                             device=device, shared=shared, progress=progress, desc=_desc(cfg, built),
                             final_loaders=_test_loader(ds, cfg, device) if evaluate_test else None,
                             after_epoch=after_epoch)
    seconds = time.perf_counter() - t0
    return [_student_result(b, r, seconds) for b, r in zip(built, results)]


def _fit_member(b: _Built, teacher: nn.Module, stack: ExitStack, steps_per_epoch: int) -> Member:
    """The member as ``fit_cohort`` trains it: its taps on the shared teacher and on its student, its loss."""
    w, cfg = b.wiring, b.member.cfg
    w.method.set_schedule(steps_per_epoch, cfg.train.epochs)  # a warm-up's length (DKD)
    t_taps = stack.enter_context(taps(teacher, [layer.name for layer in w.t_layers], [w.t_cls] if w.t_cls else []))
    s_taps = stack.enter_context(taps(b.student, [layer.name for layer in w.s_layers],
                                      [w.s_cls] if w.s_cls else []))
    modules: dict[str, nn.Module] = {"student": b.student, "method": w.method}
    if b.calibration is not None:  # β = r · CE₀ / H₀ from the first step; kept in the checkpoint for a resume
        modules["hint_calibration"] = b.calibration
    out_dir = b.member.out_dir
    return Member(modules, _loss_function(w, b.student, t_taps, s_taps, b.calibration), b.student,
                  Path(out_dir) / b.member.checkpoint_name if out_dir is not None else None, b.member.callbacks,
                  b.rng, _resolved_hint_weight(w) if b.calibration is not None else None)


def _teacher_pass(teacher: nn.Module) -> Callable[[torch.Tensor], TeacherOutputs]:
    """The cohort's one teacher forward per batch (its forward hooks fill every member's teacher taps)."""
    return lambda images: TeacherOutputs(teacher(images))


def _student_result(b: _Built, result: FitResult, seconds: float) -> StudentResult:
    measured = b.calibration.result() if b.calibration is not None else None
    if measured is not None:  # also when a finished run was resumed and took no step
        b.wiring.weights["hint"] = measured.weight
    return StudentResult(student=b.student, pairs=b.wiring.pairs, method=b.method, weights=b.wiring.weights,
                         fit=result, seconds=seconds, extra={"calibration": asdict(measured)} if measured else {})


def _desc(cfg: Config, built: list[_Built]) -> str:
    methods = ", ".join(dict.fromkeys(b.method for b in built))
    return f"{cfg.student.arch} ← {cfg.teacher.arch} [{methods}]" + (f" ×{len(built)}" if len(built) > 1 else "")


def _differing(members: Sequence[CohortMember]) -> str:
    """The config sections (or the seed) in which the members differ, for the error."""
    names = [n for n in COHORT_SECTIONS
             if len({json.dumps(_section(m.cfg, n), sort_keys=True, default=str) for m in members}) > 1]
    if len({m.cfg.run_seed for m in members}) > 1:
        names.append("seed")
    return ", ".join(names) or "nothing"


def _resolved_hint_weight(w: _Wiring) -> Callable[[], dict[str, Any]]:
    """Every epoch's calibrated β (so Tune, MLflow and the checkpoint's history see it)."""
    return lambda: {} if isinstance(w.weights["hint"], str) else {"hint_weight_resolved": w.weights["hint"]}


def _test_loader(ds: ImageDataset, cfg: Config, device: torch.device) -> dict[str, Any]:
    """``{"test": loader}`` over the test split, in order, without augmentation."""
    if ds.test_x is None:
        raise PursuhintError(f"data set {ds.name!r} has no test split; set data.val_fraction to carve a selection "
                             f"split so the held-out part can be the test split")
    return {"test": DeviceLoader(ds.test_x, ds.test_y, max(cfg.train.batch_size, 256), train=False, augment="none",
                                 mean=ds.mean, std=ds.std, device=device, budget_gb=cfg.data.device_budget_gb)}


def save_student(result: StudentResult, out_dir: Path, meta: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``student.pt`` (weights + metadata) and ``result.json`` (accuracy, pairs, method, time)."""
    out_dir = Path(out_dir)
    summary = result.summary() | meta
    ckpt = out_dir / "student.pt"
    summary["sha256"] = save_checkpoint(ckpt, result.student, {k: v for k, v in summary.items()
                                                               if k not in ("history", "hint_pairs", "weights")})
    res = write_text_atomic(out_dir / "result.json", json.dumps(summary, indent=2))
    return ckpt, res
