"""Shared fixtures: an isolated runs folder for the session, one trained digits teacher, one local Ray for the
in-process sweeps and the golden sweep (tests/golden.py) that the sweep modules read."""

from __future__ import annotations

import os
import sys
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


# a ~1-minute digits teacher, a local Ray, the golden sweep: what uses them is not in the fast lane
SLOW_FIXTURES = {"trained_teacher", "local_ray", "golden_sweep"}
RAY_FIXTURES = {"local_ray", "golden_sweep"}  # the tests that keep the session's Ray running


def pytest_configure(config):
    """In a pytest-xdist worker (`make test` runs two), torch gets one thread and idle OpenMP threads sleep,
    here and in every process a test starts: two processes each spinning two OpenMP threads on two cores train
    ~9× slower than one alone (measured), where one thread each costs ~1.4×."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        for name, value in (("OMP_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"), ("OMP_WAIT_POLICY", "PASSIVE")):
            os.environ.setdefault(name, value)


def xdist_group(item: pytest.Item) -> str | None:
    """The pytest-xdist group of a test that shares something costly with others, so that it is built once:
    the session's Ray and the golden sweep, the trained teacher, or its own module's module-scoped fixtures."""
    used = set(getattr(item, "fixturenames", ()))
    if RAY_FIXTURES & used:
        return "session_ray"
    if "trained_teacher" in used:
        return "trained_teacher"
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.values() if info is not None else ()
    if any(d.scope == "module" for chain in defs for d in chain):
        return item.module.__name__
    return None


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config, items):
    """Tests that train the shared digits teacher are ``slow`` too: `make test-fast` leaves them out. Under
    ``pytest -n 2 --dist loadgroup`` (`make test`) the tests that share a costly fixture run in one worker."""
    unit_of, slow_units = [], set()  # each test's unit (its group, or itself alone); the units holding a slow test
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        group = xdist_group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
        unit_of.append(group or item.nodeid)
        if item.get_closest_marker("slow") is not None:
            slow_units.add(unit_of[-1])
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the long ones start first, the short ones fill the ends in
        order = sorted(range(len(items)), key=lambda i: unit_of[i] not in slow_units)
        items[:] = [items[i] for i in order]


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


@pytest.fixture
def registries_restored():
    """What a test registers by importing a plugin in this process is gone after it, and the plugin's module
    unimported, so the tests after it, in whatever order a pytest-xdist worker runs them, see the registries a
    fresh process would."""
    from pursuhint.data.dataset import DATASETS, SURVEYS
    from pursuhint.distill.methods import METHODS
    from pursuhint.hints.cluster import CENTERS, CLUSTERINGS
    from pursuhint.hints.similarity import SIMILARITIES
    from pursuhint.models import MODELS

    registries = (DATASETS, SURVEYS, METHODS, CENTERS, CLUSTERINGS, SIMILARITIES, MODELS)
    before = [dict(r._items) for r in registries]
    modules = set(sys.modules)
    yield
    plugins = set()
    for registry, items in zip(registries, before):
        for name, entry in registry._items.items():
            if name not in items:  # registered during the test, by its module (a Measure: by its pair function's)
                plugins.add(getattr(getattr(entry, "pair", entry), "__module__", None))
        registry._items.clear()
        registry._items.update(items)
    for name in plugins & (set(sys.modules) - modules):
        del sys.modules[name]


_SESSION_RAY: set[str] = set()  # the node id of the Ray start_local_ray started, while it runs


def start_local_ray() -> None:
    """The session's local Ray, started once (≈5 s saved per sweep): a sweep joins a Ray already running in its
    process and leaves it running. Its workers have tests/ on their PYTHONPATH (the config's ``plugins:
    [toy_method]``) and MLflow's fail-fast HTTP settings, as a sweep's own local Ray would give them."""
    import ray

    from pursuhint import tracking

    if ray.is_initialized():
        if ray.get_runtime_context().get_node_id() in _SESSION_RAY:
            return
        ray.shutdown()  # a Ray some test started with its own settings: not one these workers can use
    tracking.fail_fast_http()
    with pytest.MonkeyPatch.context() as env:  # the raylet, and every worker it starts, takes the env of now
        env.setenv("PYTHONPATH", str(ROOT / "tests"), prepend=os.pathsep)
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
    _SESSION_RAY.add(ray.get_runtime_context().get_node_id())


def stop_local_ray() -> None:
    """Shut down whatever Ray runs in this process (the session's or a test's own)."""
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    _SESSION_RAY.clear()


@pytest.fixture(autouse=True)
def ray_only_where_asked(request):
    """A test that asks for neither ``local_ray`` nor ``golden_sweep`` finds no Ray running in this process: it
    may start its own (with its own settings), or check that none starts."""
    if not RAY_FIXTURES & set(request.fixturenames):
        stop_local_ray()
    yield


@pytest.fixture
def local_ray():
    """For a test that runs a sweep in this process: the session's local Ray (see ``start_local_ray``)."""
    start_local_ray()
    yield
    # left running for the next test that asks; ray_only_where_asked or the session's end shuts it down


@pytest.fixture(scope="session", autouse=True)
def _shut_ray_down_at_the_end():
    yield
    stop_local_ray()


@pytest.fixture(scope="session")
def golden_sweep(tmp_path_factory, isolated_runs):
    """The golden sweep (tests/golden.py), run once per session on the session's local Ray."""
    from golden import run_golden

    start_local_ray()
    return run_golden(tmp_path_factory.mktemp("golden"))
