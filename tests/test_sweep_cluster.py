"""Sweeps in harder settings: refused before work when their services are unreachable, and an ImageFolder sweep
spread over a two-node Ray cluster on this machine whose nodes each see only their own copy of the data and
their own image cache, tracked by a real `mlflow server` as a cluster's sweeps are, that survives losing its
worker node (an interrupted sweep's resume: test_faults)."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pursuhint import tracking
from pursuhint.config import config_from_text, load_config
from pursuhint.errors import PursuhintError
from pursuhint.preflight import preflight
from pursuhint.search.sweep import run_sweep

from pursuhint.search.trial import RESTORED_TAG

from sweep_helpers import (BIN, children, epoch_steps, free_port, kill_tree, start_mlflow_server, stop_group, sweep_argv,
                           trial_lines, tune_results, wait_for, write_config)

pytestmark = pytest.mark.slow


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


# ------------------------------------------------------------ ImageFolder: each node its own data and cache

NODE_EPOCHS = 20  # trials outlast a trial actor's start (~10 s here), so the second node's actor gets one
NODES_SWEEP = """
name: t_nodes
seed: 0
data:
  dataset: imagefolder
  root: ${DATA_ROOT}
  image_size: 16
  probe_size: 40
teacher: {arch: resnet14, train: {epochs: 1, batch_size: 32, lr: 0.05, lr_schedule: cosine}}
student: {arch: resnet8}
selection: {similarity: r2_cca, n_hints: 2}
distill: {method: at, hint_weight: 10, kd_weight: 0.0}
train:
  epochs: {NODE_EPOCHS}
  batch_size: 32
  lr: {uniform: [0.01, 0.1]}   # every searched student differs: no trial replays another's result
  lr_schedule: cosine
search: {num_samples: 2, max_concurrent_trials: 2, scheduler: fifo, resources_per_trial: {cpu: 1, gpu: 0},
         confirm: {top_k: 0}}
""".replace("{NODE_EPOCHS}", str(NODE_EPOCHS))


def _write_jpeg_folder(root: Path, per_class: int = 100, val: int = 20) -> None:
    """2 classes × ``per_class`` tiny noise JPEGs (20 px), ``val`` of each class in val/."""
    rng = np.random.default_rng(0)
    for c, cls in enumerate(("ant", "bee")):
        for i in range(per_class):
            split = "val" if i < val else "train"
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 128, (20, 20, 3), dtype=np.uint8) + np.uint8(100 * c)
            Image.fromarray(pixels).save(root / split / cls / f"{i:03d}.jpg", quality=90)


def _can_hide_folders() -> bool:
    """Whether this machine lets a process see a folder as empty while others see its files (a mount namespace
    with a tmpfs over it): how two "nodes" on one machine are kept from each other's data and caches."""
    probe = subprocess.run(_unshared(["true"], [Path("/tmp")]), capture_output=True, timeout=30)
    return probe.returncode == 0


def _unshared(argv: list[str], hide: list[Path]) -> list[str]:
    """``argv`` run in its own mount namespace where each folder of ``hide`` is an empty tmpfs."""
    mounts = " && ".join(f"mount -t tmpfs -o size=1m tmpfs {shlex.quote(str(p))}" for p in hide)
    user = [] if os.geteuid() == 0 else ["--map-root-user"]
    return ["unshare", "--mount", "--propagation", "private", *user, "sh", "-c", f'{mounts} && exec "$@"', "sh",
            *argv]


def _isolated_node(args: list[str], env: dict, hide: list[Path]) -> subprocess.Popen:
    """A Ray node (``ray start --block``, 1 CPU) that cannot see the folders ``hide`` (none: it sees all)."""
    argv = [str(BIN / "ray"), "start", "--block", "--num-cpus", "1", "--object-store-memory", str(150 * 2**20),
            *args]
    return subprocess.Popen(_unshared(argv, hide) if hide else argv, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def test_an_imagefolder_sweep_on_two_nodes_survives_losing_its_worker_node(tmp_path, isolated_runs, monkeypatch):
    """A two-node cluster on this machine, tracked by a real `mlflow server` (artifacts through its proxy), as a
    cluster's sweeps are. Each node sees only its own copy of the data (``data.root: ${DATA_ROOT}``, set per node)
    and its own ``PURSUHINT_IMAGE_CACHE`` (where mount namespaces let one machine hide folders; else both see
    both and the caches are not compared): the shared work builds the cache on its node, and a trial on the
    other node, handed a cache path that does not exist there, builds that node's own from its own copy. The
    worker node is then killed mid-sweep (its raylet and trial workers, SIGKILL): its trial is rescheduled on
    the head node from its last checkpoint, every trial completes with one MLflow run, and the two caches hold
    the same rows."""
    isolate = shutil.which("unshare") is not None and _can_hide_folders()
    data = {n: tmp_path / n / "data" for n in ("head", "worker")}
    cache = {n: tmp_path / n / "image_cache" for n in ("head", "worker")}
    _write_jpeg_folder(data["head"])
    shutil.copytree(data["head"], data["worker"])
    for folder in cache.values():
        folder.mkdir(parents=True)
    other = {"head": "worker", "worker": "head"}
    base_env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PURSUHINT_RUNS": str(isolated_runs)}
    env = {n: {**base_env, "DATA_ROOT": str(data[n]), "PURSUHINT_IMAGE_CACHE": str(cache[n])} for n in data}
    hide = {n: [data[other[n]], cache[other[n]]] if isolate else [] for n in data}
    uri = f"http://127.0.0.1:{(mlflow_port := free_port())}"
    nodes = [start_mlflow_server(tmp_path, mlflow_port)]
    port = free_port()
    address = f"127.0.0.1:{port}"
    try:
        nodes.append(_isolated_node(["--head", "--port", str(port), "--node-ip-address", "127.0.0.1",
                                     "--include-dashboard=false"], env["head"], hide["head"]))

        def alive_nodes() -> list[str]:
            probe = subprocess.run([sys.executable, "-c",
                                    f"import ray; ray.init(address='{address}', logging_level='ERROR');"
                                    "print(*[n['NodeID'] for n in ray.nodes() if n['Alive']])"],
                                   env=base_env, capture_output=True, text=True, timeout=60)
            return probe.stdout.split() if probe.returncode == 0 else []

        head_id = wait_for(lambda: (ids := alive_nodes()) and len(ids) == 1 and ids[0], 120, "the head node",
                           interval=3)
        worker = _isolated_node(["--address", address, "--node-ip-address", "127.0.0.1"], env["worker"],
                                hide["worker"])
        nodes.append(worker)
        worker_id = wait_for(lambda: next((i for i in alive_nodes() if i != head_id), None), 120,
                             "the worker node", interval=3)
        # The driver checks the data from its own view (the head's copy), without decoding it, then joins.
        monkeypatch.setenv("DATA_ROOT", str(data["head"]))
        monkeypatch.delenv("PURSUHINT_IMAGE_CACHE", raising=False)
        preflight(config_from_text(NODES_SWEEP), sweep=True)
        assert not (data["head"] / ".pursuhint_cache").exists() and not any(any(c.iterdir()) for c in cache.values())
        cfg_path = tmp_path / "t_nodes.yaml"
        cfg_path.write_text(NODES_SWEEP)
        exp_dir = tmp_path / "ray_results" / "t_nodes"
        # `pursuhint sweep` as users run it, in a process of its own: this one's Ray keeps the auth mode it first
        # read, and the nodes run without token auth
        driver = {k: v for k, v in base_env.items() if k != "PURSUHINT_IMAGE_CACHE"} | {"DATA_ROOT": str(data["head"])}
        proc = subprocess.Popen(sweep_argv(cfg_path, uri, tmp_path / "ray_results", "--address", address),
                                env=driver, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def on_worker():  # a trial on the worker node has checkpointed an epoch and has more to go
            for lines in tune_results(exp_dir).values():
                mine = [r for r in lines if r.get("node_id") == worker_id and r.get("status") == "running"]
                if mine and mine[-1]["epoch"] < mine[-1]["epochs_total"] - 2:
                    return mine[-1]
            return proc.poll() is not None

        hit = wait_for(on_worker, 400, "a trial running on the worker node", interval=0.3)
        assert proc.poll() is None, "the sweep ended before the worker node could be stopped"
        kill_tree(worker.pid)  # the node crashes: `ray start`, its raylet and every worker on it
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out[-4000:]

        results = tune_results(exp_dir)
        trained = {r.get("node_id") for lines in results.values() for r in lines if r.get("epoch")} - {None}
        table = [(r.get("trial_id"), r.get("epoch"), r.get("status"), (r.get("node_id") or "")[:8], r.get("pid"))
                 for lines in results.values() for r in lines]
        assert trained == {head_id, worker_id}, (worker_id[:8], table, out[-3000:])
        parent, runs = children(uri, "t_nodes")
        ids = Counter(r.data.tags[tracking.TRIAL_TAG] for r in runs)
        assert len(ids) == 4 and set(ids.values()) == {1}, ids
        assert all(r.data.tags[tracking.STATUS_TAG] == "completed" for r in runs), out[-4000:]
        assert Counter(r.data.tags[tracking.BASELINE_TAG] for r in runs) == {"none": 2, "default": 1, "kd_only": 1}
        moved = next(r for r in runs if r.data.tags[tracking.TRIAL_TAG] == hit["trial_id"])
        assert int(moved.data.tags[RESTORED_TAG]) >= hit["epoch"]  # from its checkpoint, not from scratch
        assert epoch_steps(uri, moved.info.run_id) == list(range(1, NODE_EPOCHS + 1))
        after = [r for r in trial_lines(results, hit["trial_id"]) if r.get("node_id")][-1]
        assert after["node_id"] != worker_id  # finished on the head node
        assert parent.data.tags[tracking.STATUS_TAG] == "completed"
        client = tracking.client(uri)
        for run in (r for r in runs if r.data.params["hint_layers"]):  # artifacts went through the server's proxy
            assert {"hint_set.json", "layer_atlas.png"} <= {f.path for f in client.list_artifacts(run.info.run_id)}
        assert list((tmp_path / "server_artifacts").rglob("layer_atlas.png"))
        assert not (data["head"] / ".pursuhint_cache").exists() and not (data["worker"] / ".pursuhint_cache").exists()
        if not isolate:
            return  # both nodes saw the head's cache: there is no second one to compare
        built = {n: sorted(p.parent for p in cache[n].rglob("meta.json")) for n in cache}
        assert [len(b) for b in built.values()] == [1, 1], built  # each node decoded into its own folder
        head_cache, worker_cache = built["head"][0], built["worker"][0]
        assert head_cache.relative_to(cache["head"]) == worker_cache.relative_to(cache["worker"])  # <data id>/<key>
        for name in ("train_x.npy", "val_x.npy", "train_y.npy", "val_y.npy"):
            assert (head_cache / name).read_bytes() == (worker_cache / name).read_bytes(), name
    finally:  # all killed (a SIGTERM'd Ray head takes half a minute to stop; nothing of theirs needs keeping)
        for node in reversed(nodes):  # the worker, the head, the mlflow server
            stop_group(node, signal.SIGKILL)
