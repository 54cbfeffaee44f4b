"""The sweep's MLflow parent run: opening it, recording what the sweep is and where its parts are, the
confirmation table, the leaderboard and best hint set, ``report.html``, and closing it (completed or
interrupted). MLflow being away never fails a sweep here: Tune's folder keeps every result."""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from .. import tracking
from ..config import Config
from ..errors import SweepInterrupted
from ..infra.fileio import write_text_atomic
from ..plots import confirmation_plot
from .confirm import ANSWER_TAG, FILE, headline
from .importance import NoImportances, param_importances
from .report import write_report
from .layout import stage_dirs
from .results import TrialRow, rows_from_mlflow, rows_from_tune
from .sync import (finish_parent, mark_finished, retire_lost_runs, set_aside_lost_trials, sync_sweep,
                   unreported_lost_trials)


@dataclass
class ParentRun:
    """The MLflow run ``run_id`` (experiment ``experiment_id`` in store ``uri``) every trial of a sweep is a child of."""

    uri: str
    experiment_id: str
    run_id: str

    @classmethod
    def open(cls, uri: str, name: str, sweep_dir: str) -> "ParentRun":
        """The parent run of sweep ``name`` whose Tune folder is ``sweep_dir``: reopened on ``--resume``, else new."""
        experiment_id = tracking.ensure_experiment(uri, name)
        return cls(uri, experiment_id, tracking.parent_run(uri, experiment_id, sweep_dir, run_name=f"sweep-{name}"))

    def log_sweep(self, cfg: Config, study_url: Optional[str]) -> None:
        """What the sweep is (its main settings, config and search space, once) and where its Optuna study is,
        so that ``report`` and ``export`` find the sweep's parts from its name and tracking URI alone."""
        from mlflow.entities import Param  # mlflow: deferred, as tracking does

        c = tracking.client(self.uri)
        run = c.get_run(self.run_id)
        if "num_samples" not in run.data.params:
            c.log_batch(self.run_id, params=[Param("num_samples", str(cfg.search.num_samples)),
                                             Param("searcher", cfg.search.searcher),
                                             Param("scheduler", cfg.search.scheduler),
                                             Param("teacher", cfg.teacher.arch), Param("student", cfg.student.arch),
                                             Param("dataset", cfg.data.dataset), Param("metric", cfg.search.metric)])
            c.log_text(self.run_id, tracking.scrub(cfg.to_yaml()), "config.yaml")
            c.log_dict(self.run_id, cfg.space, "search_space.json")
        tracking.set_tags(self.uri, self.run_id, {tracking.OPTUNA_TAG: study_url or "in memory"})

    def finished_trials(self) -> dict[str, dict[str, Any]]:
        """Results of this sweep's finished trials (a resumed sweep's duplicate index starts from them)."""
        out: dict[str, dict[str, Any]] = {}
        try:
            runs = tracking.find_runs(self.uri, self.experiment_id, **{tracking.PARENT_TAG: self.run_id})
        except Exception as exc:  # noqa: BLE001 - MLflow away: the index starts from Tune's folder alone
            logging.getLogger("pursuhint").warning("cannot read the finished trials from MLflow (%s); a resumed "
                                                   "sweep may train a duplicate again", tracking.scrub(str(exc))[:200])
            return out
        c = tracking.client(self.uri)
        for run in runs:
            tags = run.data.tags
            key, status = tags.get(tracking.TRAIN_KEY_TAG), tags.get(tracking.STATUS_TAG)
            if not key or status not in ("completed", "diverged") or tags.get(tracking.DUPLICATE_TAG):
                continue
            history: dict[int, dict[str, Any]] = {}
            for name in ("val_acc", "train_loss", "epoch_time", "test_acc", "final_val_acc"):  # a replay ends as it did
                for m in c.get_metric_history(run.info.run_id, name):
                    history.setdefault(m.step, {"epoch": m.step})[name] = m.value
            out[key] = {"owner": tags.get(tracking.TRIAL_TAG, ""), "state": "done", "status": status,
                        "run_id": run.info.run_id, "history": [history[s] for s in sorted(history)]}
        return out

    def log_confirmation(self, exp_dir: Optional[Path], table: dict[str, Any]) -> None:
        """``confirmation.json`` in the sweep's folder and on the parent run, with its plot (``confirmation.png``)
        and the headline metrics."""
        uri, parent = self.uri, self.run_id
        text = json.dumps(table, indent=2, default=str)
        if exp_dir is not None:
            write_text_atomic(exp_dir / FILE, text)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / FILE
                path.write_text(text)
                tracking.log_artifact(uri, parent, str(path))
                if table.get("configurations") or table.get("baselines"):
                    confirmation_plot(table, Path(tmp) / "confirmation.png")
                    tracking.log_artifact(uri, parent, str(Path(tmp) / "confirmation.png"))
            metrics = headline(table)
            if metrics:
                tracking.log_metrics(uri, parent, metrics, 0)
            where = str(exp_dir / FILE) if exp_dir is not None else f"parent run artifact {FILE}"
            tags = {tracking.CONFIRMATION_TAG: where}
            if table.get("answer"):
                tags[ANSWER_TAG] = table["answer"]
            tracking.set_tags(uri, parent, tags)
        except Exception as exc:  # noqa: BLE001 - MLflow away: the table is in the sweep's folder
            print(f"pursuhint: warning: could not log the confirmation table to MLflow "
                  f"({tracking.scrub(str(exc))[:200]})", file=sys.stderr)

    def finish(self, exp_dir: Optional[Path], name: str) -> None:
        """Set aside trials a killed driver lost (see ``sync``), write into MLflow what trials could not (server
        away meanwhile), then the parent's leaderboard and best hint set, and close it; if MLflow is still away,
        say how to write it later. Tune's folder has every result either way."""
        uri, parent = self.uri, self.run_id
        try:
            if exp_dir is None:  # Tune results on remote storage: the trials' own logging is all there is
                finish_parent(uri, parent)
                return
            mark_finished(exp_dir)
            stages = stage_dirs(exp_dir)
            lost = [t for folder in stages for t in set_aside_lost_trials(folder)]
            lost += unreported_lost_trials(uri, self.experiment_id, parent, stages)
            if lost:
                retire_lost_runs(uri, self.experiment_id, parent, lost)
                print(f"pursuhint: {len(lost)} trial(s) the killed driver had started but Tune never saved were "
                      f"replaced on --resume; their partial runs are set aside ({', '.join(lost)})", file=sys.stderr)
            summary = sync_sweep(exp_dir, uri)
            if summary.changed:
                print(f"pursuhint: MLflow caught up with Tune's results: {summary}", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - MLflow away: Tune's folder keeps everything
            where = exp_dir or "Tune's results folder"
            print(f"pursuhint: warning: MLflow is missing some of this sweep ({tracking.scrub(str(exc))[:300]}); "
                  f"every result is in {where}: run `pursuhint report {name} --sync` when the server is back",
                  file=sys.stderr)

    def leaderboard(self, exp_dir: Optional[Path]) -> list[TrialRow]:
        """The finished sweep's rows: from Tune's folder (the record), or from MLflow when Tune wrote to remote
        storage (empty if MLflow is away then; ``finish`` has said so)."""
        from mlflow.exceptions import MlflowException  # mlflow: deferred, as tracking does

        if exp_dir is not None:
            return rows_from_tune(exp_dir)
        try:
            return rows_from_mlflow(self.uri, self.run_id)
        except MlflowException:
            return []

    def log_report(self, name: str, rows: list[TrialRow], confirmation: Optional[dict[str, Any]],
                   study_url: Optional[str], searched: bool = True, source: str = "") -> None:
        """The browsable page (``report.html``: tables, plots, atlases, importances) on the parent run; a page that
        cannot be drawn or logged is a one-line warning, never a failed sweep."""
        try:
            importances: Any = "parameter importances: none, this sweep searched nothing (its config has no spec leaf)"
            if searched:
                try:
                    importances = param_importances(study_url, name)
                except NoImportances as exc:
                    importances = str(exc)
            with tempfile.TemporaryDirectory() as tmp:
                path = write_report(Path(tmp) / "report.html", name, rows, confirmation=confirmation,
                                    importances=importances, tracking_uri=self.uri, source=source)
                tracking.log_artifact(self.uri, self.run_id, str(path))
        except Exception as exc:  # noqa: BLE001 - the sweep's results are all recorded already
            print(f"pursuhint: warning: could not log report.html on the sweep's run "
                  f"({tracking.scrub(str(exc))[:200]})", file=sys.stderr)

    @contextmanager
    def ended_if_interrupted(self) -> Iterator[None]:
        """The block's interruption (``SweepInterrupted``, Ctrl-C) ends the sweep's runs as interrupted, then goes on."""
        try:
            yield
        except (SweepInterrupted, KeyboardInterrupt):
            self.end_interrupted()
            raise

    def end_interrupted(self) -> None:
        """An interrupted sweep's runs end KILLED in MLflow (trials that had ended keep their status); ``--resume``
        reopens them. MLflow being away must not hide the interruption itself."""
        reason = "sweep interrupted; --resume continues it"
        try:
            tracking.end_open_children(self.uri, self.experiment_id, self.run_id, "interrupted", reason)
            tracking.end_run(self.uri, self.run_id, "interrupted", reason)
        except Exception as exc:  # noqa: BLE001 - any MLflow failure: report it, the interruption matters more
            print(f"pursuhint: warning: could not mark the interrupted runs in MLflow "
                  f"({tracking.scrub(str(exc))[:200]})", file=sys.stderr)


def retire(uri: str, name: str, sweep_dir: str) -> None:
    """Tag the MLflow parent of a sweep being overwritten so the new sweep gets a parent of its own."""
    try:
        exp = tracking.client(uri).get_experiment_by_name(name)
        if exp is None:
            return
        for run in tracking.find_runs(uri, exp.experiment_id, **{tracking.ROLE_TAG: "sweep",
                                                                  tracking.SWEEP_DIR_TAG: sweep_dir}):
            tracking.set_tags(uri, run.info.run_id, {tracking.SWEEP_DIR_TAG: f"{sweep_dir} (replaced "
                                                     f"{time.strftime('%Y-%m-%d %H:%M:%S')})"})
    except Exception as exc:  # noqa: BLE001 - MLflow away: the old runs simply keep their folder tag
        print(f"pursuhint: warning: could not tag the replaced sweep's MLflow runs ({tracking.scrub(str(exc))[:200]})",
              file=sys.stderr)


def runs_table_address(uri: str, parent: str, ui: str = "http://127.0.0.1:5000") -> str:
    """The MLflow UI's address of the sweep's runs table (the UI opens experiments on another tab); empty when
    MLflow cannot say which experiment the parent run is in."""
    try:
        experiment_id = tracking.client(uri).get_run(parent).info.experiment_id
    except Exception as exc:  # noqa: BLE001 - MLflow away at the end: the command above still works later
        logging.getLogger("pursuhint").info("cannot find the sweep's experiment in MLflow (%s)", exc)
        return ""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else ui
    return f"{base}/#/experiments/{experiment_id}/runs"
