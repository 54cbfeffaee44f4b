"""A quiet terminal, full logs on disk.

The libraries a sweep drives print their own INFO lines (MLflow's database set-up, Optuna's "a new study
created", Ray's start-up notes) on the same terminal as Tune's trial table and pursuhint's results.
``quiet_terminal`` raises their console handlers to WARNING, so what remains asks the user to act;
``log_to_file`` keeps everything (INFO and up) in the sweep's folder, ``pursuhint.log``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

# The libraries whose INFO lines reach the terminal; each installs its own console handler.
LIBRARIES = ("ray", "mlflow", "optuna", "alembic", "pursuhint")
LOG_FILE = "pursuhint.log"


def _console_handlers(logger: logging.Logger) -> list[logging.Handler]:
    return [h for h in logger.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


class _NoticesOnly(logging.Filter):
    """Drops warnings that ask nothing of the user: Ray's note, at every local start, that token authentication
    is on (it is the secure default; the note only says how to turn it off). The log file still has them."""

    NOTICES = ("Token authentication is enabled for this Ray cluster",)

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOTICES)


_NOTICES_ONLY = _NoticesOnly()


def quiet_terminal() -> None:
    """Console handlers of the libraries show WARNING and above, less Ray's notices (see ``_NoticesOnly``); the
    loggers keep their levels, so a file handler (``log_to_file``, which lowers them to INFO) still gets
    everything."""
    for name in LIBRARIES:
        logger = logging.getLogger(name)
        handlers = _console_handlers(logger)
        for handler in handlers:
            handler.setLevel(max(handler.level, logging.WARNING))
            if _NOTICES_ONLY not in handler.filters:
                handler.addFilter(_NOTICES_ONLY)


def log_to_file(folder: Optional[Path]) -> Optional[logging.Handler]:
    """Append every library's INFO-and-up records to ``folder/pursuhint.log`` (None: remote storage, no file);
    returns the handler, which ``stop_logging_to_file`` removes."""
    if folder is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(folder / LOG_FILE, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in LIBRARIES:
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
    return handler


def stop_logging_to_file(handler: Optional[logging.Handler]) -> None:
    if handler is None:
        return
    for name in LIBRARIES:
        logging.getLogger(name).removeHandler(handler)
    handler.close()
