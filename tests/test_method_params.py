"""``distill.params``: a method's own parameters from the config, checked against the method, searchable."""

from __future__ import annotations

import pytest

from pursuhint.config import config_from_text
from pursuhint.preflight import check_names
from pursuhint.distill.methods import create_method, own_params
from pursuhint.train.student import train_student
from pursuhint.errors import ConfigError, PursuhintError
from pursuhint.search.duplicates import train_key

from conftest import tiny_distillation

TINY = """
seed: 1
data: {dataset: digits, image_size: 8, train_samples: 160, val_samples: 60}
teacher: {arch: resnet14}
student: {arch: resnet8}
distill: {method: at, hint_weight: 10.0%s}
train: {epochs: 1, batch_size: 32, lr: 0.02, lr_schedule: constant}
"""


def hint_loss(params: str) -> float:
    cfg, ds, teacher, sha, hs = tiny_distillation(TINY % params, "resnet14")
    result = train_student(cfg, hs, teacher, ds, teacher_sha256=sha)
    return result.fit.history[0].losses["hint"]


def test_the_methods_own_parameter_reaches_it():
    default = hint_loss("")
    assert hint_loss(", params: {p: 2.0}") == pytest.approx(default)  # AT's default p
    assert hint_loss(", params: {p: 4.0}") != pytest.approx(default, rel=1e-3)
    assert hint_loss(", params: {at: {p: 4.0}, fitnet: {}}") == pytest.approx(hint_loss(", params: {p: 4.0}"))


def test_parameters_are_searchable_and_part_of_the_trained_students_key():
    cfg = config_from_text("distill: {method: at, params: {p: {choice: [1, 2, 4]}}}")
    assert cfg.space == {"distill.params.p": {"choice": [1, 2, 4]}} and cfg.distill.params == {"p": 1}
    four = cfg.with_values({"distill.params.p": 4})
    assert four.distill.params == {"p": 4}
    assert train_key(four, [1, 2]) != train_key(cfg, [1, 2])
    several = config_from_text("distill: {method: {choice: [at, rkd]}, params: {at: {p: 4}, rkd: {angle_weight: 25}}}")
    check_names(several)
    assert own_params("at", several.distill.params) == {"p": 4}
    assert own_params("rkd", several.distill.params) == {"angle_weight": 25}
    assert own_params("at+crd", several.distill.params) == {"p": 4}  # X+crd: X's own
    assert own_params("kd_only", {"p": 4}) == {}  # the KD-only baseline takes none
    # another method's parameters do not change an AT student's key
    other = several.with_values({"distill.method": "at", "distill.params": {"at": {"p": 4}, "rkd": {"angle_weight": 1}}})
    assert train_key(other, [1]) == train_key(several.with_values({"distill.method": "at"}), [1])


@pytest.mark.parametrize("text, fragment", [
    ("distill: {method: at, params: {q: 1}}", "'q' is not a parameter of distillation method 'at'; valid: p"),
    ("distill: {method: {choice: [at, fitnet]}, params: {p: 2}}",
     "'p' is not a parameter of distillation method 'fitnet'; valid: none (with several methods, give each its own"),
    ("distill: {method: rkd, params: {angle_wieght: 2}}", "valid: distance_weight, angle_weight"),
    ("distill: {method: {choice: [at, rkd]}, params: {att: {p: 4}}}", "unknown distillation method 'att' (did you mean 'at'?)"),
])
def test_unknown_parameters_are_refused_naming_the_valid_ones(text, fragment):
    with pytest.raises(ConfigError) as info:
        check_names(config_from_text(text))
    assert str(info.value).startswith("distill.params: ") and fragment in str(info.value)
    with pytest.raises(ConfigError, match="not both"):
        config_from_text("distill: {method: at, params: {at: {p: 4}, q: 1}}")


def test_the_crd_weight_is_a_parameter_of_every_crd_method_only():
    for method in ("at+crd", "crd"):
        check_names(config_from_text(f"distill: {{method: {method}, params: {{crd_weight: 1.5}}}}"))
    with pytest.raises(ConfigError, match="'crd_weight' is not a parameter of distillation method 'at'; valid: p$"):
        check_names(config_from_text("distill: {method: at, params: {crd_weight: 1.5}}"))
    shapes = [(4, 2, 2)]
    crd = {"n_data": 10, "s_dim": 3, "t_dim": 3}
    assert create_method("at+crd", shapes, shapes, **crd).crd_weight == 0.8
    assert create_method("crd", [], [], **crd, crd_weight=2).crd_weight == 2.0
    assert create_method("at", shapes, shapes).crd_weight == 0.0
    for bad in (-1, float("nan"), "1", True):
        with pytest.raises(PursuhintError, match=r"CRD parameter crd_weight=.* is invalid; use a number >= 0 \(default 0.8"):
            create_method("at+crd", shapes, shapes, **crd, crd_weight=bad)
    with pytest.raises(PursuhintError, match="parameter 'crd_weight' is not valid for distillation method 'at'; valid: p"):
        create_method("at", shapes, shapes, crd_weight=1.0)
