"""``cohort: auto`` on a GPU: as many students per confirmation trial as fit the trial's share of the card."""

from __future__ import annotations

import pytest
import torch

from pursuhint.config import AUTO_COHORT_MAX, config_from_text
from pursuhint.train import cohort_memory
from pursuhint.train.cohort_memory import activation_bytes, auto_cohort_size, member_bytes, teacher_bytes


def tiny() -> torch.nn.Module:
    # conv 4·3·3·3 + 4 = 112 parameters, linear 256·10 + 10 = 2570: 2682 floats = 10 728 bytes
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 8 * 8, 10))


SHAPE = (3, 8, 8)
PARAMS = 10_728
PER_IMAGE = (256 + 256 + 256 + 10) * 4  # conv, ReLU, Flatten and Linear outputs of one image, in bytes


def test_the_footprints_count_weights_state_and_one_batchs_activations_by_hand():
    assert activation_bytes(tiny(), SHAPE, 4) == 4 * PER_IMAGE == 12_448
    assert member_bytes(tiny(), SHAPE, 4) == int(1.5 * (3 * PARAMS + 12_448)) == 66_948
    assert teacher_bytes(tiny(), SHAPE, 4) == int(1.5 * (PARAMS + 12_448)) == 34_764
    model = tiny().train()
    activation_bytes(model, SHAPE, 64)
    assert model.training and not model[0]._forward_hooks  # left as it was found


def test_a_cohort_is_what_fits_the_models_half_of_the_trials_share_of_the_card():
    # 0.5 GPU: the models may use 0.5 · 0.5 · card; room for 3.5 members after the teacher means 3
    card = 4 * (34_764 + 3.5 * 66_948)
    assert auto_cohort_size(tiny(), tiny(), SHAPE, 4, int(card), 0.5) == 3
    # a whole GPU: twice the share, room for 34 764 + 7 · 66 948 after the teacher: 7
    assert auto_cohort_size(tiny(), tiny(), SHAPE, 4, int(card), 1.0) == 7
    assert auto_cohort_size(tiny(), tiny(), SHAPE, 4, 2 * int(card), 1.0) == AUTO_COHORT_MAX  # 15: capped
    assert auto_cohort_size(tiny(), tiny(), SHAPE, 4, 10_000, 0.5) == 1  # nothing fits: still one student
    assert auto_cohort_size(tiny(), tiny(), SHAPE, 4, 10**12, 0.25) == AUTO_COHORT_MAX
    assert auto_cohort_size(tiny(), tiny(), SHAPE, 4, None, 0.0) == AUTO_COHORT_MAX  # the CPU: a count


def test_the_shared_work_sizes_auto_cohorts_for_the_trials_gpu_share(monkeypatch):
    from pursuhint.data import load_dataset
    from pursuhint.models import create_model
    from pursuhint.search import shared

    text = """
name: t
data: {dataset: digits, image_size: 8, train_samples: 200, val_samples: 50}
teacher: {arch: resnet14}
student: {arch: resnet8}
train: {batch_size: 32}
search: {resources_per_trial: {cpu: 1, gpu: 0.25}}
"""
    cfg = config_from_text(text)
    ds = load_dataset("digits", image_size=8, train_samples=200, val_samples=50)
    teacher = create_model("resnet14", ds.num_classes, in_channels=ds.channels)
    assert shared.cohort_fit(cfg, ds, teacher) == AUTO_COHORT_MAX  # no CUDA here: sized by count
    seen = {}

    def fake(student, t, shape, batch, card, fraction):
        seen.update(arch=type(student).__name__, shape=shape, batch=batch, card=card, fraction=fraction)
        return 3

    monkeypatch.setattr(shared.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(shared.torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(shared, "total_bytes", lambda device: 80 * 2**30)
    monkeypatch.setattr(shared, "auto_cohort_size", fake)
    assert shared.cohort_fit(cfg, ds, teacher) == 3
    assert seen == {"arch": type(create_model("resnet8", 10, in_channels=1)).__name__, "shape": (1, 8, 8),
                    "batch": 32, "card": 80 * 2**30, "fraction": 0.25}
    cpu = cfg.with_values({"search.resources_per_trial.gpu": 0})
    assert shared.cohort_fit(cpu, ds, teacher) == AUTO_COHORT_MAX  # CPU trials: a count, whatever the card


@pytest.mark.parametrize("arch,batch", [("resnet20", 64), ("resnet110", 64)])
def test_a_cifar_pair_fits_several_students_in_a_quarter_of_an_h200(arch, batch):
    from pursuhint.models import create_model

    student = create_model("resnet20", 100)
    teacher = create_model(arch, 100)
    size = auto_cohort_size(student, teacher, (3, 32, 32), batch, 141 * 10**9, 0.25)
    assert size == AUTO_COHORT_MAX  # a few hundred MB a student: the count, not the memory, limits it
    assert cohort_memory.member_bytes(student, (3, 32, 32), batch) < 2 * 2**30
