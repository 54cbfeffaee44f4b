"""MLflow layout of a sweep: experiment = config name, one parent run per sweep, one child per trial.

The names here are the interface users browse in the MLflow UI:
parent tags ``pursuhint.role=sweep``; child params ``similarity``, ``n_hints``, ``algorithm``,
``center``, ``method``, ``hint_weight``, ``kd_weight``, ``lr``, ``hint_layers``, ``hint_indices``,
``student_layers``; per-epoch metrics ``val_acc``, ``train_loss``, ``loss_ce``, ``loss_kd``,
``loss_hint``, ``epoch_time``; ``best_val_acc``; tags ``pursuhint.trial_id``, ``pursuhint.status``,
``pursuhint.baseline``; artifacts ``hint_set.json`` and ``layer_atlas.png``.
Runs are found again by tag (never created twice for one trial), so retries and resumed sweeps log
into the runs they started.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional
from urllib.parse import urlparse

from .errors import PursuhintError, TrackingError  # noqa: F401 (TrackingError: re-exported)

if TYPE_CHECKING:
    from mlflow import MlflowClient  # imported for real only when a client is needed

# A quiet terminal: no "Downloading artifacts" progress bar each time report/export read a hint set (a user
# who wants it sets the variable to true).
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

ROLE_TAG = "pursuhint.role"
SWEEP_DIR_TAG = "pursuhint.sweep_dir"  # the sweep's Tune results folder (or remote storage URI)
OPTUNA_TAG = "pursuhint.optuna_storage"  # where the sweep's Optuna study is (an RDB URL, or "in memory")
CONFIRMATION_TAG = "pursuhint.confirmation"  # where the sweep's confirmation table is (also a parent artifact)
TRIAL_TAG = "pursuhint.trial_id"
COHORT_TAG = "pursuhint.cohort"  # a cohort member's run: the Tune trial that trained it with others
STATUS_TAG = "pursuhint.status"
BASELINE_TAG = "pursuhint.baseline"
DUPLICATE_TAG = "pursuhint.duplicate_of"
TRAIN_KEY_TAG = "pursuhint.train_key"
PARENT_TAG = "mlflow.parentRunId"

# Environment variables whose values must never reach MLflow (tokens, cloud keys, passwords).
SECRET_MARKERS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY", "CREDENTIAL", "AUTH")


def resolve_tracking_uri(cli_uri: Optional[str], config_uri: Optional[str], cwd: Optional[Path] = None) -> str:
    """``--tracking-uri``, else ``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else
    ``sqlite:///<cwd>/mlflow.db``; always absolute.

    Relative sqlite or file paths are made absolute so trials (whose working directory differs) log
    to the same store.
    """
    uri = cli_uri or config_uri or os.environ.get("MLFLOW_TRACKING_URI")
    base = Path(cwd or os.getcwd()).absolute()
    if not uri:
        return f"sqlite:///{base / 'mlflow.db'}"
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        path = uri[len("sqlite:///"):]
        if not path.startswith("/"):
            return f"sqlite:///{(base / path).absolute()}"
        return uri
    if parsed.scheme == "" and not uri.startswith("/"):
        return str((base / uri).absolute())
    if parsed.scheme == "file" and not parsed.path.startswith("/"):
        return f"file://{(base / parsed.path).absolute()}"
    return uri


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Refuse an unreachable tracking server or an unwritable local store before any work starts."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - user's own server
                if resp.status >= 400:
                    raise TrackingError(f"MLflow server {uri} answered {resp.status}; check --tracking-uri")
        except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(f"MLflow server {uri} is unreachable ({reason}); start it "
                                f"(cluster/mlflow_server.sh) or pass another --tracking-uri") from None
        return
    if parsed.scheme == "sqlite":
        folder = Path(uri[len("sqlite:///"):]).parent
    elif parsed.scheme in ("", "file"):
        folder = Path(parsed.path if parsed.scheme == "file" else uri)
        folder = folder if folder.exists() else folder.parent
    else:
        return  # databricks, postgresql, ...: the first client call reports problems
    if not folder.exists() or not os.access(folder, os.W_OK):
        raise TrackingError(f"MLflow store {uri}: folder {folder} does not exist or is not writable")


def client(uri: str) -> MlflowClient:
    """An MLflow client for the store at ``uri``."""
    from mlflow import MlflowClient  # mlflow: loaded only when a run is written or read

    return MlflowClient(tracking_uri=uri)


# MLflow retries an unreachable server for minutes by default (7 retries, doubling back-off). A sweep must
# keep training when the server goes away, so its calls give up within seconds and are retried later
# (queued by the trial; written by `pursuhint report --sync`). Values the user sets win.
FAIL_FAST_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def fail_fast_http() -> None:
    """Make MLflow HTTP calls in this process give up after seconds, not minutes (user settings win)."""
    for key, value in FAIL_FAST_HTTP.items():
        os.environ.setdefault(key, value)


def artifact_root_for(uri: str) -> Optional[str]:
    """For a local sqlite store, artifacts go beside the database (``mlartifacts/``); servers decide."""
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").absolute().as_uri()
    return None


# MLflow 3 opens an experiment without this tag as a GenAI one (traces, judges); ours train models.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


def ensure_experiment(uri: str, name: str) -> str:
    """The experiment id for ``name``, created once (restored if it was deleted), tagged as a model-training
    experiment (an existing one gets the tag when a sweep resumes or reuses it)."""
    c = client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is None:
        try:
            return c.create_experiment(name, artifact_location=artifact_root_for(uri),
                                       tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except Exception:  # created meanwhile by another process
            exp = c.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        c.restore_experiment(exp.experiment_id)
    if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        c.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return exp.experiment_id


def find_runs(uri: str, experiment_id: str, **tags: str) -> list[Any]:
    """Runs of the experiment whose tags equal the given values (tag names with dots as keys)."""
    parts = [f"tags.\"{k}\" = '{v}'" for k, v in tags.items()]
    return list(client(uri).search_runs([experiment_id], " and ".join(parts), max_results=1000))


def parent_run(uri: str, experiment_id: str, sweep_dir: str, run_name: str) -> str:
    """The sweep's parent run: found by its storage folder (a resumed sweep reuses it) or created."""
    found = find_runs(uri, experiment_id, **{ROLE_TAG: "sweep", SWEEP_DIR_TAG: sweep_dir})
    if found:
        reopen_run(uri, found[0].info.run_id)
        return found[0].info.run_id
    run = client(uri).create_run(experiment_id, run_name=run_name,
                                 tags={ROLE_TAG: "sweep", SWEEP_DIR_TAG: sweep_dir})
    return run.info.run_id


def child_run(uri: str, experiment_id: str, parent_id: str, trial_id: str, run_name: str,
              tags: dict[str, Any]) -> str:
    """The trial's child run, found by trial id under this parent, or created with ``tags`` (values written as
    strings: an MLflow server refuses any other type, where a local store converts them)."""
    found = find_runs(uri, experiment_id, **{TRIAL_TAG: trial_id, PARENT_TAG: parent_id})
    if found:
        reopen_run(uri, found[0].info.run_id)
        return found[0].info.run_id
    tags = {PARENT_TAG: parent_id, TRIAL_TAG: trial_id, ROLE_TAG: "trial", **tags}
    run = client(uri).create_run(experiment_id, run_name=run_name, tags={k: scalar(v) for k, v in tags.items()})
    return run.info.run_id


# pursuhint.status -> MLflow's own run status: what the UI shows and `status = 'FINISHED'` searches find
RUN_STATUS = {"completed": "FINISHED", "stopped": "FINISHED", "duplicate": "FINISHED",
              "diverged": "FAILED", "invalid": "FAILED", "error": "FAILED", "interrupted": "KILLED"}
REASON_TAG = "pursuhint.end_reason"


def end_run(uri: str, run_id: str, status: str, reason: str = "") -> None:
    """End a run in MLflow's own terms (FINISHED / FAILED / KILLED) from its ``pursuhint.status``; a failed
    or killed run carries its reason in a tag. Unknown statuses leave the run as it is."""
    mlflow_status = RUN_STATUS.get(status)
    if mlflow_status is None:
        return
    if reason:
        set_tags(uri, run_id, {REASON_TAG: scrub(reason)[:4000]})
    client(uri).set_terminated(run_id, status=mlflow_status)


def reopen_run(uri: str, run_id: str) -> None:
    """Mark a KILLED run RUNNING again (a resumed sweep continues it)."""
    c = client(uri)
    if c.get_run(run_id).info.status == "KILLED":
        c.update_run(run_id, status="RUNNING")


def end_open_children(uri: str, experiment_id: str, parent_id: str, fallback: Optional[str] = None,
                      reason: str = "") -> int:
    """End the child runs of ``parent_id`` that MLflow still shows RUNNING: those whose ``pursuhint.status`` is
    final get its MLflow status (also a repair for sweeps recorded before runs were ended); the others get
    ``fallback`` (e.g. ``interrupted``), or stay open when it is None. Returns how many were ended."""
    n = 0
    for run in find_runs(uri, experiment_id, **{PARENT_TAG: parent_id}):
        if run.info.status != "RUNNING":
            continue
        own = run.data.tags.get(STATUS_TAG, "")
        final = own if own in RUN_STATUS else fallback
        if final is None:
            continue
        end_run(uri, run.info.run_id, final, reason if final == fallback else "")
        n += 1
    return n


def logged_steps(uri: str, run_id: str, metric: str = "val_acc") -> set[int]:
    """Epochs already logged for ``metric`` (a restarted trial skips them: no duplicate points)."""
    try:
        return {m.step for m in client(uri).get_metric_history(run_id, metric)}
    except Exception as exc:  # noqa: BLE001 - unknown then: the epochs are logged again (same values)
        logging.getLogger("pursuhint").info("cannot read run %s's logged epochs (%s)", run_id, scrub(str(exc))[:200])
        return set()


def log_params(uri: str, run_id: str, params: dict[str, Any]) -> None:
    """Scalar params (lists are joined with commas) so MLflow's compare views work on them."""
    from mlflow.entities import Param  # mlflow: loaded only when a run is written or read

    c = client(uri)
    existing = c.get_run(run_id).data.params
    new = [Param(k, scalar(v)) for k, v in params.items() if k not in existing]
    if new:
        c.log_batch(run_id, params=new)


def log_metrics(uri: str, run_id: str, metrics: dict[str, float], step: int) -> None:
    from mlflow.entities import Metric  # mlflow: loaded only when a run is written or read

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
    if batch:
        client(uri).log_batch(run_id, metrics=batch)


def set_tags(uri: str, run_id: str, tags: dict[str, Any]) -> None:
    from mlflow.entities import RunTag  # mlflow: loaded only when a run is written or read

    client(uri).log_batch(run_id, tags=[RunTag(k, scalar(v)) for k, v in tags.items()])


def log_artifact(uri: str, run_id: str, path: str) -> None:
    client(uri).log_artifact(run_id, path)


def artifact_names(uri: str, run_id: str) -> set[str]:
    """Top-level artifact paths of a run."""
    return {f.path for f in client(uri).list_artifacts(run_id)}


def scalar(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if value is None:
        return "none"
    return str(value)


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return any(marker in upper for marker in SECRET_MARKERS)


_USERINFO = __import__("re").compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s:]+(:[^/@\s]*)?@")


def scrub(text: str, environ: Optional[dict[str, str]] = None) -> str:
    """``text`` without credentials: ``user:password@`` in URIs and the values of secret-looking
    environment variables (tokens, keys, passwords) are replaced by ``***``."""
    text = _USERINFO.sub(lambda m: m.group("scheme") + "***@", text)
    for value in secret_values(environ):
        text = text.replace(value, "***")
    return text


def secret_values(environ: Optional[dict[str, str]] = None) -> list[str]:
    """Values of secret-looking environment variables (long enough to matter), for scrubbing."""
    env = os.environ if environ is None else environ
    return [v for k, v in env.items() if is_secret_name(k) and len(v) >= 8]


RETRY_AFTER_S = 30.0  # how long a trial only queues its MLflow calls after one failed
_log = logging.getLogger("pursuhint.tracking")


class RunLogger:
    """A trial's MLflow logging that never stops training.

    The trial's run is opened lazily (the server may be away when the trial starts); a failed call is
    queued and retried at the next one; epochs the run already has (a restarted trial) are skipped.
    Whatever is still queued when the trial ends is written by ``pursuhint report --sync`` (or at the
    end of the sweep) from Tune's results, which carry the same values.
    """

    def __init__(self, uri: str, open_run: Callable[[], str]) -> None:
        self.uri = uri
        self._open = open_run
        self.run_id: Optional[str] = None
        self.pending: list[tuple[str, tuple]] = []
        self.logged: set[int] = set()  # epochs in the run (read when it is opened) or queued for it
        self.retry_at = 0.0  # after a failure, calls are only queued until then: training never waits
        self._connect()

    def _failed(self, what: str, exc: Exception) -> None:
        self.retry_at = time.monotonic() + RETRY_AFTER_S
        _log.warning("MLflow %s (%s); %d call(s) queued, next try in %.0f s", what, scrub(str(exc))[:200],
                    len(self.pending), RETRY_AFTER_S)

    def _connect(self) -> bool:
        if self.run_id is None:
            try:
                self.run_id = self._open()
            except Exception as exc:  # noqa: BLE001 - server away: keep training; retry later
                self._failed("run not opened yet", exc)
                return False
            have = logged_steps(self.uri, self.run_id)
            self.pending = [(n, a) for n, a in self.pending if not (n == "epoch" and a[1] in have)]
            self.logged |= have
        return True

    def _call(self, fn: str, *args: Any) -> None:
        self.pending.append((fn, args))
        if time.monotonic() >= self.retry_at:
            self.flush()

    def flush(self) -> None:
        """Send what is queued (in order); on failure keep it for later. Tune keeps the results too."""
        if not self._connect():
            return
        try:
            while self.pending:
                name, a = self.pending[0]
                LOGGER_CALLS["log_metrics" if name == "epoch" else name](self.uri, self.run_id, *a)
                self.pending.pop(0)
        except Exception as exc:  # noqa: BLE001 - server away: keep training; retry later
            self._failed("logging failed", exc)

    def epoch(self, metrics: dict[str, float], step: int) -> None:
        if step not in self.logged:
            self.logged.add(step)
            self._call("epoch", metrics, step)

    def params(self, params: dict[str, Any]) -> None:
        self._call("log_params", params)

    def tags(self, tags: dict[str, Any]) -> None:
        self._call("set_tags", tags)

    def metric(self, metrics: dict[str, float], step: int) -> None:
        self._call("log_metrics", metrics, step)

    def artifact(self, path: Path) -> None:
        self._call("log_artifact", str(path))

    def end(self, status: str, reason: str = "") -> None:
        """End the run in MLflow's terms (FINISHED / FAILED), after everything queued before it."""
        self._call("end_run", status, reason)


# What a RunLogger's queued calls run (an epoch is a log_metrics call at its step).
LOGGER_CALLS: dict[str, Callable[..., None]] = {
    "log_metrics": log_metrics, "log_params": log_params, "set_tags": set_tags, "log_artifact": log_artifact,
    "end_run": end_run,
}
