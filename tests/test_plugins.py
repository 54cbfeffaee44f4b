"""A distillation method from outside the package (tests/toy_method.py: one class and its registration)
trains through ``train_student`` and through a sweep, once a config names its module under ``plugins``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pursuhint import tracking
from pursuhint.config import config_from_text
from pursuhint.distill.methods import METHODS, method_names
from pursuhint.distill.trainer import train_student
from pursuhint.errors import ConfigError
from pursuhint.preflight import preflight

from conftest import tiny_distillation
from sweep_helpers import TINY_SWEEP, children

TESTS = Path(__file__).resolve().parent
TOY = "toy_meanmatch"
TOY_WEIGHT = 7.0  # toy_method.MeanMatch.default_weight

TINY = """
plugins: [toy_method]
seed: 1
data: {dataset: digits, image_size: 8, train_samples: 160, val_samples: 60}
teacher: {arch: resnet14}
student: {arch: resnet8}
distill: {method: toy_meanmatch, hint_weight: null}
train: {epochs: 1, batch_size: 32, lr: 0.02, lr_schedule: constant}
"""


def test_the_config_imports_its_plugins_and_the_method_is_then_known():
    cfg = config_from_text(TINY)
    preflight(cfg)  # the method's name passes the config's name checks
    assert cfg.plugins == ["toy_method"] and TOY in METHODS and f"{TOY}+crd" in method_names()
    assert "plugins:\n- toy_method" in cfg.to_yaml()  # travels with the config to the Ray workers
    with pytest.raises(ConfigError, match=r"plugins = .*cannot import plugin module 'no_such_plugin_xyz'"):
        config_from_text("plugins: [no_such_plugin_xyz]")


def test_toy_method_trains_through_train_student():
    cfg, ds, teacher, sha, hs = tiny_distillation(TINY, "resnet14")
    result = train_student(cfg, hs, teacher, ds, teacher_sha256=sha)
    assert result.status == "completed", result.fit.message
    assert result.method == TOY and METHODS.get(TOY).__module__ == "toy_method"  # not the package's
    assert [p.student.name for p in result.pairs] == ["layer1.0", "layer2.0", "layer3.0"]
    assert result.weights["hint"] == TOY_WEIGHT  # its own default_weight: hint_weight is null
    (stats,) = result.fit.history
    assert stats.losses["hint"] > 0 and stats.losses["total"] > stats.losses["hint"]


@pytest.mark.slow
def test_toy_method_trains_through_a_sweep(tmp_path, monkeypatch):
    from pursuhint.search.sweep import run_sweep

    # Ray workers are other processes: they import the plugin themselves when they read the config,
    # from PYTHONPATH (a local Ray's workers inherit the driver's environment).
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    text = "plugins: [toy_method]\n" + TINY_SWEEP.format(name="t_toy", epochs=1, samples=1, scheduler="fifo", confirm_k=0)
    text = text.replace("distill: {method: {choice: [at]}, hint_weight: 10}", f"distill: {{method: {{choice: [{TOY}]}}, hint_weight: null}}")
    cfg = config_from_text(text)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_sweep(cfg, tracking_uri=uri, storage_path=str(tmp_path / "ray_results"), verbose=0, progress=False)
    assert {(r.baseline, r.method, r.status) for r in result.leaderboard} == {
        ("none", TOY, "completed"), ("default", TOY, "completed"), ("kd_only", "kd_only", "completed")}
    _, runs = children(uri, "t_toy")
    hinted = [r for r in runs if r.data.params["method"] == TOY]
    assert len(hinted) == 2 and {r.info.run_name for r in hinted} >= {f"baseline-default-{TOY}"}
    for run in hinted:  # trained in a Ray worker through the toy method, with its own weight
        assert float(run.data.params["hint_weight"]) == TOY_WEIGHT and run.data.params["hint_layers"]
        assert run.data.tags[tracking.STATUS_TAG] == "completed"
    trained = [r for r in hinted if tracking.DUPLICATE_TAG not in r.data.tags]
    assert trained and all(r.data.metrics["loss_hint"] > 0 for r in trained)
