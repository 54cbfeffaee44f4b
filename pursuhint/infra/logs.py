"""A quiet terminal, full logs on disk.

The libraries a sweep drives print their own INFO lines (MLflow's database set-up, Optuna's "a new study
created", Ray's start-up notes) on the same terminal as Tune's trial table and pursuhint's results.
``quiet_terminal`` raises their console handlers to WARNING, so what remains asks the user to act;
``log_to_file`` keeps everything (INFO and up) in the sweep's folder, ``pursuhint.log``. Until the sweep may
write its folder (Ray has started and the cluster has placed its first work), ``hold_logs`` keeps the records in
memory, and ``log_to_file`` writes them first: a sweep refused meanwhile leaves no file behind.
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


class HeldLogs(logging.Handler):
    """The libraries' INFO-and-up records, kept in memory (``hold_logs``) until ``log_to_file`` writes them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _attach(handler: logging.Handler) -> None:
    """``handler`` on every library's logger, each lowered to INFO if it was above."""
    for name in LIBRARIES:
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)


def hold_logs() -> HeldLogs:
    """Keep every library's INFO-and-up records in memory, for ``log_to_file`` to write first (or
    ``stop_logging_to_file`` to drop)."""
    held = HeldLogs()
    _attach(held)
    return held


def log_to_file(folder: Optional[Path], held: Optional[HeldLogs] = None) -> Optional[logging.Handler]:
    """Append every library's INFO-and-up records to ``folder/pursuhint.log`` (None: remote storage, no file),
    the ``held`` ones first (which stop being held either way); returns the handler, which
    ``stop_logging_to_file`` removes."""
    stop_logging_to_file(held)
    if folder is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(folder / LOG_FILE, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    _attach(handler)
    if held is not None:
        for record in held.records:
            handler.handle(record)
        held.records.clear()
    return handler


def stop_logging_to_file(handler: Optional[logging.Handler]) -> None:
    if handler is None:
        return
    for name in LIBRARIES:
        logging.getLogger(name).removeHandler(handler)
    handler.close()
