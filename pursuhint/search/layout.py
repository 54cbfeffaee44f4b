"""Where a sweep's parts lie: Tune's results folder (default ``$PURSUHINT_RUNS/ray_results/<name>``), the marker
file that names the sweep's MLflow store and parent run, the confirmation stage's round folders beside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from ..errors import PursuhintError
from ..infra.paths import runs_dir

CONFIRMATION_FILE = "confirmation.json"  # the confirmation table, in the sweep's folder and on its parent run
MARKER = "pursuhint_sweep.json"  # in Tune's folder: the sweep's name, MLflow store, parent run, config


def read_marker(exp_dir: Path) -> dict[str, Any]:
    """The sweep's marker (name, tracking URI, parent run, config, finished)."""
    marker = Path(exp_dir) / MARKER
    if not marker.exists():
        raise PursuhintError(f"no sweep results in {exp_dir}; pass the --storage-path the sweep used")
    return json.loads(marker.read_text())


def default_storage() -> Path:
    """Where Tune's results go by default: ``$PURSUHINT_RUNS/ray_results`` (default ``./runs/ray_results``)."""
    return runs_dir() / "ray_results"


def experiment_dir(name: str, storage_path: Optional[str] = None) -> Optional[Path]:
    """Tune's results folder of sweep ``name`` under ``storage_path`` (default ``default_storage()``), or
    None when ``storage_path`` is remote storage (``s3://...``): Tune writes there itself, we cannot read."""
    if storage_path and "://" in storage_path:
        return None
    root = Path(storage_path).expanduser().absolute() if storage_path else default_storage()
    return root / name


def confirm_name(name: str) -> str:
    """The Tune experiment of a sweep's confirmation stage, beside the search stage's."""
    return f"{name}-confirm"


def confirm_round_name(name: str, number: int) -> str:
    """The Tune experiment of round ``number`` (from 1) of a sweep's confirmation stage: the first round is
    ``<name>-confirm``, a race's later rounds ``<name>-confirm-round2``, ..."""
    return confirm_name(name) + ("" if number == 1 else f"-round{number}")


def stage_dirs(exp_dir: Path) -> list[Path]:
    """The sweep's Tune folders: the search stage's and, beside it, its confirmation stage's rounds that ran."""
    out, number = [Path(exp_dir)], 1
    while (folder := Path(exp_dir).parent / confirm_round_name(Path(exp_dir).name, number)).is_dir():
        out.append(folder)
        number += 1
    return out
