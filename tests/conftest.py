"""Shared fixtures: an isolated runs folder for the session and one trained digits teacher."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def digits_teacher_yaml() -> str:
    """The digits teacher every integration test shares (trained once per session, ~1 min on 2 cores):
    search_spaces/digits_quick.yaml's seed, data, teacher and student, so the embedded config and the
    benchmarks find this teacher in the cache; students train 2 epochs."""
    raw = yaml.safe_load((ROOT / "search_spaces" / "digits_quick.yaml").read_text())
    train = {"epochs": 2, "batch_size": 64, "lr": 0.05, "lr_schedule": "cosine"}
    return yaml.safe_dump({"name": "test_digits", **{k: raw[k] for k in ("seed", "data", "teacher", "student")},
                           "train": train}, sort_keys=False)


TEACHER_YAML = digits_teacher_yaml()


def tiny_distillation(config_yaml: str, teacher_arch: str):
    """(config, data set, randomly initialised teacher in eval mode, its sha256, its default hints) for the
    quick student-training tests: the teacher's weights do not matter there, only the plumbing."""
    import torch

    from pursuhint.config import config_from_text
    from pursuhint.hints.pipeline import teacher_default_hints
    from pursuhint.models import create_model, weights_sha256
    from pursuhint.train.teacher import dataset_for

    cfg = config_from_text(config_yaml)
    ds = dataset_for(cfg)
    torch.manual_seed(0)
    teacher = create_model(teacher_arch, ds.num_classes, in_channels=ds.channels).eval()
    sha = weights_sha256(teacher.state_dict())
    return cfg, ds, teacher, sha, teacher_default_hints(teacher, teacher_arch, sha, ds)


SLOW_FIXTURES = {"trained_teacher"}  # a ~1-minute digits teacher: what uses it is not in the fast lane


def pytest_collection_modifyitems(config, items):
    """Tests that train the shared digits teacher are ``slow`` too: `make test-fast` leaves them out."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def pytest_runtest_setup(item):
    """``@pytest.mark.cuda`` tests skip without a CUDA device, except under ``PURSUHINT_REQUIRE_CUDA=1``
    (``make gpu-check``), where a missing device is a failure: a GPU run must never pass by skipping."""
    if item.get_closest_marker("cuda") is None:
        return
    import torch

    if torch.cuda.is_available():
        return
    if os.environ.get("PURSUHINT_REQUIRE_CUDA") == "1":
        pytest.fail("PURSUHINT_REQUIRE_CUDA=1 but torch.cuda.is_available() is False", pytrace=False)
    pytest.skip("needs CUDA")


@pytest.fixture(scope="session", autouse=True)
def isolated_runs(tmp_path_factory) -> Path:
    """Every test writes run outputs under one temporary folder, never into the checkout."""
    runs = tmp_path_factory.mktemp("runs")
    old = os.environ.get("PURSUHINT_RUNS")
    os.environ["PURSUHINT_RUNS"] = str(runs)
    yield runs
    if old is None:
        os.environ.pop("PURSUHINT_RUNS", None)
    else:
        os.environ["PURSUHINT_RUNS"] = old


@pytest.fixture(scope="session")
def digits_config_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "digits.yaml"
    path.write_text(TEACHER_YAML)
    return path


@pytest.fixture(scope="session")
def trained_teacher(digits_config_path, isolated_runs):
    """(config, checkpoint path) of the shared digits resnet56 teacher."""
    from pursuhint.config import load_config
    from pursuhint.train.teacher import train_teacher

    cfg = load_config(digits_config_path)
    path = train_teacher(cfg, progress=False)
    return cfg, path
