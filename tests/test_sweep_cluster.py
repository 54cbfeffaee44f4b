"""Sweeps in harder settings: interrupted and resumed, tracked by a real `mlflow server`, and spread
over a two-node Ray cluster on this machine."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from pursuhint import tracking
from pursuhint.config import load_config
from pursuhint.errors import PursuhintError
from pursuhint.search.sweep import run_sweep

from sweep_helpers import children, write_config

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 1.0):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def completed_children(uri: str, name: str) -> int:
    try:
        _, runs = children(uri, name)
    except Exception:
        return 0
    return sum(r.data.tags.get(tracking.STATUS_TAG) in ("completed", "stopped") for r in runs)


def test_interrupted_sweep_resumes_without_duplicate_runs(tmp_path, isolated_runs):
    cfg_path = write_config(tmp_path, "t_resume", epochs=4, samples=3, scheduler="fifo")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = [str(BIN / "pursuhint"), "sweep", str(cfg_path), "--tracking-uri", uri,
            "--storage-path", str(tmp_path / "ray_results"), "-q"]
    env = {**os.environ, "PURSUHINT_RUNS": str(isolated_runs)}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: completed_children(uri, "t_resume") >= 1 or proc.poll() is not None, 300,
                 "a finished trial")
        assert proc.poll() is None, "the sweep ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out[-3000:]
    assert "--resume" in out
    done_before = completed_children(uri, "t_resume")
    assert done_before < 5

    resumed = subprocess.run(argv + ["--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    parent, runs = children(uri, "t_resume")
    ids = Counter(r.data.tags[tracking.TRIAL_TAG] for r in runs)
    assert len(ids) == 5 and set(ids.values()) == {1}, ids  # one MLflow run per trial, no duplicates
    assert all(r.data.tags[tracking.STATUS_TAG] == "completed" for r in runs)
    parents = tracking.find_runs(uri, parent.info.experiment_id, **{tracking.ROLE_TAG: "sweep"})
    assert len(parents) == 1 and parents[0].data.tags[tracking.STATUS_TAG] == "completed"
    client = tracking.client(uri)
    for run in runs:  # every epoch logged exactly once, even for trials restored from a checkpoint
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
        assert steps == [1, 2, 3, 4], (run.info.run_name, steps)


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server_artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"

    def healthy():
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return proc.poll() is not None

    try:
        wait_for(healthy, 120, "mlflow server")
        assert proc.poll() is None, "mlflow server exited"
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_sweep_against_a_real_mlflow_server(tmp_path, mlflow_server):
    cfg = load_config(write_config(tmp_path, "t_server", epochs=2, samples=1))
    run_sweep(cfg, tracking_uri=mlflow_server, storage_path=str(tmp_path / "ray_results"), verbose=0,
              progress=False)
    parent, runs = children(mlflow_server, "t_server")
    assert parent.data.tags[tracking.STATUS_TAG] == "completed"
    assert Counter(r.data.tags[tracking.BASELINE_TAG] for r in runs) == {"none": 1, "default": 1, "kd_only": 1}
    client = tracking.client(mlflow_server)
    hinted = [r for r in runs if r.data.params["hint_layers"]]
    for run in hinted:  # artifacts went through the server's proxy
        assert {"hint_set.json", "layer_atlas.png"} <= {f.path for f in client.list_artifacts(run.info.run_id)}
    assert list((tmp_path / "server_artifacts").rglob("layer_atlas.png"))


def test_unreachable_tracking_server_is_refused_before_work(tmp_path):
    cfg = load_config(write_config(tmp_path, "t_unreachable"))
    start = time.time()
    with pytest.raises(PursuhintError, match=r"MLflow server http://127.0.0.1:\d+ is unreachable"):
        run_sweep(cfg, tracking_uri=f"http://127.0.0.1:{free_port()}", storage_path=str(tmp_path / "rr"))
    assert time.time() - start < 30
    assert not (tmp_path / "rr").exists()


def test_unreachable_ray_address_is_refused(tmp_path):
    cfg = load_config(write_config(tmp_path, "t_noray"))
    with pytest.raises(PursuhintError, match="cannot connect to the Ray cluster"):
        run_sweep(cfg, address=f"127.0.0.1:{free_port()}", tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
                  storage_path=str(tmp_path / "rr"))


def _ray_node(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([str(BIN / "ray"), "start", "--block", "--num-cpus", "1",
                             "--object-store-memory", str(150 * 2**20), *args],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def test_two_node_cluster_runs_trials_on_both_nodes(tmp_path, isolated_runs):
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PURSUHINT_RUNS": str(isolated_runs)}
    head = _ray_node(["--head", "--port", str(port), "--node-ip-address", "127.0.0.1",
                      "--include-dashboard=false"], env)
    nodes = [head]
    address = f"127.0.0.1:{port}"
    try:
        time.sleep(5)
        nodes.append(_ray_node(["--address", address, "--node-ip-address", "127.0.0.1"], env))

        def two_alive():
            probe = subprocess.run([sys.executable, "-c",
                                    f"import ray; ray.init(address='{address}', logging_level='ERROR');"
                                    "print(sum(n['Alive'] for n in ray.nodes()))"],
                                   env=env, capture_output=True, text=True, timeout=60)
            return probe.stdout.strip().endswith("2")

        wait_for(two_alive, 120, "two Ray nodes", interval=3)
        cfg_path = write_config(tmp_path, "t_cluster", epochs=3, samples=2, scheduler="fifo")
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        # The driver runs as users run it: the command line, connecting to the cluster's address.
        proc = subprocess.run([str(BIN / "pursuhint"), "sweep", str(cfg_path), "--address", address,
                               "--tracking-uri", uri, "--storage-path", str(tmp_path / "ray_results"), "-q"],
                              env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        node_ids = set()
        for result_file in (tmp_path / "ray_results" / "t_cluster").glob("*/result.json"):
            for line in result_file.read_text().splitlines():
                if line.strip():
                    node_ids.add(json.loads(line).get("node_id"))
        node_ids.discard(None)
        assert len(node_ids) == 2, node_ids
        _, runs = children(uri, "t_cluster")
        assert len(runs) == 4 and all(r.data.tags[tracking.STATUS_TAG] == "completed" for r in runs)
    finally:
        for proc in reversed(nodes):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in nodes:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
