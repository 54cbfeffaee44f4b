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
from typing import Any, Callable, Optional, Sequence

import torch
from ray import tune

from .. import tracking
from ..baselines import NO_TEACHER, WITHOUT_HINTS
from ..config import Config, config_from_text
from ..infra.devices import runtime_device
from ..distill.methods import method_class, own_params
from ..train.student import (
    ce_only_config,
    hint_weight_for,
    kd_only_config,
    method_layers,
    reads_hint_set,
    student_method,
    train_student,
)
from ..errors import PursuhintError
from ..hints.hintset import HintSet
from ..hints.pipeline import choose_hints, resolve_n_hints
from ..infra.logs import quiet_terminal
from ..models import create_model
from ..plots import layer_atlas
from ..train.loop import EpochStats, resume_state
from .columns import COLUMNS
from .duplicates import train_key
from .shared import SharedWork
from .space import plain_values, short_name
from .trial_keys import BASELINE_KEY, CONFIRMS_KEY, ROLE_KEY
from .sync import MLFLOW_KEY

log = logging.getLogger("pursuhint.trial")
STATE_FILE = "student_state.pt"
RESTORED_TAG = "pursuhint.restored_from_epoch"
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
    values = {k: v for k, v in plain_values(sampled).items() if k not in (BASELINE_KEY, ROLE_KEY, CONFIRMS_KEY)}
    cfg = config_from_text(shared.config_yaml).with_values(values)
    if baseline == "kd_only":
        cfg = kd_only_config(cfg)
    elif baseline == NO_TEACHER:
        cfg = ce_only_config(cfg)
    return cfg, baseline


def trial_hints(cfg: Config, baseline: str, shared: SharedWork) -> Optional[HintSet]:
    """Default hints for the default baseline and for a method that picks its layers itself (ReviewKD: the
    selection keys are ignored for it, so its trials are duplicates of each other), none for KD-only, K evenly
    spaced or K random candidate layers (drawn anew for each run seed) for the uniform and random baselines,
    else the clustered hint set."""
    if baseline in WITHOUT_HINTS:
        return None
    if baseline == "default" or (method_class(cfg.distill.method).uses_hints and not reads_hint_set(cfg)):
        return HintSet.from_dict(shared.default_hints.to_dict())
    sel = cfg.selection
    k = resolve_n_hints(sel.n_hints, cfg.student.arch, shared.dataset)
    if baseline == "uniform":
        return shared.selection.uniform(k)
    if baseline == "random":
        return shared.selection.random(k, cfg.run_seed)
    return choose_hints(shared.selection, sel.similarity, k, sel.algorithm, sel.center, seed=cfg.seed,
                        on_collision="warn")


def run_name(cfg: Config, baseline: str, hs: Optional[HintSet], role: str = "") -> str:
    seed = f"-seed{cfg.run_seed}" if role == "confirm" else ""
    prefix = "confirm-" if role == "confirm" else ""
    if baseline in WITHOUT_HINTS:
        return f"{prefix}baseline-{baseline}{seed}"
    if baseline in ("default", "uniform", "random"):
        k = f"-k{hs.n_hints if hs else cfg.selection.n_hints}" if baseline != "default" else ""
        return f"{prefix}baseline-{baseline}{k}-{cfg.distill.method}{seed}"
    s = cfg.selection
    return f"{prefix}{s.similarity}-k{hs.n_hints if hs else s.n_hints}-{s.algorithm}-{s.center}-{cfg.distill.method}{seed}"


def trial_params(cfg: Config, baseline: str, hs: Optional[HintSet], student_layers: list[str],
                 sampled: dict[str, Any], split_info: Optional[dict[str, dict[str, Any]]] = None,
                 own_layers: Sequence[str] = ()) -> dict[str, Any]:
    """The child run's params: scalars only, so MLflow's compare and parallel-coordinates views work. Every
    recorded column of ``search/columns.py`` is logged under its param name, then the rest of the recipe.
    ``own_layers``: the teacher layers the method reads; they are the hint layers only without a hint set (the
    ones ReviewKD and SemCKD choose themselves)."""
    searched = not baseline
    values: dict[str, Any] = {
        "similarity": cfg.selection.similarity if searched else "none",
        "n_hints": len(own_layers) if hs is None else hs.n_hints,
        "algorithm": cfg.selection.algorithm if searched else (baseline if baseline not in WITHOUT_HINTS else "none"),
        "center": cfg.selection.center if searched else "none",
        "method": cfg.distill.method,
        "hint_weight": (hint_weight_for(cfg.distill.method, cfg.distill.hint_weight)
                        if hs is not None or method_class(cfg.distill.method).uses_hints else 0.0),
        "hint_ratio": cfg.distill.hint_ratio,
        "kd_weight": cfg.distill.kd_weight,
        "ce_weight": cfg.distill.ce_weight,
        "lr": cfg.train.lr,
        "hint_layers": ",".join(hs.layers if hs else own_layers),
        "hint_indices": ",".join(str(i + 1) for i in hs.indices) if hs else "",
        "student_layers": ",".join(student_layers),
        "n_candidates": len(hs.candidates) if hs else 0,
    }
    params: dict[str, Any] = {c.param: values[c.field] for c in COLUMNS if c.param}
    params.update({
        "temperature": cfg.distill.temperature,
        "method_params": json.dumps(own_params(cfg.distill.method, cfg.distill.params), sort_keys=True),
        "epochs": cfg.train.epochs,
        "paper_mode": bool(hs.paper_mode) if hs else False,
        "seed": cfg.run_seed,
    })
    for split, info in (split_info or {}).items():
        params[f"split_{split}_size"] = info["size"]
        params[f"split_{split}_hash"] = info["hash"]
    for key, value in plain_values(sampled).items():
        if key not in (BASELINE_KEY, ROLE_KEY, CONFIRMS_KEY) and short_name(key) not in params:
            params[short_name(key)] = value
    return params


def mlflow_record(name: str, params: dict[str, Any], tags: dict[str, Any]) -> str:
    """What the trial's MLflow run should hold, as one JSON string in its Tune results (``MLFLOW_KEY``),
    so ``pursuhint report --sync`` can write the run even if MLflow never saw the trial."""
    return json.dumps({"run_name": name, "params": {k: tracking.scalar(v) for k, v in params.items()},
                       "tags": {k: tracking.scalar(v) for k, v in tags.items()}}, sort_keys=True)


def _tune_metrics(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if isinstance(v, (int, float, str))}


def run_one(config: dict[str, Any], shared: SharedWork, sweep: SweepInfo) -> None:
    """One trial (see ``tune_trainable.run_trial``): resolve its config and hints, open its MLflow run, reuse a duplicate's
    result or train (resuming from Tune's checkpoint), and end the run with the trial's status."""
    _quiet_worker(sweep)
    trial_id = tune.get_context().get_trial_id()
    teacher = shared.teacher(runtime_device())  # what Ray assigned: CUDA only when this trial holds a GPU
    workdir = Path(tempfile.mkdtemp(prefix="pursuhint-trial-"))
    arm = prepare_arm(config, shared, sweep, teacher, trial_id, workdir)
    if isinstance(arm, dict):  # this point of the space cannot be trained: said so, not retried
        tune.report(arm)
        return
    index, claim = _claim(sweep, arm.key, trial_id)
    if claim["role"] == "reuse":
        _replay(claim, arm.tracker, arm.record)
        return
    restored = _restore(workdir, trial_id, arm.tracker, arm.record)
    index_restored(index, arm.key, trial_id, restored)
    best = max((h.val_acc for h in restored), default=0.0)  # the running best includes the restored epochs
    report = _epoch_reporter(arm.tracker, index, arm.key, trial_id, workdir, arm.facts, arm.record, best)
    try:
        result = train_student(arm.cfg, arm.hint_set, teacher, shared.dataset, teacher_sha256=shared.teacher_sha256,
                               out_dir=workdir, callbacks=[report], checkpoint_name=STATE_FILE,
                               evaluate_test=arm.role == "confirm")
    except PursuhintError as exc:
        arm.failed(index, str(exc))
        raise
    line = end_arm(result, arm, index)
    if line is not None:
        tune.report(line)
    shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class Arm:
    """A trial's student (or a cohort member's) ready to train: its config, hints, open MLflow run, the record
    sent with its first Tune result and the facts sent with every one."""

    trial_id: str  # a cohort member's is its member id
    cfg: Config
    baseline: str
    hint_set: Optional[HintSet]
    role: str
    key: str  # the duplicate index's train key
    tracker: tracking.RunLogger
    record: dict[str, Any]
    facts: dict[str, Any]

    def failed(self, index: Any, message: str) -> None:
        """End the run ``error`` (an exception the trial raises, or a cohort member's own failure)."""
        self.tracker.tags({tracking.STATUS_TAG: "error", "pursuhint.error": tracking.scrub(message)[:4000]})
        self.tracker.end("error", message)
        if index is not None:
            _finish(index, self.key, self.trial_id, "failed", "error")
        self.tracker.flush()


def prepare_arm(config: dict[str, Any], shared: SharedWork, sweep: SweepInfo, teacher: torch.nn.Module,
                trial_id: str, workdir: Path, extra_tags: Optional[dict[str, Any]] = None) -> Any:
    """The :class:`Arm` of a planned spec, with its MLflow run opened, params and artifacts logged; or, when the
    spec cannot be trained (its hints cannot pair with the student), its run ended ``invalid`` and the one Tune
    result that says so (a dict)."""
    cfg, baseline = trial_config(shared, config)
    try:
        hs = trial_hints(cfg, baseline, shared)
        student_probe = create_model(cfg.student.arch, shared.dataset.num_classes,
                                     in_channels=shared.dataset.channels)
        teacher_layers, student_layers = method_layers(student_method(cfg, hs), cfg.distill.params, hs, teacher,
                                                       student_probe, shared.dataset, cfg.selection.granularity,
                                                       cfg.distill.mapping)
    except PursuhintError as exc:
        return invalid_run(sweep, trial_id, cfg, baseline, config, str(exc), extra_tags)
    role = config.get(ROLE_KEY) or "search"
    key = train_key(cfg, None if hs is None else hs.indices) + ("-confirm" if role == "confirm" else "")
    tags = _trial_tags(cfg, baseline, hs, role, key, config) | (extra_tags or {})
    name = run_name(cfg, baseline, hs, role)
    tracker = tracking.RunLogger(sweep.tracking_uri, _opener(sweep, trial_id, name, tags))
    params = trial_params(cfg, baseline, hs, [layer.name for layer in student_layers], config,
                          shared.dataset.splits, own_layers=[layer.name for layer in teacher_layers])
    params.update(threads=torch.get_num_threads(), device_type=teacher_device(teacher))  # for an exact rerun
    given = None if params["hint_weight"] == "auto" else float(params["hint_weight"])  # None: calibrated
    if given:  # a given β is the one that trains: known now, so stopped trials and duplicates have it too
        params["hint_weight_resolved"] = given
    tracker.params(params)
    tracker.tags(tags)
    record = {MLFLOW_KEY: mlflow_record(name, params, tags)}  # sent with the first report
    _write_artifacts(workdir, hs, shared, cfg, tracker)
    facts = {"role": role, "run_seed": cfg.run_seed,
             "method_name": cfg.distill.method if hs is not None else (baseline or "kd_only"),
             "n_hints_used": params["n_hints"], "hint_layer_names": params["hint_layers"],
             "confirms": config.get(CONFIRMS_KEY) or ""}
    if given is not None:  # a calibrated β is reported by the trainer with every epoch
        facts["hint_weight_resolved"] = given
    return Arm(trial_id, cfg, baseline, hs, role, key, tracker, record, facts)


def teacher_device(teacher: torch.nn.Module) -> str:
    """The device type a trial trains on (its teacher's): ``cpu`` or ``cuda``."""
    return next(teacher.parameters()).device.type


def _quiet_worker(sweep: SweepInfo) -> None:
    """A trial worker's threads and logging: no HTTP retries that stall training, warnings only on the console."""
    tracking.fail_fast_http()
    torch.set_num_threads(max(1, int(sweep.cpus_per_trial)))
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # one "checkpoint created" line per epoch is noise
    quiet_terminal()  # a worker's console reaches the driver's terminal; Ray keeps its full log on the node


def _trial_tags(cfg: Config, baseline: str, hs: Optional[HintSet], role: str, key: str,
                config: dict[str, Any]) -> dict[str, Any]:
    """The trial's MLflow tags: baseline, status, the trained student's key, role, seed (and, confirming, what)."""
    tags = {tracking.BASELINE_TAG: baseline or "none", tracking.STATUS_TAG: "running",
            tracking.TRAIN_KEY_TAG: key, tracking.ROLE_TAG: role, "pursuhint.seed": cfg.run_seed}
    if role == "confirm":
        tags["pursuhint.confirms"] = config.get(CONFIRMS_KEY) or baseline or "none"
    if hs is not None and hs.warnings:
        tags["pursuhint.warnings"] = "; ".join(hs.warnings)[:4000]
    return tags


def _restore(workdir: Path, trial_id: str, tracker: tracking.RunLogger, record: dict[str, Any],
             subfolder: str = "") -> list[EpochStats]:
    """A retried (worker lost) or resumed (driver restarted) trial continues from Tune's newest checkpoint (a
    cohort member from its ``subfolder`` of it); the epochs it restored, which its run gets if it lacks them."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return []
    with checkpoint.as_directory() as d:
        for file in (STATE_FILE, STATE_FILE + ".prev"):  # the fit loop falls back to .prev
            if (Path(d) / subfolder / file).exists():
                shutil.copyfile(Path(d) / subfolder / file, workdir / file)
    state = resume_state(workdir / STATE_FILE)
    restored = int(state["epoch"]) if state else 0
    log.warning("trial %s restored from its checkpoint after epoch %d", trial_id, restored)
    tracker.tags({RESTORED_TAG: restored})
    record["restored_from_epoch"] = restored
    history = [EpochStats(**h) for h in state["history"]] if state else []
    log_restored_epochs(tracker, history)
    return history


def index_restored(index: Any, key: str, trial_id: str, history: list[EpochStats]) -> None:
    """Give the duplicate index the epochs a restored owner trained before its checkpoint: its claim started the
    key's history afresh, and a duplicate replays that history (without them it would lack the first epochs)."""
    if index is None:
        return
    for metrics in _running_metrics(history):
        index.update.remote(key, trial_id, metrics, None)


def epoch_metrics(stats: EpochStats, best_so_far: float) -> dict[str, float]:
    """One epoch's metrics as a trial logs them: the epoch's own, the best validation accuracy so far and, at
    the last epoch, the final one."""
    metrics = stats.as_metrics() | {"epoch": stats.epoch, "best_val_acc": best_so_far}
    if stats.epoch == stats.epochs:
        metrics["final_val_acc"] = stats.val_acc
    return metrics


def _running_metrics(history: list[EpochStats]) -> list[dict[str, float]]:
    """Each epoch's :func:`epoch_metrics`, with the best validation accuracy up to that epoch."""
    out, best = [], 0.0
    for stats in history:
        best = max(best, stats.val_acc)
        out.append(epoch_metrics(stats, best))
    return out


def log_restored_epochs(tracker: tracking.RunLogger, history: list[EpochStats]) -> None:
    """The checkpoint's epochs that the trial's run lacks: a driver stopped while the run's logging was queued
    (MLflow busy or away) lost them with the worker, and Tune's results may not reach a run recreated later."""
    for metrics in _running_metrics(history):
        tracker.epoch({k: v for k, v in metrics.items() if k != "epoch"}, int(metrics["epoch"]))


def _epoch_reporter(tracker: tracking.RunLogger, index: Any, key: str, trial_id: str, workdir: Path,
                    facts: dict[str, Any], record: dict[str, Any], best: float = 0.0,
                    send: Optional[Callable[[dict[str, Any]], None]] = None) -> Callable[[EpochStats], None]:
    """The training callback: each epoch to MLflow, the duplicate index and Tune (with a checkpoint of
    ``workdir``); a cohort member's goes to ``send`` instead, which the cohort reports for all its members."""
    import ray  # ray: a trial outside Tune (tests, distill) runs without it

    node_id = ray.get_runtime_context().get_node_id()
    best_so_far = [best]  # a restored trial's best includes the epochs before its checkpoint

    def report(stats: EpochStats) -> None:
        best_so_far[0] = max(best_so_far[0], stats.val_acc)
        metrics = epoch_metrics(stats, best_so_far[0])
        tracker.epoch({k: v for k, v in metrics.items() if k != "epoch"}, stats.epoch)
        if "hint_weight_resolved" in metrics and "hint_weight_resolved" not in facts:
            # as a param as soon as it is known: a trial ASHA stops never reaches its end
            facts["hint_weight_resolved"] = float(metrics["hint_weight_resolved"])
            tracker.params({"hint_weight_resolved": facts["hint_weight_resolved"]})
        if index is not None:
            index.update.remote(key, trial_id, metrics, tracker.run_id)
        extra = {"status": "running", "node_id": node_id, "epochs_total": stats.epochs, **facts, **record}
        record.clear()
        if send is not None:
            send(_tune_metrics(metrics | extra))
        else:
            tune.report(_tune_metrics(metrics | extra), checkpoint=tune.Checkpoint.from_directory(str(workdir)))

    return report


def end_arm(result: Any, arm: Arm, index: Any) -> Optional[dict[str, Any]]:
    """The trained student's final metrics, status and resolved β (unless an epoch logged it) to MLflow; for a
    student that did not complete, the Tune result that reports its status."""
    tracker, logged = arm.tracker, "hint_weight_resolved" in arm.facts
    status = result.status
    best = result.best_val_acc if result.fit.history else 0.0
    final = {"best_val_acc": best}
    if result.fit.history:
        final["final_val_acc"] = result.fit.history[-1].val_acc
        final.update({k: float(v) for k, v in result.fit.history[-1].extra.items()})
    tracker.metric(final, len(result.fit.history))
    tracker.tags({tracking.STATUS_TAG: status, **({"pursuhint.message": result.fit.message[:4000]}
                                                    if result.fit.message else {})})
    if result.weights.get("hint") and not logged:  # a calibrated β that no epoch reported (diverged in epoch 1)
        tracker.params({"hint_weight_resolved": result.weights["hint"]})
    tracker.end(status, result.fit.message)
    if index is not None:
        _finish(index, arm.key, arm.trial_id, "done", status)
    tracker.flush()  # one last try for anything queued; `report --sync` writes what still fails
    if status == "completed":
        return None
    last = result.fit.history[-1].val_acc if result.fit.history else 0.0
    return {"val_acc": last, "best_val_acc": best, "status": status, "epoch": len(result.fit.history),
            **arm.record}


def _claim(sweep: SweepInfo, key: str, trial_id: str, wait: bool = True) -> tuple[Any, dict[str, Any]]:
    """(duplicate index, claim): wait while another trial trains the same student (with ``wait`` false, the
    claim says ``wait`` instead). Without the index (none, or lost with its node) the trial trains on its own:
    duplicates are an optimisation only."""
    import ray  # ray: a trial outside Tune (tests, distill) runs without it

    if not sweep.duplicates_actor:
        return None, {"role": "owner"}
    try:
        index = ray.get_actor(sweep.duplicates_actor)
        while True:
            claim = ray.get(index.claim.remote(key, trial_id))
            if claim["role"] != "wait" or not wait:
                return index, claim
            time.sleep(WAIT_POLL_S)
    except (ValueError, ray.exceptions.RayError) as exc:
        log.warning("duplicate index unavailable (%s); trial %s trains on its own", exc, trial_id)
        return None, {"role": "owner"}


def _finish(index: Any, key: str, trial_id: str, state: str, status: str) -> None:
    import ray  # ray: a trial outside Tune (tests, distill) runs without it

    try:
        ray.get(index.finish.remote(key, trial_id, state, status))
    except ray.exceptions.RayError as exc:
        log.warning("duplicate index unavailable (%s)", exc)


def _opener(sweep: SweepInfo, trial_id: str, name: str, tags: dict[str, Any]) -> Callable[[], str]:
    """Finds (by trial id) or creates the trial's MLflow child run when called."""
    return lambda: tracking.child_run(sweep.tracking_uri, sweep.experiment_id, sweep.parent_run_id, trial_id,
                                      name, tags)


def _invalid(sweep: SweepInfo, trial_id: str, cfg: Config, baseline: str, sampled: dict[str, Any],
             message: str) -> None:
    """Record a trial whose sampled config cannot be trained (status ``invalid``) and end it."""
    tune.report(invalid_run(sweep, trial_id, cfg, baseline, sampled, message))


def invalid_run(sweep: SweepInfo, trial_id: str, cfg: Config, baseline: str, sampled: dict[str, Any],
                message: str, tags: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The MLflow run of an arm that cannot be trained, ended ``invalid``, filed under its stage (a confirmation
    arm with its seed and what it confirms, as a trained one); its one Tune result."""
    role = sampled.get(ROLE_KEY) or "search"
    own = _trial_tags(cfg, baseline, None, role, "", sampled)
    own.pop(tracking.TRAIN_KEY_TAG)  # it trains no student
    tags = {**own, tracking.STATUS_TAG: "invalid", "pursuhint.error": tracking.scrub(message)[:4000], **(tags or {})}
    name = run_name(cfg, baseline, None, role)
    params = trial_params(cfg, baseline, None, [], sampled)
    tracker = tracking.RunLogger(sweep.tracking_uri, _opener(sweep, trial_id, name, tags))
    tracker.params(params)
    tracker.end("invalid", message)
    tracker.flush()
    return {"val_acc": 0.0, "best_val_acc": 0.0, "status": "invalid", "error": message[:500], "epoch": 0,
            MLFLOW_KEY: mlflow_record(name, params, tags)}


def _replay(claim: dict[str, Any], tracker: tracking.RunLogger, record: dict[str, Any]) -> None:
    """Report the owner's per-epoch history as this trial's own, tagged as a duplicate."""
    for line in replayed(claim, tracker, record):
        tune.report(line)


def replayed(claim: dict[str, Any], tracker: tracking.RunLogger, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Log the owner's per-epoch history into this trial's run, tagged as a duplicate; the Tune results to report."""
    history = claim.get("history") or []
    dup_tags = {tracking.DUPLICATE_TAG: claim["owner"], tracking.STATUS_TAG: claim.get("status") or "completed"}
    tracker.tags(dup_tags)
    blob = json.loads(record[MLFLOW_KEY])
    blob["tags"].update({k: tracking.scalar(v) for k, v in dup_tags.items()})
    record = {MLFLOW_KEY: json.dumps(blob, sort_keys=True)}
    best = 0.0
    lines = []
    for metrics in history:
        best = max(best, float(metrics.get("val_acc", 0.0)))
        tracker.epoch({k: v for k, v in metrics.items() if k != "epoch"} | {"best_val_acc": best},
                      int(metrics["epoch"]))
        lines.append(_tune_metrics(metrics | {"best_val_acc": best, "status": "duplicate",
                                              "duplicate_of": claim["owner"], **record}))
        record = {}
    tracker.metric({"best_val_acc": best}, len(history))
    resolved = [m["hint_weight_resolved"] for m in history if "hint_weight_resolved" in m]
    if resolved:  # the owner's calibrated β is this trial's too
        tracker.params({"hint_weight_resolved": resolved[-1]})
    tracker.end(claim.get("status") or "completed")
    tracker.flush()
    if not history:
        lines.append({"val_acc": 0.0, "status": "duplicate", "duplicate_of": claim["owner"], "epoch": 0, **record})
    return lines


def _write_artifacts(workdir: Path, hs: Optional[HintSet], shared: SharedWork, cfg: Config,
                     tracker: tracking.RunLogger) -> None:
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

        layer_atlas(S, hs, art / "layer_atlas.png", default=shared.default_hints)
        tracker.artifact(art / "layer_atlas.png")
