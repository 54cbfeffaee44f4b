"""``tracking.RunLogger``: a trial's MLflow calls reach its run in order, and are queued (training goes on)
while the store cannot be reached, then sent once it can."""

from __future__ import annotations

from pursuhint import tracking


def test_calls_reach_the_run_and_wait_while_the_store_is_away(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
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

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = tracking.client(uri)
    exp = tracking.ensure_experiment(uri, "t_kind")
    assert c.get_experiment(exp).tags["mlflow.experimentKind"] == "custom_model_development"
    old = c.create_experiment("t_old")
    assert "mlflow.experimentKind" not in c.get_experiment(old).tags
    assert tracking.ensure_experiment(uri, "t_old") == old
    assert c.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    assert mlflow.__version__.startswith("3.")
