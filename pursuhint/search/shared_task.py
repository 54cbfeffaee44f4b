"""The Ray task that runs the shared work (``search.shared``) once for a sweep, and the resources it asks for."""

from __future__ import annotations

from typing import Any, Sequence

from ..config import Config
from ..errors import PursuhintError


def _prepare_remote(config_yaml: str, progress: bool, threads: int = 1) -> Any:
    """The shared work, in its Ray task (see ``run_shared_work``), with as many torch threads as it holds CPUs."""
    import torch  # torch: deferred, as the shared work (torchvision and the models)

    from .shared import prepare_shared

    torch.set_num_threads(threads)  # as many as the task holds CPUs: teacher training and the probe pass
    return prepare_shared(config_yaml, progress=progress)


def shared_resources(cfg: Config, nodes: Sequence[dict[str, float]]) -> dict[str, float]:
    """What the shared work asks Ray for: a GPU whenever the trials ask for GPUs (even before a GPU node has
    joined), and ``search.shared_cpus`` CPUs, by default 1 on a CPU sweep and a GPU node's CPUs per GPU (at
    least 2) otherwise. ``nodes`` are the alive nodes' resources (``ray.nodes()[i]["Resources"]``)."""
    gpu = 1 if cfg.search.resources_per_trial.gpu > 0 else 0
    if cfg.search.shared_cpus is not None:
        return {"CPU": float(cfg.search.shared_cpus), "GPU": float(gpu)}
    if not gpu:
        return {"CPU": 1.0, "GPU": 0.0}
    per_gpu = [n.get("CPU", 0) / n["GPU"] for n in nodes if n.get("GPU", 0) >= 1]
    return {"CPU": float(max(2, int(min(per_gpu)) if per_gpu else 2)), "GPU": 1.0}


def run_shared_work(cfg: Config, progress: bool) -> Any:
    """The shared work, once, in a Ray task placed where ``shared_resources`` says. Its resources are reserved
    first (a placement group) so that a cluster that cannot give them within ``search.shared_timeout_s`` stops
    the sweep with one sentence naming what is missing, instead of running the teacher somewhere else."""
    import ray  # ray: deferred, as every import in this function
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    need = shared_resources(cfg, nodes)
    bundle = {k: v for k, v in need.items() if v > 0}
    pg = placement_group([bundle])
    try:
        ray.get(pg.ready(), timeout=cfg.search.shared_timeout_s)
    except ray.exceptions.GetTimeoutError:
        remove_placement_group(pg)
        have = ray.cluster_resources()
        raise PursuhintError(
            f"the shared work (teacher, probe pass, similarities) needs {int(need['GPU'])} GPU and "
            f"{need['CPU']:g} CPUs on one node, and the cluster (CPU {have.get('CPU', 0):g}, GPU "
            f"{have.get('GPU', 0):g}) gave none within search.shared_timeout_s = {cfg.search.shared_timeout_s:g} s; "
            f"add a node with them, or set search.resources_per_trial.gpu: 0 to run on CPUs") from None
    try:
        task = ray.remote(_prepare_remote).options(
            num_cpus=need["CPU"], num_gpus=need["GPU"],
            scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=pg))
        return ray.get(task.remote(cfg.to_yaml(), progress, max(1, int(need["CPU"]))))
    finally:
        remove_placement_group(pg)
