"""A quiet terminal, full logs on disk: the libraries' console handlers show warnings only, while the sweep's
``pursuhint.log`` keeps their INFO lines."""

from __future__ import annotations

import logging

from pursuhint.logs import LOG_FILE, log_to_file, quiet_terminal, stop_logging_to_file


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
