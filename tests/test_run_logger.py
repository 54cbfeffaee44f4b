"""``tracking.RunLogger``: a trial's MLflow calls reach its run in order, and are queued (training goes on)
while the store cannot be reached, then sent once it can."""

from __future__ import annotations

from pursuhint import tracking

from sweep_helpers import mlflow_db


def test_calls_reach_the_run_and_wait_while_the_store_is_away(tmp_path, monkeypatch):
    uri = mlflow_db(tmp_path)
    exp = tracking.ensure_experiment(uri, "t_logger")
    parent = tracking.parent_run(uri, exp, str(tmp_path), "sweep-t_logger")
    opened = []

    def open_run() -> str:
        opened.append(1)
        if len(opened) == 1:
            raise ConnectionError("server away")  # the first try fails: nothing is lost
        return tracking.child_run(uri, exp, parent, "trial-1", "trial-1", {tracking.STATUS_TAG: "running"})

    logger = tracking.RunLogger(uri, open_run)
    assert logger.run_id is None
    logger.params({"method": "at"})
    logger.epoch({"val_acc": 50.0}, 1)
    assert logger.pending  # queued while the retry wait runs
    monkeypatch.setattr(logger, "retry_at", 0.0)
    logger.epoch({"val_acc": 60.0}, 2)
    logger.epoch({"val_acc": 99.0}, 2)  # an epoch already logged is not sent twice
    logger.tags({tracking.STATUS_TAG: "completed"})
    logger.end("completed")
    logger.flush()
    run = tracking.client(uri).get_run(logger.run_id)
    assert run.data.params == {"method": "at"} and run.info.status == "FINISHED"
    history = tracking.client(uri).get_metric_history(logger.run_id, "val_acc")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(1, 50.0), (2, 60.0)]
    assert not logger.pending and len(opened) == 2


def test_experiments_open_as_model_training_in_mlflow(tmp_path):
    """MLflow 3 shows an experiment without mlflow.experimentKind as a GenAI one; a new experiment gets the tag,
    and an existing one without it (made by an older pursuhint) gets it when a sweep uses it again."""
    import mlflow

    uri = mlflow_db(tmp_path)
    c = tracking.client(uri)
    exp = tracking.ensure_experiment(uri, "t_kind")
    assert c.get_experiment(exp).tags["mlflow.experimentKind"] == "custom_model_development"
    old = c.create_experiment("t_old")
    assert "mlflow.experimentKind" not in c.get_experiment(old).tags
    assert tracking.ensure_experiment(uri, "t_old") == old
    assert c.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    assert mlflow.__version__.startswith("3.")


def test_a_restored_trial_writes_the_checkpoint_epochs_its_run_lacks(tmp_path):
    """A driver stopped while a trial's logging was queued loses those epochs with the worker; the trial, restored
    from its checkpoint, writes them from the checkpoint's history (epochs the run has are not written twice)."""
    from pursuhint.search.trial import log_restored_epochs
    from pursuhint.train.loop import EpochStats

    uri = mlflow_db(tmp_path)
    exp = tracking.ensure_experiment(uri, "t_restored")
    parent = tracking.parent_run(uri, exp, str(tmp_path), "sweep-t_restored")
    run_id = tracking.child_run(uri, exp, parent, "trial-1", "trial-1", {})
    tracking.log_metrics(uri, run_id, {"val_acc": 55.0}, 2)  # the one epoch that reached MLflow before the stop

    def stats(epoch: int, val: float) -> EpochStats:
        return EpochStats(epoch=epoch, epochs=3, lr=0.1, losses={"total": 1.0 / epoch, "ce": 0.5}, train_acc=40.0,
                          val_acc=val, val_top5=90.0, epoch_time=1.0, images_per_s=100.0)

    logger = tracking.RunLogger(uri, lambda: tracking.child_run(uri, exp, parent, "trial-1", "trial-1", {}))
    log_restored_epochs(logger, [stats(1, 50.0), stats(2, 60.0), stats(3, 58.0)])
    logger.flush()
    c = tracking.client(uri)
    val = sorted((m.step, m.value) for m in c.get_metric_history(run_id, "val_acc"))
    assert val == [(1, 50.0), (2, 55.0), (3, 58.0)]  # epoch 2 kept as the run had it
    best = sorted((m.step, m.value) for m in c.get_metric_history(run_id, "best_val_acc"))
    assert best == [(1, 50.0), (3, 60.0)]  # the running best, epoch 2's from the checkpoint
    assert [m.value for m in c.get_metric_history(run_id, "final_val_acc")] == [58.0]
    assert [m.step for m in c.get_metric_history(run_id, "loss_ce")] == [1, 3]
