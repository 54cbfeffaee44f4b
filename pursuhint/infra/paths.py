"""Where pursuhint keeps what it makes (teachers, caches, Tune results, students): one folder, one rule."""

from __future__ import annotations

import os
from pathlib import Path

RUNS_ENV = "PURSUHINT_RUNS"


def runs_dir() -> Path:
    """``$PURSUHINT_RUNS``, else ``./runs``, as an absolute path (Ray workers resolve it the same way, since a
    local Ray's workers inherit the driver's environment and working directory)."""
    return Path(os.environ.get(RUNS_ENV, "runs")).absolute()
