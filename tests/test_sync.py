"""`search.sync`: what MLflow missed is written from Tune's results folder, only once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pursuhint import tracking
from pursuhint.errors import PursuhintError
from pursuhint.search.layout import MARKER
from pursuhint.search.results import MLFLOW_KEY, TrialRecord, read_trials
from pursuhint.search.sync import sync_sweep
from pursuhint.search.trial import mlflow_record

from sweep_helpers import mlflow_db


def epoch_line(trial_id: str, epoch: int, total: int, acc: float, best: float = 0.0, **extra) -> dict:
    return {"trial_id": trial_id, "epoch": epoch, "epochs_total": total, "val_acc": acc, "train_loss": 1.0 / epoch,
            "loss_ce": 0.5, "epoch_time": 0.1, "best_val_acc": max(acc, best), "status": "running", "pid": 42,
            "time_total_s": 3.0, "training_iteration": epoch, **extra}


def write_trial(exp_dir: Path, trial_id: str, lines: list[dict], sampled: dict, hint_set: bool = False) -> Path:
    folder = exp_dir / f"run_trial_{trial_id}"
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps(sampled))
    text = "\n".join(json.dumps(line) for line in lines)
    (folder / "result.json").write_text(text + "\n{\"torn\": ")  # a line being written when the driver died
    if hint_set:
        art = folder / "checkpoint_000001" / "artifacts"
        art.mkdir(parents=True)
        (art / "hint_set.json").write_text('{"schema_version": 1}')
    return folder


@pytest.fixture
def sweep_folder(tmp_path):
    """A parent run in a real sqlite store and a Tune folder with 4 trials MLflow never heard of."""
    uri = mlflow_db(tmp_path)
    exp_id = tracking.ensure_experiment(uri, "t_sync")
    exp_dir = tmp_path / "rr" / "t_sync"
    parent = tracking.parent_run(uri, exp_id, str(exp_dir), "sweep-t_sync")
    exp_dir.mkdir(parents=True)
    (exp_dir / MARKER).write_text(json.dumps({"name": "t_sync", "tracking_uri": uri, "parent_run_id": parent,
                                              "config_yaml": "", "finished": True}))

    def rec(name, hints=""):
        return mlflow_record(name, {"method": "at", "hint_layers": hints, "hint_indices": "1,2" if hints else ""},
                             {tracking.BASELINE_TAG: "none", tracking.STATUS_TAG: "running"})

    write_trial(exp_dir, "a", [epoch_line("a", 1, 3, 50.0, **{MLFLOW_KEY: rec("a", "l1,l2")}),
                               epoch_line("a", 2, 3, 60.0), epoch_line("a", 3, 3, 55.0, best=60.0)], {}, hint_set=True)
    write_trial(exp_dir, "b", [epoch_line("b", 1, 3, 40.0, **{MLFLOW_KEY: rec("b")})], {})  # ASHA stopped it
    write_trial(exp_dir, "c", [epoch_line("c", 1, 3, 30.0, **{MLFLOW_KEY: rec("c")}),
                               {"trial_id": "c", "epoch": 1, "val_acc": 30.0, "status": "diverged"}], {})
    write_trial(exp_dir, "d", [], {})  # never reported anything
    return uri, parent, exp_dir


def test_sync_writes_what_mlflow_missed_once(sweep_folder):
    uri, parent, exp_dir = sweep_folder
    summary = sync_sweep(exp_dir)
    assert (summary.trials, summary.runs_created, summary.epochs_written, summary.statuses_written,
            summary.artifacts_written) == (3, 3, 5, 3, 1)
    exp_id = tracking.client(uri).get_run(parent).info.experiment_id
    runs = {r.data.tags[tracking.TRIAL_TAG]: r for r in tracking.find_runs(uri, exp_id, **{tracking.PARENT_TAG: parent})}
    assert {k: r.data.tags[tracking.STATUS_TAG] for k, r in runs.items()} == \
        {"a": "completed", "b": "stopped", "c": "diverged"}
    client = tracking.client(uri)
    history = client.get_metric_history(runs["a"].info.run_id, "val_acc")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(1, 50.0), (2, 60.0), (3, 55.0)]
    assert runs["a"].data.metrics["best_val_acc"] == 60.0
    assert "pid" not in runs["a"].data.metrics and "time_total_s" not in runs["a"].data.metrics
    assert runs["a"].data.params["hint_layers"] == "l1,l2"
    assert {f.path for f in client.list_artifacts(runs["a"].info.run_id)} == {"hint_set.json"}
    assert client.get_run(parent).data.tags[tracking.STATUS_TAG] == "completed"

    again = sync_sweep(exp_dir)
    assert (again.runs_created, again.epochs_written, again.statuses_written, again.artifacts_written) == (0, 0, 0, 0)
    assert not again.changed


def test_sync_writes_the_confirmation_stages_trials_too(sweep_folder):
    """The confirmation stage's Tune folder sits beside the search stage's; its trials are synced alike."""
    uri, parent, exp_dir = sweep_folder
    record = mlflow_record("confirm-x-seed1", {"method": "at", "hint_layers": "l1", "hint_indices": "1"},
                           {tracking.BASELINE_TAG: "none", tracking.STATUS_TAG: "running", tracking.ROLE_TAG: "confirm"})
    write_trial(exp_dir.parent / "t_sync-confirm", "k_0",
                [epoch_line("k_0", 1, 2, 52.0, **{MLFLOW_KEY: record}), epoch_line("k_0", 2, 2, 58.0, test_acc=57.5)],
                {})
    summary = sync_sweep(exp_dir)
    assert (summary.trials, summary.runs_created, summary.epochs_written) == (4, 4, 7)
    exp_id = tracking.client(uri).get_run(parent).info.experiment_id
    (run,) = tracking.find_runs(uri, exp_id, **{tracking.PARENT_TAG: parent, tracking.TRIAL_TAG: "k_0"})
    assert run.data.tags[tracking.ROLE_TAG] == "confirm" and run.data.tags[tracking.STATUS_TAG] == "completed"
    assert run.data.metrics["test_acc"] == 57.5 and run.data.metrics["val_acc"] == 58.0
    assert not sync_sweep(exp_dir).changed


def test_sync_fills_gaps_in_an_existing_run_without_touching_its_status(sweep_folder):
    uri, parent, exp_dir = sweep_folder
    exp_id = tracking.client(uri).get_run(parent).info.experiment_id
    run_id = tracking.child_run(uri, exp_id, parent, "a", "a", {tracking.STATUS_TAG: "completed"})
    tracking.log_metrics(uri, run_id, {"val_acc": 50.0}, 1)  # epoch 1 was logged live; 2 and 3 were not
    summary = sync_sweep(exp_dir)
    assert summary.runs_created == 2
    assert sorted(m.step for m in tracking.client(uri).get_metric_history(run_id, "val_acc")) == [1, 2, 3]


def test_sync_ends_runs_in_mlflows_own_terms_and_repairs_old_sweeps(sweep_folder):
    uri, parent, exp_dir = sweep_folder
    c = tracking.client(uri)
    exp_id = c.get_run(parent).info.experiment_id
    # a run recorded before runs were ended: its pursuhint.status is final, MLflow still says RUNNING
    old = tracking.child_run(uri, exp_id, parent, "a", "a", {tracking.STATUS_TAG: "completed"})
    assert c.get_run(old).info.status == "RUNNING"
    sync_sweep(exp_dir)
    runs = {r.data.tags[tracking.TRIAL_TAG]: r for r in tracking.find_runs(uri, exp_id, **{tracking.PARENT_TAG: parent})}
    assert {k: r.info.status for k, r in runs.items()} == {"a": "FINISHED", "b": "FINISHED", "c": "FAILED"}
    assert c.get_run(parent).info.status == "FINISHED"
    finished = c.search_runs([exp_id], "attributes.status = 'FINISHED'")
    assert {r.info.run_id for r in finished} >= {parent, runs["a"].info.run_id, runs["b"].info.run_id}


def test_interrupted_runs_end_killed_and_a_resume_reopens_them(tmp_path):
    uri = mlflow_db(tmp_path)
    exp_id = tracking.ensure_experiment(uri, "t_kill")
    parent = tracking.parent_run(uri, exp_id, "/x/t_kill", "sweep-t_kill")
    done = tracking.child_run(uri, exp_id, parent, "a", "a", {tracking.STATUS_TAG: "diverged"})
    live = tracking.child_run(uri, exp_id, parent, "b", "b", {tracking.STATUS_TAG: "running"})
    assert tracking.end_open_children(uri, exp_id, parent, "interrupted", "sweep interrupted") == 2
    tracking.end_run(uri, parent, "interrupted")
    c = tracking.client(uri)
    assert c.get_run(done).info.status == "FAILED"  # it had ended: its own status, not the interruption's
    assert c.get_run(live).info.status == "KILLED"
    assert c.get_run(live).data.tags[tracking.REASON_TAG] == "sweep interrupted"
    assert c.get_run(parent).info.status == "KILLED"
    assert tracking.child_run(uri, exp_id, parent, "b", "b", {}) == live  # --resume finds it ...
    assert c.get_run(live).info.status == "RUNNING"  # ... and reopens it
    assert tracking.parent_run(uri, exp_id, "/x/t_kill", "sweep-t_kill") == parent
    assert c.get_run(parent).info.status == "RUNNING"
    assert c.get_run(done).info.status == "FAILED"  # a run that had ended stays ended


def test_unfinished_sweep_leaves_running_trials_alone():
    rec = TrialRecord("x", Path("."), [epoch_line("x", 1, 3, 10.0)], None, errored=False)
    assert rec.status(sweep_finished=False) is None
    assert rec.status(sweep_finished=True) == "stopped"
    assert TrialRecord("x", Path("."), [epoch_line("x", 1, 3, 10.0)], None, errored=True).status(True) == "error"
    assert TrialRecord("x", Path("."), [epoch_line("x", 3, 3, 10.0)], None, errored=True).status(False) == "completed"


def test_sync_refuses_a_folder_without_a_sweep(tmp_path):
    with pytest.raises(PursuhintError, match="no sweep results in"):
        sync_sweep(tmp_path)
    assert read_trials(tmp_path) == []


def test_a_trial_tune_never_saved_is_set_aside_and_its_run_retired(tmp_path):
    """The driver died after starting trial ``lost`` but before Tune saved it: ``--resume`` replaced it with a new
    trial, so at the end its folder moves to ``.lost/`` and its half-written run leaves the sweep's runs."""
    from pursuhint.search.sync import LOST_DIR, retire_lost_runs, set_aside_lost_trials

    uri = mlflow_db(tmp_path)
    exp_id = tracking.ensure_experiment(uri, "t_lost")
    exp_dir = tmp_path / "t_lost"
    parent = tracking.parent_run(uri, exp_id, str(exp_dir), "sweep-t_lost")
    kept = write_trial(exp_dir, "kept", [epoch_line("kept", 1, 1, 50.0)], {})
    lost = write_trial(exp_dir, "lost", [epoch_line("lost", 1, 3, 40.0)], {})
    assert set_aside_lost_trials(exp_dir) == []  # no saved state yet: nothing is judged lost
    state = {"trial_data": [[json.dumps({"trial_id": "kept", "relative_logdir": kept.name}), "{}"]]}
    (exp_dir / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps(state))
    runs = {t: tracking.child_run(uri, exp_id, parent, t, t, {tracking.STATUS_TAG: s})
            for t, s in (("kept", "completed"), ("lost", "running"))}

    assert set_aside_lost_trials(exp_dir) == ["lost"]
    assert not lost.exists() and (exp_dir / LOST_DIR / lost.name / "result.json").is_file() and kept.is_dir()
    assert [t.trial_id for t in read_trials(exp_dir)] == ["kept"]
    assert retire_lost_runs(uri, exp_id, parent, ["lost", "kept"]) == 1  # a run that ended is left alone
    gone = tracking.client(uri).get_run(runs["lost"])
    assert (gone.info.lifecycle_stage, gone.info.status) == ("deleted", "KILLED")
    assert gone.data.tags[tracking.STATUS_TAG] == "lost" and "--resume" in gone.data.tags[tracking.REASON_TAG]
    assert [r.info.run_id for r in tracking.find_runs(uri, exp_id, **{tracking.PARENT_TAG: parent})] == [runs["kept"]]
    assert set_aside_lost_trials(exp_dir) == []  # idempotent


def test_a_lost_trial_that_never_reported_has_no_folder_but_its_run_is_found_and_retired(tmp_path):
    """A driver killed while a trial waited on its duplicate's owner (or was still setting up) leaves an open
    run and no folder; at the end of the sweep the open runs no stage's folder knows are the lost ones."""
    from pursuhint.search.sync import retire_lost_runs, unreported_lost_trials

    uri = mlflow_db(tmp_path)
    exp_id = tracking.ensure_experiment(uri, "t_unreported")
    search, confirm = tmp_path / "t_unreported", tmp_path / "t_unreported-confirm"
    parent = tracking.parent_run(uri, exp_id, str(search), "sweep-t_unreported")
    write_trial(search, "known", [epoch_line("known", 1, 1, 50.0)], {})
    write_trial(confirm, "c_0", [epoch_line("c_0", 1, 1, 51.0)], {})
    runs = {t: tracking.child_run(uri, exp_id, parent, t, t, {tracking.STATUS_TAG: s})
            for t, s in (("known", "running"), ("c_0", "completed"), ("never", "running"), ("ended", "completed"))}
    # "known" is still open but Tune knows it (sync ends it); "ended" ended, so Tune knew it after all
    assert unreported_lost_trials(uri, exp_id, parent, [search, confirm]) == ["never"]
    assert unreported_lost_trials(uri, exp_id, parent, [search]) == ["never"]  # c_0 ended: not lost either way
    assert retire_lost_runs(uri, exp_id, parent, ["never"]) == 1
    assert tracking.client(uri).get_run(runs["never"]).info.lifecycle_stage == "deleted"
    assert unreported_lost_trials(uri, exp_id, parent, [search, confirm]) == []


def test_the_newest_saved_state_is_found_by_its_name_when_every_file_has_the_same_time(tmp_path):
    """A restored experiment rewrites its state files at once (equal modification times): the newest is the one
    whose name says so, or a trial Tune saved later would be judged lost and set aside."""
    import os

    from pursuhint.search.sync import saved_trial_folders

    older = {"trial_data": [[json.dumps({"relative_logdir": "a"}), "{}"]]}
    newer = {"trial_data": [[json.dumps({"relative_logdir": "a"}), "{}"], [json.dumps({"relative_logdir": "b"}), "{}"]]}
    files = [(tmp_path / "experiment_state-2026-12-03_08-30-29.json", older),
             (tmp_path / "experiment_state-2026-12-03_08-32-02.json", newer)]
    for path, state in files:
        path.write_text(json.dumps(state))
    os.utime(files[1][0], (1_000_000, 1_000_000))
    os.utime(files[0][0], (1_000_001, 1_000_001))  # the older state looks newer on disk
    assert saved_trial_folders(tmp_path) == {"a", "b"}
