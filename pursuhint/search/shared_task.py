"""The Ray task that runs the shared work (``search.shared``) once for a sweep, the resources it asks for, and
their reservation (a placement group), made before the sweep writes anything."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

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


@dataclass
class SharedPlacement:
    """The shared work's resources (``need``), held on one node by the placement group ``group`` until
    ``release`` (which may be called more than once)."""

    need: dict[str, float]
    group: Any
    released: bool = field(default=False, init=False)

    def release(self) -> None:
        if self.released:
            return
        from ray.util.placement_group import remove_placement_group  # ray: deferred, as every import of it here

        self.released = True
        try:
            remove_placement_group(self.group)
        except Exception as exc:  # noqa: BLE001 - Ray gone: it removes a job's groups with the job; the error matters
            logging.getLogger("pursuhint").info("could not remove the shared work's placement group (%s)", exc)


def reserve_shared(cfg: Config) -> SharedPlacement:
    """Reserve what ``shared_resources`` says on one node, waiting up to ``search.shared_timeout_s`` (an autoscaler
    may add the node meanwhile); a cluster that cannot give them stops the sweep with one sentence naming what is
    missing, instead of running the teacher somewhere else. The sweep calls it before it writes anything."""
    import ray  # ray: deferred, as every import in this function
    from ray.util.placement_group import placement_group, remove_placement_group

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    need = shared_resources(cfg, nodes)
    group = placement_group([{k: v for k, v in need.items() if v > 0}])
    try:
        ray.get(group.ready(), timeout=cfg.search.shared_timeout_s)
    except ray.exceptions.GetTimeoutError:
        remove_placement_group(group)
        have = ray.cluster_resources()
        raise PursuhintError(
            f"the shared work (teacher, probe pass, similarities) needs {int(need['GPU'])} GPU and "
            f"{need['CPU']:g} CPUs on one node, and the cluster (CPU {have.get('CPU', 0):g}, GPU "
            f"{have.get('GPU', 0):g}) gave none within search.shared_timeout_s = {cfg.search.shared_timeout_s:g} s; "
            f"add a node with them, or set search.resources_per_trial.gpu: 0 to run on CPUs") from None
    except BaseException:  # Ctrl-C while waiting: the reservation goes with the sweep
        remove_placement_group(group)
        raise
    return SharedPlacement(need, group)


def run_shared_work(cfg: Config, progress: bool, placement: Optional[SharedPlacement] = None) -> Any:
    """The shared work, once, in a Ray task inside ``placement`` (reserved now by ``reserve_shared`` when not
    given), which is released when the task ends."""
    import ray  # ray: deferred, as every import in this function
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    placement = placement or reserve_shared(cfg)
    need = placement.need
    try:
        task = ray.remote(_prepare_remote).options(
            num_cpus=need["CPU"], num_gpus=need["GPU"],
            scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=placement.group))
        return ray.get(task.remote(cfg.to_yaml(), progress, max(1, int(need["CPU"]))))
    finally:
        placement.release()
