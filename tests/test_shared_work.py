"""Where the shared work (teacher, probe pass, similarities) runs: on a GPU whenever the trials ask for GPUs, with
the CPUs it asks for, and a sweep that cannot get them stops naming what is missing."""

from __future__ import annotations

import pytest

from pursuhint.config import config_from_text
from pursuhint.errors import PursuhintError
from pursuhint.search.shared_task import run_shared_work, shared_resources

GPU_NODE = {"CPU": 16.0, "GPU": 4.0, "memory": 1e11}
CPU_NODE = {"CPU": 2.0}


def cfg(text: str = ""):
    return config_from_text("data: {dataset: digits, image_size: 8}\n" + text)


def test_the_shared_work_takes_a_gpu_whenever_trials_do():
    assert shared_resources(cfg(), [CPU_NODE]) == {"CPU": 1.0, "GPU": 0.0}
    gpu = cfg("search: {resources_per_trial: {cpu: 1, gpu: 0.25}}")
    assert shared_resources(gpu, [CPU_NODE, GPU_NODE]) == {"CPU": 4.0, "GPU": 1.0}  # 16 CPUs per 4 GPUs
    assert shared_resources(gpu, [CPU_NODE]) == {"CPU": 2.0, "GPU": 1.0}  # no GPU node yet: still a GPU
    assert shared_resources(gpu, [{"CPU": 2.0, "GPU": 2.0}]) == {"CPU": 2.0, "GPU": 1.0}  # at least 2
    given = cfg("search: {resources_per_trial: {gpu: 1}, shared_cpus: 6}")
    assert shared_resources(given, [GPU_NODE]) == {"CPU": 6.0, "GPU": 1.0}


@pytest.mark.slow
def test_a_cluster_without_the_gpu_stops_the_sweep_naming_it(tmp_path):
    """A local Ray with no GPU and a sweep whose trials ask for one (on a cluster, an autoscaler would add it):
    after search.shared_timeout_s the sweep stops with one sentence, and never runs the teacher on a CPU."""
    import ray

    ray.init(address="local", num_cpus=1, num_gpus=0, include_dashboard=False, log_to_driver=False)
    try:
        gpu = cfg("search: {resources_per_trial: {cpu: 1, gpu: 0.5}, shared_timeout_s: 2}")
        with pytest.raises(PursuhintError, match=r"the shared work \(teacher, probe pass, similarities\) needs 1 GPU "
                                                 r"and 2 CPUs on one node, and the cluster \(CPU 1, GPU 0\) gave none "
                                                 r"within search.shared_timeout_s = 2 s"):
            run_shared_work(gpu, progress=False)
        assert ray.util.placement_group_table() == {} or all(
            p["state"] == "REMOVED" for p in ray.util.placement_group_table().values())
    finally:
        ray.shutdown()
