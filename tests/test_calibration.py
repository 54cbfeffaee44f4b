"""The calibrated hint weight: β = r · CE₀ / H₀ from the first step, deterministic and harmless to training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pursuhint.config import config_from_text
from pursuhint.errors import ConfigError
from pursuhint.train.student import pair_hints, taps, train_student
from pursuhint.distill.methods import create_method
from pursuhint.data import train_val_loaders
from pursuhint.infra.devices import place_model
from pursuhint.models import create_model

from conftest import tiny_distillation

TINY = """
seed: 3
data: {dataset: digits, image_size: 8, train_samples: 200, val_samples: 60}
teacher: {arch: resnet14}
student: {arch: resnet8}
distill: {method: at, hint_weight: auto, hint_ratio: 2.0}
train: {epochs: 1, batch_size: 32, lr: 0.02, lr_schedule: constant}
"""
HINT_METHODS = ["fitnet", "at", "sp", "nst", "vid", "pkt", "rkd", "cc"]



@pytest.fixture(scope="module")
def tiny():
    return tiny_distillation(TINY, "resnet14")


def _ratio_at_step_zero(cfg, ds, teacher, hs, beta):
    """β·H / CE on the first training batch (step 0), recomputed with an untrained student built like the
    trainer's."""
    torch.manual_seed(cfg.run_seed)
    student = place_model(create_model(cfg.student.arch, ds.num_classes, in_channels=ds.channels), torch.device("cpu"))
    pairs = pair_hints(hs, teacher, student, ds, cfg.selection.granularity, cfg.distill.mapping)
    method = create_method(cfg.distill.method, [(p.student.channels, *p.student.spatial) for p in pairs],
                           [(p.teacher.channels, *p.teacher.spatial) for p in pairs])
    loader, _ = train_val_loaders(ds, cfg.train.batch_size, augment=cfg.data.augment, seed=cfg.run_seed)
    loader.set_epoch(0)
    images, labels = next(iter(loader))
    with taps(teacher, [p.teacher.name for p in pairs]) as tt, taps(student, [p.student.name for p in pairs]) as st, \
            torch.no_grad():
        teacher(images)
        ce = float(F.cross_entropy(student(images), labels))
        hint = float(method(st.outputs, tt.outputs)["hint"])
    return beta * hint / ce


@pytest.mark.parametrize("method", HINT_METHODS)
def test_calibration_gives_the_target_ratio_at_step_zero(tiny, method):
    cfg, ds, teacher, sha, hs = tiny
    cfg = cfg.with_values({"distill.method": method})
    result = train_student(cfg, hs, teacher, ds, teacher_sha256=sha)
    beta = result.weights["hint"]
    calib = result.extra["calibration"]
    assert result.status == "completed" and beta == pytest.approx(calib["weight"]) and beta > 0
    assert calib["ratio"] == 2.0 and calib["weight"] == pytest.approx(2.0 * calib["ce0"] / calib["hint0"])
    assert _ratio_at_step_zero(cfg, ds, teacher, hs, beta) == pytest.approx(2.0, rel=1e-4)  # the aim: 5 %
    assert result.fit.history[-1].extra["hint_weight_resolved"] == beta
    assert 0 <= calib["seconds"] < result.fit.history[0].epoch_time


def test_calibration_is_deterministic_and_trains_like_the_same_beta_given_as_a_number(tiny):
    cfg, ds, teacher, sha, hs = tiny
    a = train_student(cfg, hs, teacher, ds, teacher_sha256=sha)
    b = train_student(cfg, hs, teacher, ds, teacher_sha256=sha)
    assert a.weights["hint"] == b.weights["hint"]
    given = train_student(cfg.with_values({"distill.hint_weight": a.weights["hint"]}), hs, teacher, ds,
                          teacher_sha256=sha)
    for (k, va), vb in zip(a.student.state_dict().items(), given.student.state_dict().values()):
        assert torch.equal(va, vb), k  # calibrating changed nothing else: BN statistics, RNG, data order
    other = train_student(cfg.with_values({"train.seed": 11}), hs, teacher, ds, teacher_sha256=sha)
    assert other.weights["hint"] != a.weights["hint"]  # another initialisation measures another CE₀ / H₀


def test_the_ratio_scales_beta_and_a_number_is_taken_as_is(tiny):
    cfg, ds, teacher, sha, hs = tiny
    one = train_student(cfg.with_values({"distill.hint_ratio": 1.0}), hs, teacher, ds, teacher_sha256=sha)
    two = train_student(cfg, hs, teacher, ds, teacher_sha256=sha)
    assert two.weights["hint"] == pytest.approx(2 * one.weights["hint"])
    fixed = train_student(cfg.with_values({"distill.hint_weight": 123.0}), hs, teacher, ds, teacher_sha256=sha)
    assert fixed.weights["hint"] == 123.0 and "calibration" not in fixed.extra


def test_hint_weight_and_ratio_values_are_validated():
    assert config_from_text("").distill.hint_weight == "auto"
    assert config_from_text("distill: {hint_weight: null}").distill.hint_weight is None
    for text, match in (("distill: {hint_weight: -1}", "distill.hint_weight = -1"),
                        ("distill: {hint_weight: manual}", "distill.hint_weight = 'manual'"),
                        ("distill: {hint_ratio: 0}", "distill.hint_ratio = 0")):
        with pytest.raises(ConfigError, match=match):
            config_from_text(text)
    searched = config_from_text("distill: {hint_ratio: {loguniform: [0.1, 10]}}")
    assert searched.space["distill.hint_ratio"] == {"loguniform": [0.1, 10]}
