"""Ready-made sweep configs and cluster launch files: they load, carry the paper's settings, and
have what Ray's cluster launcher, KubeRay and the MLflow start script need."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from pursuhint.config import load_config
from pursuhint.preflight import check_names

ROOT = Path(__file__).resolve().parents[1]
SPACES = sorted((ROOT / "search_spaces").glob("*.yaml"))
CIFAR = ["cifar100_resnet110_resnet20", "cifar100_wrn40_2_wrn16_2", "cifar100_resnet32x4_resnet8x4"]
PAPER = CIFAR + ["imagenet_resnet34_resnet18"]
# (teacher, student, K range, published teacher top-1 that the header must quote)
PAIRS = {
    "cifar100_resnet110_resnet20": ("resnet110", "resnet20", [2, 5], "74.31"),
    "cifar100_wrn40_2_wrn16_2": ("wrn_40_2", "wrn_16_2", [2, 5], "75.61"),
    "cifar100_resnet32x4_resnet8x4": ("resnet32x4", "resnet8x4", [2, 3], "79.42"),
    "imagenet_resnet34_resnet18": ("torchvision:resnet34", "torchvision:resnet18", [3, 6], "73.31"),
}
# Candidate layers (residual blocks) per architecture, docs/method.md §1 and the zoo.
BLOCKS = {"resnet110": 54, "resnet20": 9, "wrn_40_2": 18, "wrn_16_2": 6, "resnet32x4": 15, "resnet8x4": 3,
          "torchvision:resnet34": 16, "torchvision:resnet18": 8}
STAGES = {"resnet20": 3, "wrn_16_2": 3, "resnet8x4": 3, "torchvision:resnet18": 4}


def _paper(name: str):
    return load_config(ROOT / "search_spaces" / f"{name}.yaml")


def _yaml(rel: str) -> dict:
    return yaml.safe_load((ROOT / rel).read_text())


def _excludes_json(text: str) -> list[dict]:
    return [json.loads(m) for m in re.findall(r"--runtime-env-json '([^']*)'", text)]


# --------------------------------------------------------------------------- sweep configs


def test_all_paper_configs_are_present():
    assert {p.stem for p in SPACES} >= set(PAPER) | {"digits_quick"}


@pytest.mark.parametrize("path", SPACES, ids=[p.stem for p in SPACES])
def test_every_config_loads_and_its_names_exist(path):
    cfg = load_config(path)
    check_names(cfg)  # every registry name, including every choice of the search space
    assert cfg.name == path.stem  # the experiment name is the file name


@pytest.mark.parametrize("name", CIFAR)
def test_cifar_configs_use_the_crd_benchmark_recipe(name):
    cfg = _paper(name)
    t = cfg.train
    assert (t.epochs, t.lr, t.batch_size, t.momentum, t.weight_decay) == (240, 0.05, 64, 0.9, 5e-4)
    assert t.lr_schedule == "step" and t.gamma == 0.1
    assert t.resolved_milestones() == [150, 180, 210]
    assert cfg.data.dataset == "cifar100" and cfg.data.probe_size == 10000 and cfg.data.image_size is None
    assert cfg.teacher.checkpoint.endswith("_vanilla/ckpt_epoch_240.pth")  # the benchmark's published teachers
    assert cfg.search.resources_per_trial.gpu == 0.25  # four trials per GPU


def test_imagenet_config_is_the_paper_pair_at_224px():
    cfg = _paper("imagenet_resnet34_resnet18")
    assert cfg.data.dataset == "imagefolder" and cfg.data.image_size == 224 and cfg.data.probe_size == 10000
    assert (cfg.teacher.arch, cfg.student.arch) == ("torchvision:resnet34", "torchvision:resnet18")
    assert cfg.train.resolved_milestones() == [30, 60] and cfg.train.epochs == 90
    assert cfg.search.resources_per_trial.gpu == 1


# The ratio r (hint term ÷ CE term at the first step) the CRD benchmark's β means at 32 px, measured by
# bench/experiments/hint_ratio_transfer.py on CIFAR-10 photographs (resnet20 → resnet8): AT 1000, FitNet 100, VID 1.
BENCHMARK_RATIO_32PX = {"at": 4.7, "fitnet": 240.0, "vid": 1.3}


@pytest.mark.parametrize("name", PAPER)
def test_paper_search_space_and_settings(name):
    cfg = _paper(name)
    teacher, student, k_range, _ = PAIRS[name]
    assert (cfg.teacher.arch, cfg.student.arch) == (teacher, student)
    assert cfg.space["selection.n_hints"] == {"randint": k_range}
    assert cfg.space["selection.similarity"] == {"choice": ["r2_cca", "cka_linear", "cka_rbf"]}
    assert cfg.space["selection.algorithm"] == {"choice": ["pursuhint", "agglomerative", "spectral", "kmedoids"]}
    assert cfg.space["selection.center"] == {"choice": ["mean_index", "medoid", "last"]}
    assert cfg.space["distill.method"]["choice"][0] == "at"
    # Non-sweep commands fall back to paper mode, K = the student's stages (3 on CIFAR, 4 on ImageNet).
    assert cfg.selection.n_hints is None
    assert (cfg.selection.similarity, cfg.selection.algorithm, cfg.selection.center) == (
        "r2_cca", "pursuhint", "mean_index")
    # searched trials calibrate β (hint_ratio searched per method, each range holding the ratio the
    # benchmark's β means at 32 px); the search stage's baselines keep the benchmark's β
    from pursuhint.config.grammar import branch_for

    assert cfg.distill.hint_weight == "auto"
    for method in cfg.space["distill.method"]["choice"]:
        low, high = branch_for(cfg.space["distill.hint_ratio"], method)["loguniform"]
        assert low < BENCHMARK_RATIO_32PX[method.split("+")[0]] < high, method
    assert cfg.search.baseline_values == {"distill.hint_weight": None}
    from pursuhint.search.space import baseline_configs

    for b in baseline_configs(cfg):
        assert b["distill.hint_weight"] is None and cfg.with_values(
            {k: v for k, v in b.items() if k != "pursuhint.baseline"}).distill.hint_weight is None
    s = cfg.search
    assert (s.num_samples, s.scheduler, s.searcher, s.max_concurrent_trials) == (64, "asha", "optuna", None)
    assert s.baselines == ["default", "kd_only"]
    assert s.grace_period * s.reduction_factor < cfg.train.epochs  # ASHA has at least two rungs
    assert cfg.tracking.uri is None  # given by --tracking-uri on the cluster


@pytest.mark.parametrize("name", PAPER)
def test_k_range_fits_teacher_and_student(name):
    """Every K the sweep can draw pairs each teacher hint with its own student layer; the paper's
    K (3 on CIFAR-100, 4 on ImageNet) equals the student's stages and lies in the range."""
    from pursuhint.models import create_model, model_block_stages

    teacher, student, (k_low, k_high), _ = PAIRS[name]
    classes = 1000 if teacher.startswith("torchvision:") else 100
    t_stages = model_block_stages(create_model(teacher, classes))
    s_stages = model_block_stages(create_model(student, classes))
    assert sum(map(len, t_stages)) == BLOCKS[teacher]
    assert sum(map(len, s_stages)) == BLOCKS[student]
    assert len(s_stages) == STAGES[student]
    assert 2 <= k_low <= STAGES[student] <= k_high <= BLOCKS[student] < BLOCKS[teacher]


@pytest.mark.parametrize("name", PAPER)
def test_paper_config_header_says_what_how_and_against_what(name):
    text = (ROOT / "search_spaces" / f"{name}.yaml").read_text()
    header = text.split("\nname:")[0]
    assert all(line.startswith("#") for line in header.splitlines() if line.strip())
    assert f"pursuhint sweep search_spaces/{name}.yaml --address auto" in header
    assert PAIRS[name][3] in header  # the published teacher accuracy
    assert "placeholder" in text.lower()


# --------------------------------------------------------------------------- cluster files


def _ray_validate(config: dict) -> dict:
    """Ray's own checks (schema, defaults, node types), as `ray up` runs them; skipped without Ray."""
    pytest.importorskip("ray")
    try:
        from ray.autoscaler._private.util import prepare_config, validate_config
    except ImportError:  # pragma: no cover - a future Ray that moved its private helpers
        pytest.skip("Ray's cluster-config validation helpers moved")
    prepared = prepare_config(config)
    validate_config(prepared)
    return prepared


def test_ray_cluster_launcher_config():
    cfg = _yaml("ray_cluster.yaml")
    assert cfg["cluster_name"] == "pursuhint" and cfg["provider"]["type"] == "aws"
    types = cfg["available_node_types"]
    head = cfg["head_node_type"]
    assert head in types
    workers = [t for t in types if t != head]
    assert workers and all(types[t]["max_workers"] >= types[t].get("min_workers", 0) for t in workers)
    assert all(types[t]["node_config"]["InstanceType"].startswith(("g", "p")) for t in workers)  # GPU types
    assert types[head]["node_config"]["InstanceType"].startswith("m")  # a CPU head
    setup = "\n".join(cfg["setup_commands"])
    assert "pip install ~/pursuhint-dist/pursuhint-" in setup and "torch==" in setup
    assert cfg["file_mounts"]["~/pursuhint-dist"] == "./dist"
    head_cmds = "\n".join(cfg["head_start_ray_commands"])
    assert "mlflow_server.sh --background" in head_cmds and "PURSUHINT_MLFLOW_HOST=$(hostname -I" in head_cmds
    assert "--dashboard-host=127.0.0.1" in head_cmds and "0.0.0.0" not in head_cmds
    prepared = _ray_validate(cfg)
    assert prepared["head_node_type"] == head


@pytest.mark.parametrize("rel", ["ray_cluster.yaml", "cluster/local_cluster.yaml"])
def test_every_node_starts_with_the_same_auth_mode_and_token(rel):
    cfg = _yaml(rel)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in cfg[key] if "ray start" in c]
        assert starts and all("export RAY_AUTH_MODE=token;" in c for c in starts), key
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert Path(ROOT / cfg["file_mounts"]["~/pursuhint-cluster"], "mlflow_server.sh").is_file()


def test_local_provider_config():
    cfg = _yaml("cluster/local_cluster.yaml")
    provider = cfg["provider"]
    assert provider["type"] == "local" and provider["head_ip"] and len(provider["worker_ips"]) >= 1
    assert "available_node_types" not in cfg  # Ray refuses node types for the local provider
    assert cfg["min_workers"] == cfg["max_workers"] == len(provider["worker_ips"])
    prepared = _ray_validate(cfg)
    (node_type,) = prepared["available_node_types"].values()
    assert node_type["max_workers"] == len(provider["worker_ips"])


def test_kuberay_rayjob_runs_a_sweep_on_gpu_workers():
    job = _yaml("cluster/rayjob.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    entry = spec["entrypoint"]
    assert entry.startswith("pursuhint sweep ") and "--address auto" in entry
    config = re.search(r"/home/ray/pursuhint/(search_spaces/\S+\.yaml)", entry).group(1)
    assert (ROOT / config).is_file()  # the image copies search_spaces/ there
    env = yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]
    uri = re.search(r"--tracking-uri (\S+)", entry).group(1)
    assert env["MLFLOW_TRACKING_URI"] == uri and "$" not in entry
    cluster = spec["rayClusterSpec"]
    assert cluster["authOptions"]["mode"] == "token"
    assert cluster["headGroupSpec"]["serviceType"] == "ClusterIP"
    gpu_groups = [g for g in cluster["workerGroupSpecs"]
                  if any("nvidia.com/gpu" in c["resources"]["limits"] for c in g["template"]["spec"]["containers"])]
    assert gpu_groups and all(g["minReplicas"] <= g["replicas"] <= g["maxReplicas"] for g in gpu_groups)
    storage = re.search(r"--storage-path (\S+)", entry).group(1)
    mounts = [m["mountPath"] for c in gpu_groups[0]["template"]["spec"]["containers"] for m in c["volumeMounts"]]
    assert any(storage.startswith(m + "/") for m in mounts)  # trials write Tune state to the shared volume


def test_mlflow_server_script_binds_loopback_by_default(tmp_path):
    script = ROOT / "cluster" / "mlflow_server.sh"
    text = script.read_text()
    assert 'HOST="${PURSUHINT_MLFLOW_HOST:-127.0.0.1}"' in text
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    bad = subprocess.run(["bash", str(script), "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown option '--bogus'" in bad.stderr
    # --status probes the default address and says so when nothing answers there.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PURSUHINT_MLFLOW_PORT": "1"}
    status = subprocess.run(["bash", str(script), "--status"], capture_output=True, text=True, env=env)
    assert status.returncode == 1 and "http://127.0.0.1:1" in status.stderr


@pytest.mark.parametrize("setting, expected", [(None, "false"), ("true", "true")])
def test_mlflow_server_script_leaves_mlflows_job_runner_off_unless_asked(tmp_path, setting, expected):
    """MLflow's job runner (seven queue consumers that keep over a core busy while idle) runs jobs pursuhint never
    submits: the script starts the server without it, unless the user sets MLFLOW_SERVER_ENABLE_JOB_EXECUTION."""
    fake = tmp_path / "mlflow"
    fake.write_text('#!/bin/sh\necho "jobs=$MLFLOW_SERVER_ENABLE_JOB_EXECUTION args=$*"\n')
    fake.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MLFLOW": str(fake), "PURSUHINT_MLFLOW_PORT": "5999"}
    if setting is not None:
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = setting
    done = subprocess.run(["bash", str(ROOT / "cluster" / "mlflow_server.sh")], capture_output=True, text=True,
                          env=env, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"jobs={expected} args=server --host 127.0.0.1 --port 5999 --workers 2")


def test_cluster_readme_commands_match_the_files():
    text = (ROOT / "cluster" / "README.md").read_text()
    for cmd in ("ray up -y ray_cluster.yaml", "ray dashboard ray_cluster.yaml", "ray down -y ray_cluster.yaml",
                "ray up -y cluster/local_cluster.yaml", "kubectl -n pursuhint apply -f cluster/rayjob.yaml"):
        assert cmd in text, cmd
    for rel in set(re.findall(r"search_spaces/[\w.]+\.yaml", text)):
        assert (ROOT / rel).is_file(), rel
    envs = _excludes_json(text)
    assert envs and all(e == {"excludes": [".venv", "runs", "mlruns", "mlflow.db", ".git"]} for e in envs)
    assert "--address auto" in text and "--resume" in text and "RAY_AUTH_MODE" in text
