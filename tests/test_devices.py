"""Every CUDA decision, checked on a CPU-only machine by patching what torch and Ray report."""

from __future__ import annotations

import types

import pytest
import torch

from pursuhint.infra import devices
from pursuhint.data.loader import DeviceLoader, choose_placement, device_budget
from pursuhint.errors import DeviceError


def _fake_ray(gpu_ids, mode="worker"):
    ray = types.SimpleNamespace(WORKER_MODE="worker", SCRIPT_MODE="script")
    ray.is_initialized = lambda: True
    ray.get_gpu_ids = lambda: list(gpu_ids)
    ray.get_runtime_context = lambda: types.SimpleNamespace(worker=types.SimpleNamespace(mode=mode))
    return ray


def test_a_trial_without_a_gpu_trains_on_the_cpu_even_when_cuda_is_visible(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "ray", _fake_ray([]))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # Ray 2.60 no longer empties it for 0-GPU workers
    assert devices.runtime_device() == torch.device("cpu")


def test_a_trial_holding_a_gpu_uses_it_and_makes_it_the_current_device(monkeypatch):
    current = []
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    monkeypatch.setitem(__import__("sys").modules, "ray", _fake_ray(["3"]))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # Ray exposes the assigned GPU as torch's index 0
    assert devices.runtime_device() == torch.device("cuda", 0)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")  # RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES: the id is the index
    assert devices.runtime_device() == torch.device("cuda", 3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,3")
    assert devices.ray_device(["3"]) == torch.device("cuda", 1)
    assert current == [0, 3, 1]  # torch.cuda.set_device each time, so unnamed CUDA calls use this GPU


def test_a_trial_holding_a_gpu_torch_cannot_see_fails_naming_the_mismatch(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "ray", _fake_ray([0]))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match=r"Ray assigned GPU 0 .* cannot see a CUDA device; install the torch build"):
        devices.runtime_device()


def test_outside_ray_pick_device_is_unchanged(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "ray", _fake_ray([], mode="script"))  # the driver
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert devices.runtime_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.runtime_device() == torch.device("cpu")
    assert devices.runtime_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("capability, dtype, name", [((9, 0), torch.bfloat16, "bf16"), ((8, 0), torch.bfloat16, "bf16"),
                                                     ((7, 5), None, "fp32"), ((6, 1), None, "fp32")])
def test_autocast_dtype_follows_compute_capability(monkeypatch, capability, dtype, name):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert devices.autocast_dtype(torch.device("cuda")) == dtype
    assert devices.precision_name(torch.device("cuda")) == name
    assert devices.autocast_dtype(torch.device("cpu")) is None


def test_autocast_context_is_off_on_the_cpu():
    with devices.autocast(torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_cudnn_benchmark_is_on_for_cuda_training_unless_determinism_is_asked(monkeypatch):
    old = torch.backends.cudnn.benchmark
    try:
        assert devices.configure_training(torch.device("cuda")) is True
        assert torch.backends.cudnn.benchmark is True
        monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
        assert devices.configure_training(torch.device("cuda")) is False
        assert torch.backends.cudnn.benchmark is False
        monkeypatch.undo()
        assert devices.configure_training(torch.device("cpu")) is False
    finally:
        torch.backends.cudnn.benchmark = old


def test_numerics_tag_names_device_kind_and_capability(monkeypatch):
    assert devices.numerics_tag(torch.device("cpu")) == "cpu-fp32"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert devices.numerics_tag(torch.device("cuda")) == "cuda-sm90-fp32"


def test_teacher_and_student_take_channels_last_on_cuda(monkeypatch):
    from pursuhint.models import create_model

    moved = []
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *a, **k: moved.append((a, k)) or self)
    model = create_model("resnet8", 10)
    devices.place_model(model, torch.device("cuda"))
    assert moved == [((torch.device("cuda"),), {}), ((), {"memory_format": torch.channels_last})]
    moved.clear()
    devices.place_model(model, torch.device("cpu"))
    assert moved == [((torch.device("cpu"),), {})]
    assert devices.memory_format(torch.device("cuda")) == torch.channels_last
    assert devices.memory_format(torch.device("cpu")) == torch.contiguous_format


def test_every_model_placement_goes_through_place_model(monkeypatch):
    """The (cohort) trainer, the teacher loader and the sweep's shared teacher all place models with
    ``place_model`` (so a teacher is never left contiguous beside a channels_last student)."""
    import inspect

    from pursuhint.train import teacher
    from pursuhint.train import student as trainer
    from pursuhint.search import shared

    for module, fn in ((trainer, trainer.train_cohort), (trainer, trainer._build), (teacher, teacher.train_teacher),
                       (teacher, teacher.load_teacher), (shared, shared.SharedWork.teacher)):
        src = inspect.getsource(fn)
        assert "place_model(" in src, fn.__qualname__
        assert "memory_format" not in src, fn.__qualname__


def test_loader_placement_follows_the_budget(monkeypatch):
    gib = 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * gib, 80 * gib))
    cuda = torch.device("cuda")
    assert device_budget(cuda) == 5 * gib  # half the free memory
    assert device_budget(cuda, 2.0) == 2 * gib
    assert device_budget("cpu") is None
    assert choose_placement(4 * gib, cuda) == "device"
    assert choose_placement(6 * gib, cuda) == "host"
    assert choose_placement(3 * gib, cuda, budget_gb=2) == "host"
    assert choose_placement(10**15, "cpu") == "device"


def _batches(loader):
    out = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        out.append([tuple(t.clone() for t in b) for b in loader])
    return out


@pytest.mark.parametrize("augment", ["crop_flip", "crop", "none"])
@pytest.mark.parametrize("train", [True, False])
def test_device_host_and_memory_mapped_placements_give_identical_batches(tmp_path, augment, train):
    import numpy as np

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (37, 3, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (37,), generator=g)
    path = tmp_path / "images.u8"
    mm = np.memmap(path, dtype=np.uint8, mode="w+", shape=tuple(x.shape))
    mm[:] = x.numpy()
    mm.flush()
    mapped = torch.from_numpy(np.memmap(path, dtype=np.uint8, mode="r+", shape=tuple(x.shape)))
    kw = dict(train=train, augment=augment, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4), seed=7, with_index=True)
    ref = _batches(DeviceLoader(x, y, 8, placement="device", **kw))
    for source, placement in ((x, "host"), (mapped, "host"), (mapped, "device")):
        got = _batches(DeviceLoader(source, y, 8, placement=placement, **kw))
        assert len(got) == len(ref)
        for e_ref, e_got in zip(ref, got):
            assert len(e_ref) == len(e_got)
            for b_ref, b_got in zip(e_ref, e_got):
                for t_ref, t_got in zip(b_ref, b_got):
                    assert torch.equal(t_ref, t_got)


def test_unknown_placement_is_refused():
    from pursuhint.errors import DataError

    with pytest.raises(DataError, match="placement 'gpu'"):
        DeviceLoader(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2), 1, train=False, augment="none",
                     mean=(0,), std=(1,), placement="gpu")


def test_cuda_rng_states_are_empty_without_cuda_and_restore_is_a_no_op(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.cuda_rng_states() == []
    devices.restore_cuda_rng_states([torch.zeros(8, dtype=torch.uint8)])  # nothing to restore into


def test_checkpoints_carry_and_restore_cuda_rng_states(monkeypatch, tmp_path):
    """The training checkpoint saves each CUDA device's RNG state and resume restores it."""
    from pursuhint.config import TrainRecipe
    from pursuhint.train import loop

    saved = [torch.arange(16, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(loop, "cuda_rng_states", lambda: saved)
    monkeypatch.setattr(loop, "restore_cuda_rng_states", lambda states: restored.append(states))
    model = torch.nn.Linear(2, 2)
    data = [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))]

    def ce(images, labels, _i):
        logits = model(images)
        return logits, {"ce": torch.nn.functional.cross_entropy(logits, labels)}

    recipe = TrainRecipe(epochs=1, batch_size=4, lr=0.1)
    path = tmp_path / "state.pt"
    loop.fit({"m": model}, ce, recipe, train_loader=data, val_loader=data, eval_model=model,
             device=torch.device("cpu"), checkpoint_path=path)
    state = torch.load(path, weights_only=True)
    assert torch.equal(state["cuda_rng"][0], saved[0])
    loop.fit({"m": model}, ce, recipe.model_copy(update={"epochs": 2}), train_loader=data, val_loader=data,
             eval_model=model, device=torch.device("cpu"), checkpoint_path=path)
    assert len(restored) == 1 and torch.equal(restored[0][0], saved[0])


def test_full_fp32_uses_the_precision_api_of_this_torch_and_restores_it(monkeypatch):
    """torch >= 2.9 has ``fp32_precision`` (the legacy ``allow_tf32`` flags are deprecated and raise once the new
    API has been used); full fp32 sets it to "ieee" inside and restores it; older torch gets the legacy flags."""
    backends = devices.precision_backends()
    assert backends, "this torch has the fp32_precision API"
    before = [b.fp32_precision for b in backends]
    with devices.full_fp32():
        assert [b.fp32_precision for b in backends] == ["ieee", "ieee"]
    assert [b.fp32_precision for b in backends] == before
    monkeypatch.setattr(devices, "precision_backends", lambda: [])  # an older torch: the legacy flags
    flags = types.SimpleNamespace(allow_tf32=True)
    monkeypatch.setattr(torch.backends, "cudnn", flags)
    monkeypatch.setattr(torch.backends.cuda, "matmul", types.SimpleNamespace(allow_tf32=True))
    with devices.full_fp32():
        assert flags.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False
    assert flags.allow_tf32 is True and torch.backends.cuda.matmul.allow_tf32 is True


def test_a_fractional_gpu_trials_budget_is_its_share_of_the_card(monkeypatch):
    """Four 0.25-GPU trials start together and each sees an empty 80 GiB card: each may keep 0.5 × 0.25 × 80 =
    10 GiB of images (not half the free 80 GiB, which would claim twice the card); a given budget still wins,
    and outside Ray (or in a trial without a GPU) the budget is half the free memory."""
    gib = 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (80 * gib, 80 * gib))
    ray = _fake_ray([0])
    ray.get_runtime_context = lambda: types.SimpleNamespace(
        worker=types.SimpleNamespace(mode="worker"), get_assigned_resources=lambda: {"CPU": 1.0, "GPU": 0.25})
    monkeypatch.setitem(__import__("sys").modules, "ray", ray)
    cuda = torch.device("cuda", 0)
    assert devices.assigned_gpu_fraction() == 0.25
    assert device_budget(cuda) == 10 * gib
    assert device_budget(cuda, 3.0) == 3 * gib
    ray.get_runtime_context = lambda: types.SimpleNamespace(
        worker=types.SimpleNamespace(mode="worker"), get_assigned_resources=lambda: {"CPU": 1.0, "GPU": 2.0})
    assert device_budget(cuda) == 40 * gib  # two whole GPUs: one whole card per device
    monkeypatch.setitem(__import__("sys").modules, "ray", _fake_ray([], mode="script"))  # the driver
    assert devices.assigned_gpu_fraction() is None and device_budget(cuda) == 40 * gib
