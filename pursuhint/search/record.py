"""``SweepRecord``: a finished or running sweep found by its name, the one place that reads one back as a whole.

Tune's results folder comes first (its marker file, ``confirmation.json``, ``optuna.db``: the sweep's record,
readable while MLflow is away); the sweep's MLflow parent run when the folder is not here (Tune wrote to
remote storage, or the sweep ran on another machine). The readers themselves are ``search.results``' (rows,
the confirmation table) and ``search.hint_sets``' (hint sets).
"""

from __future__ import annotations

import logging
import sys
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Any, Optional

from .. import tracking
from ..config import config_from_text
from ..errors import PursuhintError, TrackingError
from ..hints.hintset import HintSet
from .importance import STUDY_FILE, study_storage
from .layout import MARKER, experiment_dir, read_marker
from .hint_sets import hint_sets_for
from .results import TrialRow, confirmation_table, find_parent, recorded_folder, rows_from_mlflow, rows_from_tune
from .sync import SyncSummary, sync_sweep


class SweepRecord:
    """The sweep named ``name`` in the MLflow store ``tracking_uri`` (None: the default store), its Tune folder
    under ``storage_path`` when given, else where its parent run says, else the default ``runs/ray_results``."""

    def __init__(self, name: str, tracking_uri: Optional[str] = None, storage_path: Optional[str] = None) -> None:
        self.name = name
        self.tracking_uri = tracking_uri  # as given; ``sync`` sets it to the store the sweep wrote to
        self.storage_path = storage_path

    @property
    def uri(self) -> str:
        """The MLflow store read (absolute)."""
        return tracking.resolve_tracking_uri(self.tracking_uri, None)

    @cached_property
    def _recorded(self) -> tuple[Optional[Path], Optional[str]]:
        """Where the sweep's parent run says its folder and study are, read from MLflow once."""
        return recorded_folder(self.uri, self.name)

    @property
    def folder(self) -> Optional[Path]:
        """The sweep's Tune results folder: under ``storage_path`` when given; else where the sweep's parent run
        says it put it; else the default ``runs/ray_results/NAME`` (None: remote storage)."""
        if self.storage_path:
            return experiment_dir(self.name, self.storage_path)
        return self._recorded[0] or experiment_dir(self.name, None)

    def rows(self) -> tuple[list[TrialRow], str]:
        """The search stage's rows and where they were read (see ``_read``)."""
        rows, _, where = self._read()
        return rows, where

    def hint_sets(self, top: int, table: Optional[dict[str, Any]] = None) -> tuple[list[HintSet], str]:
        """The ``top`` hint sets ``export`` writes (the confirmation ``table``'s when given, see ``hint_sets_for``)
        and where they were read."""
        _, sets, where = self._read(top, table)
        return sets, where

    def _read(self, top: Optional[int] = None,
              table: Optional[dict[str, Any]] = None) -> tuple[list[TrialRow], list[HintSet], str]:
        """(rows, hint sets, where) from MLflow, or from Tune's results folder when MLflow is unreachable (said in
        one line); no hint sets without ``top``."""
        uri = self.uri
        try:
            tracking.check_reachable(uri)
        except TrackingError as exc:
            exp_dir = experiment_dir(self.name, self.storage_path)
            if exp_dir is None or not exp_dir.exists():
                raise
            print(f"pursuhint: warning: {exc}; reading Tune's results in {exp_dir} instead", file=sys.stderr)
            rows = rows_from_tune(exp_dir)
            sets = hint_sets_for(rows, top, table, sweep=exp_dir.name) if top else []
            return rows, sets, str(exp_dir)
        _, parent = find_parent(uri, self.name)
        rows = rows_from_mlflow(uri, parent)
        sets = hint_sets_for(rows, top, table, sweep=self.name, parent=parent, uri=uri) if top else []
        return rows, sets, f"MLflow {uri}, run {parent}"

    def confirmation(self) -> Optional[dict[str, Any]]:
        """The sweep's confirmation table (``confirmation.json``): from its Tune folder, else from its MLflow parent
        run (Tune's results on remote storage); None when the sweep has none."""
        folder = self.folder
        if folder is not None and folder.is_dir():  # the sweep's folder has the table whenever the sweep has one
            return confirmation_table(folder)
        uri = self.uri
        try:
            _, parent = find_parent(uri, self.name)
            return confirmation_table(None, uri=uri, parent=parent)
        except Exception as exc:  # noqa: BLE001 - no record here or MLflow away: the rows' reader says which
            logging.getLogger("pursuhint").info("cannot read the confirmation table from MLflow (%s)", exc)
            return None

    def study_url(self) -> Optional[str]:
        """The sweep's Optuna storage: where its parent run says it is (unless ``storage_path`` is given), else its
        config's (read from Tune's folder), else the default file there."""
        if not self.storage_path and self._recorded[1]:
            return self._recorded[1]
        folder = self.folder
        if folder is None:
            return None
        marker = folder / MARKER
        if marker.is_file():
            try:
                return study_storage(config_from_text(read_marker(folder)["config_yaml"]), folder)
            except (PursuhintError, KeyError, ValueError) as exc:  # an older marker: the default study file
                logging.getLogger("pursuhint").info("cannot read the sweep's config from %s (%s)", marker, exc)
        return f"sqlite:///{folder / STUDY_FILE}"

    def config_yaml(self) -> str:
        """The sweep's config: from Tune's results folder when it is here, else the parent run's config.yaml."""
        exp_dir = self.folder
        if exp_dir is not None and (exp_dir / MARKER).exists():
            return read_marker(exp_dir)["config_yaml"]
        uri = self.uri
        _, parent = find_parent(uri, self.name)
        with tempfile.TemporaryDirectory() as d:
            return Path(tracking.client(uri).download_artifacts(parent, "config.yaml", d)).read_text()

    def sync(self) -> tuple[Path, str, SyncSummary]:
        """Write into MLflow what the sweep's trials could not (see ``search.sync``), into ``tracking_uri`` or else
        the store the sweep wrote to, which the record reads from then on; (folder, store, what was written)."""
        exp_dir = self.folder
        if exp_dir is None:
            raise PursuhintError(f"report --sync reads Tune's results from a local or shared folder, not from "
                                 f"{self.storage_path}; pass the folder the sweep's results are in")
        info = read_marker(exp_dir)
        uri = self.tracking_uri or info["tracking_uri"]
        self.tracking_uri = uri  # the leaderboard after it reads the store the sweep wrote to
        return exp_dir, uri, sync_sweep(exp_dir, uri)
