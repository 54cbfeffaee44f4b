"""Tune's results folders (the search stage's and the confirmation stage's beside it) are a sweep's record;
MLflow mirrors them. ``sync_sweep`` writes into MLflow what a trial could not (the server was away, the
trial was killed between its report and its log call): the trial's run, its params and tags, every epoch's
metrics, its final status, its hint-set artifacts, and the parent run's leaderboard. It adds only what is
missing, so running it twice changes nothing.

Used by ``pursuhint report NAME --sync`` and at the end of every sweep.

A driver killed between starting a trial and saving Tune's experiment state leaves a *lost* trial: Tune
does not know it on ``--resume`` and samples a new one in its place. At the end of the sweep its folder (if
it reported before the kill) is set aside (``.lost/`` in the results folder) and its MLflow run is tagged
``pursuhint.status=lost``, ended KILLED and deleted (MLflow keeps it in the trash), so every reader sees one
run per trial.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .. import tracking
from ..errors import PursuhintError
from ..infra.fileio import write_text_atomic
from .layout import MARKER, read_marker, stage_dirs
from .hint_sets import hint_sets_for, top_hint_sets
from .results import MLFLOW_KEY, TrialRecord, confirmation_table, read_trials, rows_from_mlflow, table

# Tune's own result keys and ours that are not per-epoch metrics.
NOT_METRICS = {"epoch", "epochs_total", "status", "node_id", "trial_id", "training_iteration", "timestamp",
               "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip", "time_since_restore",
               "iterations_since_restore", "date", "done", "restored_from_epoch", "checkpoint_dir_name",
               "should_checkpoint", "experiment_tag", "duplicate_of", "error", MLFLOW_KEY}


@dataclass
class SyncSummary:
    trials: int = 0
    runs_created: int = 0
    epochs_written: int = 0
    statuses_written: int = 0
    artifacts_written: int = 0
    skipped: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = (f"{self.trials} trials checked: {self.runs_created} MLflow runs created, {self.epochs_written} "
                f"epochs, {self.statuses_written} statuses and {self.artifacts_written} artifacts written")
        return text + (f"; skipped {', '.join(self.skipped)}" if self.skipped else "")

    @property
    def changed(self) -> bool:
        return bool(self.runs_created or self.epochs_written or self.statuses_written or self.artifacts_written)


LOST_DIR = ".lost"
LOST_REASON = "the sweep's driver died before Tune saved this trial; on --resume a new trial took its place"


def saved_trial_folders(exp_dir: Path) -> Optional[set[str]]:
    """Folder names of the trials in Tune's newest saved experiment state, or None when there is none. Newest by
    the time in the file's name: a restored experiment's state files may all carry the same modification time."""
    files = sorted(Path(exp_dir).glob("experiment_state-*.json"), key=lambda p: p.name)
    if not files:
        return None
    try:
        state = json.loads(files[-1].read_text())
        return {json.loads(trial)["relative_logdir"] for trial, _meta in state["trial_data"]}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def set_aside_lost_trials(exp_dir: Path) -> list[str]:
    """Move the folders of trials Tune's final state does not know into ``.lost/``; their trial ids."""
    known = saved_trial_folders(exp_dir)
    if known is None:
        return []
    lost = [t for t in read_trials(exp_dir, silent=True) if t.folder.name not in known]
    for folder in dict.fromkeys(t.folder for t in lost):  # a cohort's members share one folder
        (Path(exp_dir) / LOST_DIR).mkdir(exist_ok=True)
        folder.rename(Path(exp_dir) / LOST_DIR / folder.name)
    return [t.trial_id for t in lost]


def unreported_lost_trials(uri: str, experiment_id: str, parent: str, stages: list[Path]) -> list[str]:
    """Trial ids of the parent's unended child runs that no stage's folder knows, at the end of a finished sweep:
    trials a killed driver had started before their first report (a duplicate waiting on its owner, a trial
    still setting up), which left no folder to set aside."""
    known = {t.trial_id for folder in stages for t in read_trials(folder, silent=True)}
    runs = tracking.find_runs(uri, experiment_id, **{tracking.PARENT_TAG: parent})
    return sorted({r.data.tags[tracking.TRIAL_TAG] for r in runs
                   if r.data.tags.get(tracking.TRIAL_TAG) and r.data.tags[tracking.TRIAL_TAG] not in known
                   and r.data.tags.get(tracking.STATUS_TAG) not in tracking.RUN_STATUS})


def retire_lost_runs(uri: str, experiment_id: str, parent: str, trial_ids: list[str]) -> int:
    """Tag, end (KILLED) and delete the unfinished child runs of the lost trials; how many."""
    n = 0
    for trial_id in trial_ids:
        for run in tracking.find_runs(uri, experiment_id, **{tracking.TRIAL_TAG: trial_id,
                                                             tracking.PARENT_TAG: parent}):
            if run.data.tags.get(tracking.STATUS_TAG) in tracking.RUN_STATUS:
                continue  # it ended: Tune knew it after all
            tracking.set_tags(uri, run.info.run_id, {tracking.STATUS_TAG: "lost", tracking.REASON_TAG: LOST_REASON})
            if run.info.status == "RUNNING":
                tracking.client(uri).set_terminated(run.info.run_id, status="KILLED")
            tracking.client(uri).delete_run(run.info.run_id)
            n += 1
    return n


def mark_finished(exp_dir: Path) -> None:
    """Record in the marker that every trial ended (``report --sync`` then completes the parent run)."""
    info = read_marker(exp_dir)
    info["finished"] = True
    write_text_atomic(Path(exp_dir) / MARKER, json.dumps(info, indent=2))


def sync_sweep(exp_dir: Path, uri: Optional[str] = None) -> SyncSummary:
    """Write into MLflow whatever of the sweep in ``exp_dir`` it is missing (see the module docstring)."""
    info = read_marker(exp_dir)
    uri = uri or info["tracking_uri"]
    tracking.check_reachable(uri)
    parent = info["parent_run_id"]
    c = tracking.client(uri)
    try:
        experiment_id = c.get_run(parent).info.experiment_id
    except Exception as exc:  # noqa: BLE001 - any MLflow failure: one sentence naming the store
        raise PursuhintError(f"the sweep's parent run {parent} is not in the MLflow store {uri} ({exc}); "
                             f"pass the --tracking-uri the sweep used") from None
    finished = bool(info.get("finished"))
    runs = {r.data.tags.get(tracking.TRIAL_TAG): r
            for r in tracking.find_runs(uri, experiment_id, **{tracking.PARENT_TAG: parent})}
    summary = SyncSummary()
    for trial in (t for folder in stage_dirs(exp_dir) for t in read_trials(folder)):
        summary.trials += 1
        if trial.record is None:
            summary.skipped.append(f"{trial.trial_id} (no result yet)")
            continue
        run = runs.get(trial.trial_id)
        if run is None:
            run_id = tracking.child_run(uri, experiment_id, parent, trial.trial_id, trial.record["run_name"],
                                        trial.record["tags"])
            summary.runs_created += 1
            tags, params = dict(trial.record["tags"]), {}
        else:
            run_id, tags, params = run.info.run_id, run.data.tags, run.data.params
        missing_params = {k: v for k, v in trial.record["params"].items() if k not in params}
        if missing_params:
            tracking.log_params(uri, run_id, missing_params)
        summary.epochs_written += _sync_epochs(uri, run_id, trial)
        status = trial.status(finished)
        if status and (run is None or tags.get(tracking.STATUS_TAG) in (None, "running")):
            extra = {k: v for k, v in trial.record["tags"].items() if k not in tags}
            tracking.set_tags(uri, run_id, {**extra, tracking.STATUS_TAG: status})
            summary.statuses_written += 1
        summary.artifacts_written += _sync_artifacts(uri, run_id, trial)
    finish_parent(uri, parent, completed=finished)
    return summary


def _sync_epochs(uri: str, run_id: str, trial: TrialRecord) -> int:
    """Log the epochs the run lacks (all metrics of an epoch go in one batch, so a step is all or none)."""
    have = tracking.logged_steps(uri, run_id)
    written = 0
    best = 0.0
    for r in trial.epochs:
        best = max(best, float(r.get("val_acc", 0.0)))
        if r["epoch"] in have:
            continue
        metrics = {k: v for k, v in r.items()
                   if k not in NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)}
        metrics.setdefault("best_val_acc", best)
        tracking.log_metrics(uri, run_id, metrics, r["epoch"])
        written += 1
    if written:
        tracking.log_metrics(uri, run_id, {"best_val_acc": best}, len(trial.epochs))
    return written


def _sync_artifacts(uri: str, run_id: str, trial: TrialRecord) -> int:
    """The hint set and atlas from the trial's newest checkpoint, when the run lacks them."""
    checkpoints = sorted(trial.folder.glob(f"checkpoint_*/{trial.artifacts}"))
    if not checkpoints:
        return 0
    have = tracking.artifact_names(uri, run_id)
    written = 0
    for name in ("hint_set.json", "layer_atlas.png"):
        path = checkpoints[-1] / name
        if path.exists() and name not in have:
            tracking.log_artifact(uri, run_id, str(path))
            written += 1
    return written


def finish_parent(uri: str, parent: str, completed: bool = True) -> None:
    """The parent run's leaderboard table, best metric and best hint set (the confirmation stage's winner when
    the sweep has one, as ``export`` writes it; else the search's top hinted trial); status ``completed`` once
    every trial has ended."""
    c = tracking.client(uri)
    rows = rows_from_mlflow(uri, parent)
    if rows:
        c.log_table(parent, table(rows), "leaderboard.json")
        best = next((r for r in rows if r.hint_indices), None)
        if best is not None:
            for name in ("final_val_acc", "best_val_acc"):  # of the top hinted trial (ranked by search.metric)
                if math.isfinite(getattr(best, name)):
                    c.log_metric(parent, name, float(getattr(best, name)))
            sweep = c.get_experiment(c.get_run(parent).info.experiment_id).name
            sets = _best_hint_sets(rows, sweep, parent, uri)
            if sets:
                with tempfile.TemporaryDirectory() as d:
                    path = Path(d) / "best_hint_set.json"
                    sets[0].save(path)
                    c.log_artifact(parent, str(path))
    experiment_id = c.get_run(parent).info.experiment_id
    tracking.end_open_children(uri, experiment_id, parent, "completed" if completed else None)
    if completed:
        c.set_tag(parent, tracking.STATUS_TAG, "completed")
        tracking.end_run(uri, parent, "completed")


def _best_hint_sets(rows: list, sweep: str, parent: str, uri: str) -> list:
    """The hint set ``export`` would write first: the confirmation table's winner, else the search's best."""
    table = confirmation_table(None, uri=uri, parent=parent)
    sets = hint_sets_for(rows, 1, table, sweep=sweep, parent=parent, uri=uri)
    if sets or not (table and table.get("configurations")):
        return sets  # without a confirmation table that was the search's best already: not read twice
    return top_hint_sets(rows, 1, sweep=sweep, parent=parent, uri=uri)  # the confirmed ones could not be read
