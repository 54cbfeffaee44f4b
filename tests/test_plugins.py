"""A distillation method from outside the package (tests/toy_method.py: one class and its registration)
trains through ``train_student`` and through a sweep, once a config names its module under ``plugins``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pursuhint import tracking
from pursuhint.config import config_from_text
from pursuhint.distill.methods import METHODS, method_names
from pursuhint.train.student import train_student
from pursuhint.errors import ConfigError
from pursuhint.preflight import preflight

from conftest import tiny_distillation
from sweep_helpers import children, mlflow_db

TESTS = Path(__file__).resolve().parent
# each test imports its plugins afresh and leaves the registries as it found them
pytestmark = pytest.mark.usefixtures("registries_restored")
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


FOUR_TOYS = '''
"""A user's own model, distillation method, similarity measure and clustering, in one file."""
import torch
from torch import nn

from pursuhint.distill.methods import METHODS, DistillMethod, pool_to_common
from pursuhint.hints import CLUSTERINGS, SIMILARITIES
from pursuhint.models import MODELS


def block(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class TwoByThree(nn.Module):
    """Three stages of two conv blocks each."""

    def __init__(self, num_classes, in_channels=3):
        super().__init__()
        self.s1 = nn.Sequential(block(in_channels, 8), block(8, 8))
        self.s2 = nn.Sequential(block(8, 16, 2), block(16, 16))
        self.s3 = nn.Sequential(block(16, 16, 2), block(16, 16))
        self.fc = nn.Linear(16, num_classes)

    def block_stages(self):
        return [[f"s{i}.0", f"s{i}.1"] for i in (1, 2, 3)]

    def forward(self, x):
        return self.fc(self.s3(self.s2(self.s1(x))).mean((2, 3)))


@MODELS.register("toy_net")
def toy_net(num_classes, in_channels=3):
    return TwoByThree(num_classes, in_channels)


@SIMILARITIES.register("toy_normcorr")
def toy_normcorr(x, y):
    """|correlation| of the samples' feature norms."""
    a, b = x.float().norm(dim=1), y.float().norm(dim=1)
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b).abs() / (a.norm() * b.norm() + 1e-12))


@CLUSTERINGS.register("toy_kmedoids")
def toy_kmedoids(S, n_clusters, seed=0, center="mean_index"):
    return CLUSTERINGS.get("kmedoids")(S, n_clusters, seed, center=center)


@METHODS.register("toy_l1")
class ToyL1(DistillMethod):
    default_weight = 3.0

    def pair_loss(self, f_s, f_t, k=0):
        f_s, f_t = pool_to_common(f_s, f_t)
        return (f_s.mean(1) - f_t.mean(1)).abs().mean()
'''

# Two ways in at once: toy_method (the config's `plugins`, found on the workers' PYTHONPATH) and four_toys
# (`--plugin`, shipped to the workers). The default baseline runs once per method of the space, so both
# methods train; the searched trial clusters with the user's similarity and clustering.
FOUR_TOYS_CONFIG = """
plugins: [toy_method]
name: t_four
seed: 0
data: {dataset: digits, image_size: 8, train_samples: 300, val_samples: 120, probe_size: 150}
teacher: {arch: toy_net, train: {epochs: 2, batch_size: 64, lr: 0.05, lr_schedule: cosine}}
student: {arch: toy_net}
selection: {similarity: toy_normcorr, algorithm: toy_kmedoids, center: medoid, n_hints: {choice: [2, 3]}}
distill: {method: {choice: [toy_l1, toy_meanmatch]}, hint_weight: auto}
train: {epochs: 1, batch_size: 64, lr: 0.05, lr_schedule: cosine}
search: {num_samples: 1, baselines: [default], scheduler: fifo, max_concurrent_trials: 2, confirm: {top_k: 0}}
"""


@pytest.mark.slow
def test_a_users_model_method_similarity_and_clustering_work_in_select_and_a_sweep(tmp_path, monkeypatch, capsys,
                                                                                    isolated_runs):
    """--plugin imports the user's file in every command (from the working directory, as users run it), and
    the sweep ships it to its Ray workers, whose PYTHONPATH does not have it; the config's own `plugins`
    module is imported by the workers themselves, from their PYTHONPATH."""
    import json

    from pursuhint.cli import main

    # a local Ray's workers inherit the driver's environment: tests/ (toy_method) is on their path, four_toys not
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    (tmp_path / "four_toys.py").write_text(FOUR_TOYS)
    (tmp_path / "four.yaml").write_text(FOUR_TOYS_CONFIG)
    monkeypatch.chdir(tmp_path)
    assert main(["select", "four.yaml", "--plugin", "four_toys", "-q", "--n-hints", "2", "-o", "hs.json"]) == 0
    hs = json.loads((tmp_path / "hs.json").read_text())
    assert (hs["similarity"], hs["algorithm"], hs["teacher_arch"]) == ("toy_normcorr", "toy_kmedoids", "toy_net")
    assert len(hs["layers"]) == 2 and all(name.startswith("s") for name in hs["layers"])
    uri = mlflow_db(tmp_path)
    assert main(["sweep", "four.yaml", "--plugin", "four_toys", "--tracking-uri", uri, "--storage-path",
                 str(tmp_path / "ray"), "-q"]) == 0
    _, runs = children(uri, "t_four")
    kinds = sorted((r.data.tags[tracking.BASELINE_TAG], r.data.params["method"]) for r in runs)
    assert kinds[:2] == [("default", "toy_l1"), ("default", TOY)] and kinds[2] in (("none", "toy_l1"), ("none", TOY))
    for run in runs:  # trained in Ray workers through the users' model and methods
        p = run.data.params
        assert run.data.tags[tracking.STATUS_TAG] == "completed", run.data.tags
        assert p["student_layers"].startswith("s") and p["hint_layers"] and float(p["hint_weight_resolved"]) > 0
        if tracking.DUPLICATE_TAG not in run.data.tags:
            assert run.data.metrics["loss_hint"] > 0, run.info.run_name
    (searched,) = [r.data.params for r in runs if r.data.tags[tracking.BASELINE_TAG] == "none"]
    assert (searched["similarity"], searched["algorithm"]) == ("toy_normcorr", "toy_kmedoids")
    recorded = (tmp_path / "ray" / "t_four" / "pursuhint_sweep.json").read_text()  # recorded for resume
    assert "four_toys" in recorded and "toy_method" in recorded


def test_a_plugin_that_cannot_be_imported_is_refused_with_its_own_message(tmp_path, monkeypatch, capsys):
    from pursuhint.cli import main

    (tmp_path / "broken_plugin.py").write_text("import torch\nraise RuntimeError('the GPU driver is too old')\n")
    monkeypatch.chdir(tmp_path)
    assert main(["report", "anything", "--plugin", "broken_plugin"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err  # one sentence
    assert "--plugin: cannot import plugin module 'broken_plugin' (RuntimeError: the GPU driver is too old)" in err
    assert main(["report", "anything", "--plugin", "no_such_module_q"]) == 2
    assert "No module named 'no_such_module_q'" in capsys.readouterr().err
