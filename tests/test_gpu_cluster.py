"""Sweeps on a Ray cluster whose trials ask for GPUs, on this CPU machine: a head node started with
``ray start --num-gpus 1`` (a fake GPU: Ray counts it, torch never sees it) runs the shared work on the GPU and two
trials on half of it each, the config's plugin (``tests/fake_gpu.py``) sending torch to the CPU and writing down
what Ray assigned each worker; a head without GPUs refuses the sweep in one sentence and starts nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from pursuhint import tracking
from pursuhint.config import load_config
from pursuhint.infra.logs import LOG_FILE
from pursuhint.search.shared_task import shared_resources

from fake_gpu import LOG_ENV, TRIALS_ENV
from sweep_helpers import BIN, children, free_port, mlflow_db, stop_group, sweep_argv, wait_for

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent

CPUS = 2

SWEEP = """
name: {name}
plugins: [fake_gpu]
seed: 0
data: {{dataset: digits, image_size: 8, train_samples: 200, val_samples: 100, probe_size: 100}}
teacher: {{arch: resnet8, train: {{epochs: 1, batch_size: 64, lr: 0.05, lr_schedule: constant}}}}
student: {{arch: resnet8}}
selection: {{similarity: r2_cca, n_hints: {{choice: [2]}}}}
distill: {{method: at, hint_weight: 10}}
train: {{epochs: 1, batch_size: 64, lr: 0.05, lr_schedule: constant}}
search: {{num_samples: 1, baselines: [kd_only], scheduler: fifo, max_concurrent_trials: 2,
         resources_per_trial: {{cpu: 1, gpu: 0.5}}, shared_timeout_s: {timeout}, confirm: {{top_k: 0}}}}
"""


def sweep_config(folder: Path, name: str, timeout: float = 120) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(SWEEP.format(name=name, timeout=timeout))
    return path


@contextmanager
def ray_head(gpus: int, env: dict[str, str]) -> Iterator[str]:
    """A one-node Ray cluster (``ray start --head``: CPUS CPUs, ``gpus`` GPUs) with its own ports and temp folder;
    its address once ``ray start`` says the node runs. Killed on exit (its process group: a SIGTERM'd head takes
    half a minute to stop, and nothing of a test cluster needs keeping)."""
    temp = Path(tempfile.mkdtemp(prefix="rgpu", dir="/tmp"))  # short: Ray's socket paths live under it
    port = free_port()
    ports = [f"--{flag}={free_port()}" for flag in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                    "runtime-env-agent-port", "metrics-export-port",
                                                    "node-manager-port", "object-manager-port")]
    said = temp / "ray_start.out"
    with said.open("w") as out:
        head = subprocess.Popen([str(BIN / "ray"), "start", "--head", "--block", "--port", str(port),
                                 "--node-ip-address", "127.0.0.1", "--num-cpus", str(CPUS), "--num-gpus", str(gpus),
                                 "--object-store-memory", str(150 * 2**20), "--include-dashboard=false",
                                 "--disable-usage-stats", f"--temp-dir={temp}", *ports],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def started() -> bool:
            assert head.poll() is None, f"`ray start --head` exited: {said.read_text()[-2000:]}"
            return "Ray runtime started" in said.read_text()

        wait_for(started, 120, "the Ray head node", interval=0.5)
        yield f"127.0.0.1:{port}"
    finally:
        stop_group(head, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def cluster_env(isolated_runs) -> dict[str, str]:
    """The environment of the head node and of the driver: ``pursuhint sweep`` in a process of its own, so that
    this process's Ray (its auth mode is read once per process) never meets a cluster started without token auth;
    the tests folder on the path for the plugin."""
    path = os.pathsep.join([str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "RAY_AUTH_MODE": "disabled", "PURSUHINT_RUNS": str(isolated_runs), "PYTHONPATH": path}


def sweep(cfg_path: Path, uri: str, storage: Path, address: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``pursuhint sweep`` joining the cluster at ``address``, as a user runs it."""
    return subprocess.run(sweep_argv(cfg_path, uri, storage, "--address", address), env=env, capture_output=True,
                          text=True, timeout=600)


def test_trials_share_a_fake_gpu_after_the_shared_work_held_all_of_it(tmp_path, cluster_env):
    """The shared work runs in a Ray task holding the node's GPU and the CPUs ``shared_resources`` says; then the
    two trials (the kd_only baseline and one searched) hold half of that GPU each at the same time, and the sweep
    completes. The trials train on the CPU (the plugin's ``ray_device``), as their MLflow params say."""
    seen = tmp_path / "assigned"
    seen.mkdir()
    path = sweep_config(tmp_path, "t_fake_gpu")
    cfg = load_config(path)
    uri = mlflow_db(tmp_path)
    start = time.time()
    with ray_head(1, {**cluster_env, LOG_ENV: str(seen), TRIALS_ENV: "2"}) as address:
        done = sweep(path, uri, tmp_path / "ray", address, cluster_env)
    elapsed = time.time() - start
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sorted(seen.glob("*.json"))]
    tasks = [r for r in records if not r["actor"]]
    trials = [r for r in records if r["actor"]]
    table = [(r["actor"], r["trial_id"], r["gpu_ids"], r["resources"]) for r in records]

    (task,) = tasks  # the shared work, once: held the GPU and its CPUs (a 2-CPU, 1-GPU node: 2 CPUs per GPU)
    want = shared_resources(cfg, [{"CPU": float(CPUS), "GPU": 1.0}])
    assert want == {"CPU": 2.0, "GPU": 1.0}
    assert task["gpu_ids"] == ["0"] and task["cuda_visible_devices"] == "0" and task["resources"] == want, table

    assert len(trials) == 2 and len({r["trial_id"] for r in trials}) == 2, table
    for trial in trials:  # half of the same GPU each, both at once (each waited in the plugin for the other)
        assert trial["gpu_ids"] == ["0"] and trial["resources"] == {"CPU": 1.0, "GPU": 0.5} and trial["met"], table
    assert len({r["pid"] for r in trials}) == 2, table
    assert task["time"] < min(t["time"] for t in trials)

    parent, runs = children(uri, "t_fake_gpu")
    assert [r.data.tags[tracking.STATUS_TAG] for r in runs] == ["completed", "completed"]
    assert parent.info.status == "FINISHED" and parent.data.tags[tracking.STATUS_TAG] == "completed"
    assert sorted(r.data.tags[tracking.TRIAL_TAG] for r in runs) == sorted(t["trial_id"] for t in trials)
    assert {r.data.params["device_type"] for r in runs} == {"cpu"}
    # what Ray said on joining the cluster is in the sweep's log file
    assert "Connecting to existing Ray cluster at address" in (tmp_path / "ray" / "t_fake_gpu" / LOG_FILE).read_text()
    print(f"fake-GPU sweep with its head node: {elapsed:.0f} s; assigned: {table}")


def test_a_gpu_sweep_on_a_cluster_without_gpus_is_refused_and_starts_nothing(tmp_path, cluster_env):
    """Trials asking for half a GPU on a cluster with none, whose autoscaler adds none within
    search.shared_timeout_s: one sentence naming the GPU, and no MLflow experiment, parent run, Tune folder, log
    file or marker."""
    path = sweep_config(tmp_path, "t_no_gpu", timeout=5)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = tmp_path / "ray"
    with ray_head(0, cluster_env) as address:
        start = time.time()
        refused = sweep(path, uri, storage, address, cluster_env)
        waited = time.time() - start
    assert refused.returncode == 2, refused.stdout[-3000:] + refused.stderr[-3000:]
    (line,) = [x for x in refused.stderr.splitlines() if x.startswith("pursuhint: error: ")]
    message = line.removeprefix("pursuhint: error: ")
    assert message.startswith("the shared work (teacher, probe pass, similarities) needs 1 GPU and 2 CPUs on one "
                              "node, and the cluster (CPU 2, GPU 0) gave none within search.shared_timeout_s = 5 s")
    assert "\n" not in message and ". " not in message, message  # one sentence
    assert 5 <= waited < 90, waited  # the timeout, plus a process's start and Ray's join
    assert not storage.exists()  # no Tune folder: no log file, marker or Optuna study either
    if (tmp_path / "mlflow.db").exists():
        assert tracking.client(uri).get_experiment_by_name("t_no_gpu") is None  # no parent run, RUNNING or not
