"""Shared bits of the sweep tests: a tiny config and MLflow look-ups."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from conftest import ROOT

BIN = Path(sys.executable).parent

TINY_SWEEP = """
name: {name}
seed: 0
data: {{dataset: digits, image_size: 8, train_samples: 300, val_samples: 120, probe_size: 150}}
teacher: {{arch: resnet14, train: {{epochs: 2, batch_size: 64, lr: 0.05, lr_schedule: cosine}}}}
student: {{arch: resnet8}}
selection:
  similarity: r2_cca
  n_hints: 3
  # rbf_max_samples does not change r2_cca hints: every searched trial trains the same student,
  # so all but the first are duplicates that reuse its result.
  rbf_max_samples: {{choice: [100, 200]}}
# kd_weight depends on the method (by_method): a branch per method, sampled only for the chosen one
distill: {{method: {{choice: [at]}}, hint_weight: 10, kd_weight: {{by_method: {{at: {{choice: [0.0]}}, default: 0.0}}}}}}
train: {{epochs: {epochs}, batch_size: 64, lr: 0.05, lr_schedule: cosine}}
search: {{num_samples: {samples}, max_concurrent_trials: 2, grace_period: 1, scheduler: {scheduler},
         confirm: {{top_k: {confirm_k}, seeds: 2}}}}
"""


def write_config(folder: Path, name: str, epochs: int = 3, samples: int = 3, scheduler: str = "asha",
                 extra: str = "", confirm_k: int = 0) -> Path:
    """A tiny sweep config; ``confirm_k`` > 0 adds a confirmation stage of that many configurations × 2 seeds."""
    path = folder / f"{name}.yaml"
    path.write_text(TINY_SWEEP.format(name=name, epochs=epochs, samples=samples, scheduler=scheduler,
                                      confirm_k=confirm_k) + extra)
    return path


_EMPTY_STORE: list[Path] = []  # this process's empty MLflow store, made once


def mlflow_db(folder: Path, name: str = "mlflow.db") -> str:
    """The URI of a new, empty MLflow SQLite store at ``folder / name``: a copy of one store this test process
    made once. MLflow builds a store's tables by running all its migrations (~1.3 s of CPU per store, and the
    suite makes dozens); a copy holds the very tables they build."""
    if not _EMPTY_STORE:
        from mlflow.tracking import MlflowClient

        home = tempfile.mkdtemp(prefix="pursuhint-mlflow-")
        atexit.register(shutil.rmtree, home, True)
        template = Path(home) / "empty.db"
        MlflowClient(f"sqlite:///{template}").search_experiments()  # creates the tables
        _EMPTY_STORE.append(template)
    target = folder / name
    if not target.exists():
        shutil.copyfile(_EMPTY_STORE[0], target)
    return f"sqlite:///{target}"


def children(uri: str, name: str):
    """(parent run, child runs) of the newest sweep named ``name``."""
    from pursuhint import tracking
    from pursuhint.search.results import find_parent

    exp_id, parent = find_parent(uri, name)
    runs = tracking.find_runs(uri, exp_id, **{tracking.PARENT_TAG: parent})
    return tracking.client(uri).get_run(parent), runs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 1.0):
    """The first truthy value of ``predicate()``, polled until ``timeout`` seconds."""
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def start_mlflow_server(folder: Path, port: int) -> subprocess.Popen:
    """A real ``mlflow server`` on 127.0.0.1:``port`` storing in ``folder`` (a restart keeps the data), started
    as users start it: ``cluster/mlflow_server.sh`` in the foreground, with one worker."""
    env = {**os.environ, "MLFLOW": str(BIN / "mlflow"), "PURSUHINT_MLFLOW_PORT": str(port),
           "PURSUHINT_MLFLOW_DIR": str(folder), "PURSUHINT_MLFLOW_BACKEND": mlflow_db(folder, "server.db"),
           "PURSUHINT_MLFLOW_ARTIFACTS": str(folder / "server_artifacts"), "PURSUHINT_MLFLOW_WORKERS": "1"}
    proc = subprocess.Popen(["bash", str(ROOT / "cluster" / "mlflow_server.sh")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"

    def healthy():
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2) as r:  # noqa: S310 - our own http server
                return r.status == 200
        except OSError:
            return proc.poll() is not None

    wait_for(healthy, 120, "mlflow server")
    assert proc.poll() is None, "mlflow server exited"
    return proc


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
    """Signal ``proc``'s whole process group (started with start_new_session) and reap it."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def tune_results(exp_dir: Path) -> dict[str, list[dict]]:
    """Each trial folder's result lines (a line being written is skipped)."""
    out = {}
    for path in sorted(Path(exp_dir).glob("*/result.json")):
        lines = []
        for line in path.read_text().splitlines():
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                pass
        out[path.parent.name] = lines
    return out


def trial_lines(results: dict[str, list[dict]], trial_id: str) -> list[dict]:
    """The result lines of trial ``trial_id`` among ``tune_results``' (none yet: empty)."""
    return next((lines for lines in results.values() if any(r.get("trial_id") == trial_id for r in lines)), [])


def sweep_argv(cfg_path: Path, uri: str, storage: Path, *extra: str) -> list[str]:
    return [str(BIN / "pursuhint"), "sweep", str(cfg_path), "--tracking-uri", uri, "--storage-path", str(storage),
            "-q", *extra]


def epoch_steps(uri: str, run_id: str) -> list[int]:
    from pursuhint import tracking

    return sorted(m.step for m in tracking.client(uri).get_metric_history(run_id, "val_acc"))


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (Linux /proc), parents first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and everything it started, at once (a crash of the machine's processes)."""
    for p in process_tree(pid):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
