"""A quiet terminal, full logs on disk: the libraries' console handlers show warnings only, while the sweep's
``pursuhint.log`` keeps their INFO lines."""

from __future__ import annotations

import logging

from pursuhint.infra.logs import LOG_FILE, hold_logs, log_to_file, quiet_terminal, stop_logging_to_file


def test_info_lines_leave_the_terminal_for_the_log_file(tmp_path):
    import mlflow  # noqa: F401 - installs its console handler
    import optuna

    quiet_terminal()
    for name in ("optuna", "mlflow"):
        handlers = [h for h in logging.getLogger(name).handlers if type(h) is logging.StreamHandler]
        assert handlers and all(h.level >= logging.WARNING for h in handlers), name
    handler = log_to_file(tmp_path)
    try:
        optuna.create_study(study_name="quiet_check")
        logging.getLogger("mlflow.store").info("an MLflow INFO line")
        logging.getLogger("mlflow.store").warning("an MLflow warning")
    finally:
        stop_logging_to_file(handler)
    text = (tmp_path / LOG_FILE).read_text()
    assert "A new study created in memory with name: quiet_check" in text
    assert "INFO mlflow.store: an MLflow INFO line" in text and "WARNING mlflow.store: an MLflow warning" in text
    assert all(handler not in logging.getLogger(n).handlers for n in ("optuna", "mlflow", "ray"))
    assert log_to_file(None) is None  # remote storage: no file


def test_rays_token_auth_notice_stays_off_the_terminal_but_in_the_log(tmp_path):
    import ray  # noqa: F401 - installs its console handler

    quiet_terminal()
    console = [h for h in logging.getLogger("ray").handlers
               if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    assert console  # Ray's own PlainRayHandler
    notice = logging.getLogger("ray._private.authentication.authentication_token_setup").makeRecord(
        "ray._private.authentication.authentication_token_setup", logging.WARNING, __file__, 1,
        "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out.", (), None)
    other = logging.getLogger("ray").makeRecord("ray", logging.WARNING, __file__, 1, "a real warning", (), None)
    assert all(not h.filter(notice) for h in console) and all(h.filter(other) for h in console)
    handler = log_to_file(tmp_path)
    try:
        logging.getLogger("ray._private.authentication.authentication_token_setup").handle(notice)
    finally:
        stop_logging_to_file(handler)
    assert "Token authentication is enabled for this Ray cluster" in (tmp_path / LOG_FILE).read_text()


def test_records_held_until_the_sweep_may_write_come_first_in_its_log_and_a_refused_one_writes_nothing(tmp_path):
    """A sweep holds its logs in memory until the cluster has placed its first work: then ``pursuhint.log`` starts
    with them; a sweep refused meanwhile drops them and leaves no folder."""
    held = hold_logs()
    try:
        logging.getLogger("ray._private.worker").info("connecting to the cluster")
        logging.getLogger("optuna").debug("below INFO: not kept")
    finally:
        handler = log_to_file(tmp_path / "sweep", held)
    try:
        logging.getLogger("mlflow.store").info("the parent run is open")
    finally:
        stop_logging_to_file(handler)
    lines = (tmp_path / "sweep" / LOG_FILE).read_text().splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == ["INFO ray._private.worker: connecting to the cluster",
                                                         "INFO mlflow.store: the parent run is open"]
    assert all(h not in logging.getLogger(n).handlers for h in (held, handler) for n in ("ray", "mlflow", "optuna"))

    refused = hold_logs()
    logging.getLogger("ray").warning("the cluster has no GPU")
    assert [r.getMessage() for r in refused.records] == ["the cluster has no GPU"]
    stop_logging_to_file(refused)
    assert refused not in logging.getLogger("ray").handlers and sorted(tmp_path.iterdir()) == [tmp_path / "sweep"]
