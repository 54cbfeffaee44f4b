"""One trial of a sweep: resolve the sampled config, cluster the shared matrix into a hint set, train
the student, and report every epoch to Tune (with a checkpoint) and to the trial's MLflow run."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from ray import tune

from .. import tracking
from ..config import Config, config_from_text
from ..distill.loop import EpochStats
from ..distill.trainer import hint_weight_for, kd_only_config, pair_hints, train_student
from ..errors import PursuhintError
from ..hints.hintset import HintSet
from ..hints.pipeline import choose_hints, resolve_n_hints
from ..models import create_model
from .duplicates import train_key
from .shared import SharedWork
from .space import BASELINE_KEY, short_name

log = logging.getLogger("pursuhint.trial")
STATE_FILE = "student_state.pt"
WAIT_POLL_S = 1.0


@dataclass
class SweepInfo:
    """What every trial needs to know about its sweep (small; shipped with the trainable)."""

    name: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    duplicates_actor: Optional[str]
    cpus_per_trial: float


def trial_config(shared: SharedWork, sampled: dict[str, Any]) -> tuple[Config, str]:
    """The base config with the trial's sampled values, and its baseline kind ('' when searched)."""
    baseline = sampled.get(BASELINE_KEY, "") or ""
    values = {k: v for k, v in sampled.items() if k != BASELINE_KEY}
    cfg = config_from_text(shared.config_yaml).with_values(values)
    if baseline == "kd_only":
        cfg = kd_only_config(cfg)
    return cfg, baseline


def trial_hints(cfg: Config, baseline: str, shared: SharedWork) -> Optional[HintSet]:
    """Default hints for the default baseline, none for KD-only, else the clustered hint set."""
    if baseline == "kd_only":
        return None
    if baseline == "default":
        return HintSet.from_dict(shared.default_hints.to_dict())
    sel = cfg.selection
    k = resolve_n_hints(sel.n_hints, cfg.student.arch, shared.dataset)
    return choose_hints(shared.selection, sel.similarity, k, sel.algorithm, sel.center, seed=cfg.seed,
                        on_collision="warn")


def run_name(cfg: Config, baseline: str, hs: Optional[HintSet]) -> str:
    if baseline == "kd_only":
        return "baseline-kd_only"
    if baseline == "default":
        return f"baseline-default-{cfg.distill.method}"
    s = cfg.selection
    return f"{s.similarity}-k{hs.n_hints if hs else s.n_hints}-{s.algorithm}-{s.center}-{cfg.distill.method}"


def trial_params(cfg: Config, baseline: str, hs: Optional[HintSet], student_layers: list[str],
                 sampled: dict[str, Any]) -> dict[str, Any]:
    """The child run's params: scalars only, so MLflow's compare and parallel-coordinates views work."""
    searched = not baseline
    params: dict[str, Any] = {
        "similarity": cfg.selection.similarity if searched else "none",
        "n_hints": 0 if hs is None else hs.n_hints,
        "algorithm": cfg.selection.algorithm if searched else ("default" if baseline == "default" else "none"),
        "center": cfg.selection.center if searched else "none",
        "method": cfg.distill.method,
        "hint_weight": hint_weight_for(cfg.distill.method, cfg.distill.hint_weight) if hs is not None else 0.0,
        "kd_weight": cfg.distill.kd_weight,
        "ce_weight": cfg.distill.ce_weight,
        "lr": cfg.train.lr,
        "epochs": cfg.train.epochs,
        "hint_layers": ",".join(hs.layers) if hs else "",
        "hint_indices": ",".join(str(i + 1) for i in hs.indices) if hs else "",
        "student_layers": ",".join(student_layers),
        "paper_mode": bool(hs.paper_mode) if hs else False,
        "n_candidates": len(hs.candidates) if hs else 0,
    }
    for key, value in sampled.items():
        if key != BASELINE_KEY and short_name(key) not in params:
            params[short_name(key)] = value
    return params


class _Tracker:
    """MLflow logging that never stops training: a failed call is kept and retried at the next one."""

    def __init__(self, uri: str, run_id: str) -> None:
        self.uri, self.run_id = uri, run_id
        self.pending: list[tuple[str, tuple]] = []
        self.logged = tracking.logged_steps(uri, run_id)

    def _call(self, fn: str, *args: Any) -> None:
        self.pending.append((fn, args))
        try:
            while self.pending:
                name, a = self.pending[0]
                getattr(tracking, name)(self.uri, self.run_id, *a)
                self.pending.pop(0)
        except Exception as exc:  # server away: keep going, retry later; Tune keeps the results too
            log.warning("MLflow logging failed (%s); %d call(s) queued", exc, len(self.pending))

    def epoch(self, metrics: dict[str, float], step: int) -> None:
        if step not in self.logged:
            self._call("log_metrics", metrics, step)
            self.logged.add(step)

    def tags(self, tags: dict[str, Any]) -> None:
        self._call("set_tags", tags)

    def metric(self, metrics: dict[str, float], step: int) -> None:
        self._call("log_metrics", metrics, step)

    def artifact(self, path: Path) -> None:
        try:
            tracking.client(self.uri).log_artifact(self.run_id, str(path))
        except Exception as exc:
            log.warning("MLflow artifact %s not logged (%s)", path.name, exc)


def _tune_metrics(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if isinstance(v, (int, float, str))}


def run_trial(config: dict[str, Any], shared: SharedWork, sweep: SweepInfo) -> None:
    """The Tune function trainable."""
    import ray

    torch.set_num_threads(max(1, int(sweep.cpus_per_trial)))
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one "checkpoint created" line per epoch is noise
    ctx = tune.get_context()
    trial_id = ctx.get_trial_id()
    node_id = ray.get_runtime_context().get_node_id()
    cfg, baseline = trial_config(shared, config)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    teacher = shared.teacher(device)
    try:
        hs = trial_hints(cfg, baseline, shared)
        student_probe = create_model(cfg.student.arch, shared.dataset.num_classes,
                                     in_channels=shared.dataset.channels)
        pairs = pair_hints(hs, teacher, student_probe, shared.dataset, cfg.selection.granularity,
                           cfg.distill.mapping)
    except PursuhintError as exc:  # this point of the space cannot be trained: say so, don't retry
        _invalid(sweep, trial_id, cfg, baseline, config, str(exc))
        return
    key = train_key(cfg, None if hs is None else hs.indices)
    tags = {tracking.BASELINE_TAG: baseline or "none", tracking.STATUS_TAG: "running",
            tracking.TRAIN_KEY_TAG: key}
    if hs is not None and hs.warnings:
        tags["pursuhint.warnings"] = "; ".join(hs.warnings)[:4000]
    run_id = tracking.child_run(sweep.tracking_uri, sweep.experiment_id, sweep.parent_run_id, trial_id,
                                run_name(cfg, baseline, hs), tags)
    tracker = _Tracker(sweep.tracking_uri, run_id)
    tracker._call("log_params", trial_params(cfg, baseline, hs, [p.student.name for p in pairs], config))
    tracker.tags(tags)
    workdir = Path(tempfile.mkdtemp(prefix="pursuhint-trial-"))
    _write_artifacts(workdir, hs, shared, cfg, tracker)

    index = ray.get_actor(sweep.duplicates_actor) if sweep.duplicates_actor else None
    if index is not None:
        while True:
            claim = ray.get(index.claim.remote(key, trial_id))
            if claim["role"] != "wait":
                break
            time.sleep(WAIT_POLL_S)
        if claim["role"] == "reuse":
            _replay(claim, tracker, trial_id)
            return

    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            for name in (STATE_FILE, STATE_FILE + ".prev"):  # the fit loop falls back to .prev
                if (Path(d) / name).exists():
                    shutil.copyfile(Path(d) / name, workdir / name)

    best_so_far = [0.0]

    def report(stats: EpochStats) -> None:
        best_so_far[0] = max(best_so_far[0], stats.val_acc)
        metrics = stats.as_metrics() | {"epoch": stats.epoch, "best_val_acc": best_so_far[0]}
        tracker.epoch({k: v for k, v in metrics.items() if k != "epoch"}, stats.epoch)
        if index is not None:
            index.update.remote(key, trial_id, metrics, run_id)
        tune.report(_tune_metrics(metrics | {"status": "running", "node_id": node_id, "epochs_total": stats.epochs}),
                    checkpoint=tune.Checkpoint.from_directory(str(workdir)))

    try:
        result = train_student(cfg, hs, teacher, shared.dataset, teacher_sha256=shared.teacher_sha256,
                               out_dir=workdir, callbacks=[report], checkpoint_name=STATE_FILE)
    except PursuhintError as exc:
        tracker.tags({tracking.STATUS_TAG: "error", "pursuhint.error": tracking.scrub(str(exc))[:4000]})
        if index is not None:
            ray.get(index.finish.remote(key, trial_id, "failed", "error"))
        raise
    status = result.status
    best = result.best_val_acc if result.fit.history else 0.0
    tracker.metric({"best_val_acc": best}, len(result.fit.history))
    tracker.tags({tracking.STATUS_TAG: status, **({"pursuhint.message": result.fit.message[:4000]}
                                                    if result.fit.message else {})})
    if index is not None:
        ray.get(index.finish.remote(key, trial_id, "done", status))
    if status != "completed":
        last = result.fit.history[-1].val_acc if result.fit.history else 0.0
        tune.report({"val_acc": last, "best_val_acc": best, "status": status,
                     "epoch": len(result.fit.history)})
    shutil.rmtree(workdir, ignore_errors=True)


def _invalid(sweep: SweepInfo, trial_id: str, cfg: Config, baseline: str, sampled: dict[str, Any],
             message: str) -> None:
    """Record a trial whose sampled config cannot be trained (status ``invalid``) and end it."""
    try:
        run_id = tracking.child_run(sweep.tracking_uri, sweep.experiment_id, sweep.parent_run_id, trial_id,
                                    run_name(cfg, baseline, None),
                                    {tracking.BASELINE_TAG: baseline or "none", tracking.STATUS_TAG: "invalid",
                                     "pursuhint.error": tracking.scrub(message)[:4000]})
        tracker = _Tracker(sweep.tracking_uri, run_id)
        tracker._call("log_params", trial_params(cfg, baseline, None, [], sampled))
    except Exception as exc:
        log.warning("MLflow logging failed (%s)", exc)
    tune.report({"val_acc": 0.0, "best_val_acc": 0.0, "status": "invalid", "error": message[:500], "epoch": 0})


def _replay(claim: dict[str, Any], tracker: _Tracker, trial_id: str) -> None:
    """Report the owner's per-epoch history as this trial's own, tagged as a duplicate."""
    history = claim.get("history") or []
    tracker.tags({tracking.DUPLICATE_TAG: claim["owner"], tracking.STATUS_TAG: claim.get("status") or "completed"})
    best = 0.0
    for metrics in history:
        best = max(best, float(metrics.get("val_acc", 0.0)))
        tracker.epoch({k: v for k, v in metrics.items() if k != "epoch"} | {"best_val_acc": best},
                      int(metrics["epoch"]))
        tune.report(_tune_metrics(metrics | {"status": "duplicate", "duplicate_of": claim["owner"]}))
    tracker.metric({"best_val_acc": best}, len(history))
    if not history:
        tune.report({"val_acc": 0.0, "status": "duplicate", "duplicate_of": claim["owner"], "epoch": 0})


def _write_artifacts(workdir: Path, hs: Optional[HintSet], shared: SharedWork, cfg: Config,
                     tracker: _Tracker) -> None:
    """``hint_set.json`` and ``layer_atlas.png`` into the trial's run (once per trial)."""
    if hs is None:
        return
    art = workdir / "artifacts"
    art.mkdir(exist_ok=True)
    hs.save(art / "hint_set.json")
    tracker.artifact(art / "hint_set.json")
    sim = cfg.selection.similarity if hs.similarity else next(iter(shared.selection.matrices))
    S = shared.selection.matrices.get(sim)
    if S is not None:
        from ..plots import layer_atlas

        layer_atlas(S, hs, art / "layer_atlas.png", default=shared.default_hints)
        tracker.artifact(art / "layer_atlas.png")
