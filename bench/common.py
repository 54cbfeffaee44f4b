"""Shared helpers for the benchmarks: timing protocol, machine description, synthetic CIFAR-shaped data, the
sweep benchmarks' workspace (teacher cache, MLflow and Tune stores, Ray clean-up), and what the experiments
share (the demo's config, the CIFAR-shaped teacher, their sizes, the student trained alone).

Every timing is the median of several repeats after a warm-up, and every headline is a ratio against a
baseline measured in the same process, so a busy machine slows both sides alike.
"""

from __future__ import annotations

import copy
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import yaml

from pursuhint.config import Config, config_from_dict, load_config
from pursuhint.data import ImageDataset
from pursuhint.train.student import StudentResult, train_student
from pursuhint.train.teacher import Teacher, dataset_for, load_teacher, teacher_cache_dir, train_teacher

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


def pick_device() -> torch.device:
    """CUDA when present, else CPU (the same code path on both)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync(device: torch.device | None = None) -> None:
    """Wait for queued CUDA work so a wall-clock reading covers it; a no-op on CPU."""
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], Any], device: torch.device | None = None) -> float:
    """Wall-clock seconds of one call of ``fn`` (CUDA work included)."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


class Progress:
    """Progress lines of a long benchmark, flushed: ``[gpu +12 s] epoch time, images on the host``, so that one
    stopped at a timeout shows how far it got (on a lent H200 the gpu benchmark's log was silent for 110 s)."""

    def __init__(self, name: str) -> None:
        self.name, self.t0 = name, time.perf_counter()

    def __call__(self, what: str) -> None:
        print(f"[{self.name} +{time.perf_counter() - self.t0:.0f} s] {what}", flush=True)


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 1, device: torch.device | None = None) -> dict:
    """Median wall-clock seconds of ``repeats`` calls after ``warmup`` untimed ones, with every sample."""
    for _ in range(warmup):
        fn()
    times = [seconds(fn, device) for _ in range(repeats)]
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": [round(t, 6) for t in times]}


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1,
                device: torch.device | None = None) -> dict[str, dict]:
    """Like :func:`median_time` for several functions, alternating them (A B C A B C …).

    Interleaving makes slow phases of a shared machine hit every side of a ratio alike.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(seconds(fn, device))
    return {name: {"median_s": statistics.median(ts), "min_s": min(ts), "times_s": [round(t, 6) for t in ts]}
            for name, ts in samples.items()}


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's CPU RNG seeded (e.g. model initialisation), then restore the RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def cifar_like(n: int, seed: int = 0, classes: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random CIFAR-shaped uint8 images (n × 3 × 32 × 32) and int64 labels, reproducible by seed."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


def cifar_dataset(n: int, seed: int = 0, val: int = 1000) -> ImageDataset:
    """``n`` random CIFAR-100-shaped training images (and ``val`` validation images) as an ImageDataset."""
    x, y = cifar_like(n + val, seed=seed)
    return ImageDataset("cifar100-shaped", x[:n], y[:n], x[n:], y[n:], 100, [str(i) for i in range(100)],
                        CIFAR100_MEAN, CIFAR100_STD, "crop_flip")


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine(device: torch.device | None = None) -> dict[str, Any]:
    """Where a figure was measured: CPU model, cores, torch version and threads, and the device."""
    device = device or pick_device()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {
        "cpu": cpu_model(),
        "cores": usable,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": name,
        "python": platform.python_version(),
        "load_avg_1m": _load_average(),
    }


def _load_average() -> float | None:
    """The 1-minute load average (other people's work on the same cores shows up here), if known."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


class threads:
    """Context manager: run the block with ``n`` torch intra-op threads, then restore the previous count."""

    def __init__(self, n: int) -> None:
        self.n, self.old = n, torch.get_num_threads()

    def __enter__(self) -> "threads":
        torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.old)


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """A table for docs/benchmarks.md: a title, column names and rows of cells (numbers or text)."""
    return {"title": title, "columns": list(columns), "rows": [list(r) for r in rows]}


def fmt(value: Any) -> str:
    """A table cell: floats to 3 significant figures (ratios and seconds), everything else as text."""
    if isinstance(value, bool) or value is None:
        return "—" if value is None else ("yes" if value else "no")
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator rounded to 4 significant figures (inf if the denominator is 0)."""
    if denominator <= 0:
        return float("inf")
    return float(f"{numerator / denominator:.4g}")


def command(name: str, quick: bool, tiny: bool = False) -> str:
    """The command that reproduces one benchmark's entry."""
    flags = (" --quick" if quick else "") + (" --tiny" if tiny else "")
    return f"python bench/run.py{flags} --only {name}"


DIGITS_QUICK = Path(__file__).resolve().parents[1] / "search_spaces" / "digits_quick.yaml"


def digits_quick(name: str, values: dict[str, Any] | None = None) -> Config:
    """search_spaces/digits_quick.yaml (the demo sweep, its space and its teacher) under another name,
    with dotted overrides: benchmarks measure what users run, and share its cached teacher."""
    return load_config(DIGITS_QUICK).with_values({"name": name, **(values or {})})


CIFAR10_SUBSET_ENV = "PURSUHINT_CIFAR10_SUBSET"


def holds_photographs(folder: Path) -> bool:
    """Whether ``folder`` has the ImageFolder layout's ``train/`` (what the benchmarks read)."""
    return (folder / "train").is_dir()


def cifar10_subset() -> Path | None:
    """The real CIFAR-10 photographs (ImageFolder layout: train/<class>/*.jpg, test/<class>/*.jpg): the folder
    named by ``$PURSUHINT_CIFAR10_SUBSET``, else ``../shared/data/cifar10-subset`` beside the checkout; None
    when neither exists (benchmarks that need it then skip with a message)."""
    named = os.environ.get(CIFAR10_SUBSET_ENV)
    for candidate in ([Path(named)] if named else []) + [Path(__file__).resolve().parents[2] / "shared" / "data" /
                                                        "cifar10-subset"]:
        if holds_photographs(candidate):
            return candidate
    return None


# ------------------------------------------------------------------------------------------------
# the workspace the sweep benchmarks share

CACHE_ENV = "PURSUHINT_BENCH_CACHE"


def cache_dir() -> Path:
    """Where benchmark teachers and similarity matrices are cached between runs (never the checkout)."""
    return Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "pursuhint-bench").absolute()


@contextmanager
def workspace() -> Iterator[Path]:
    """Point ``PURSUHINT_RUNS`` at the benchmark cache and yield a fresh temporary folder for MLflow stores
    and Ray results; afterwards restore the variable, shut down any Ray this process started, remove the folder.

    Set before Ray starts, so the sweep's workers read and write the same cache.
    """
    old = os.environ.get("PURSUHINT_RUNS")
    os.environ["PURSUHINT_RUNS"] = str(cache_dir())
    try:
        with tempfile.TemporaryDirectory(prefix="pursuhint-bench-") as tmp:
            yield Path(tmp)
    finally:
        shutdown_ray()
        if old is None:
            os.environ.pop("PURSUHINT_RUNS", None)
        else:
            os.environ["PURSUHINT_RUNS"] = old


def shutdown_ray() -> None:
    """Shut down Ray if this process has it running (a failed benchmark must not leave workers behind)."""
    if "ray" in sys.modules:
        import ray  # ray: deferred, and only once this process has imported it

        if ray.is_initialized():
            ray.shutdown()


def digits_teacher(device: torch.device | None = None) -> tuple[Teacher, dict[str, Any]]:
    """The cached digits resnet56 teacher (trained now if the cache lacks it) and how it was obtained."""
    cfg = digits_quick("bench_teacher")  # the teacher of search_spaces/digits_quick.yaml and of the tests
    cached = (teacher_cache_dir(cfg) / "teacher.pt").exists()
    t0 = time.perf_counter()
    if device is not None:
        train_teacher(cfg, progress=False)  # trained (when not cached) where it is fastest, then loaded on `device`
    teacher = load_teacher(cfg, progress=False, device=device)
    info = {"arch": teacher.arch, "checkpoint_cached": cached, "seconds": round(time.perf_counter() - t0, 1),
            "val_acc": teacher.meta.get("val_acc"), "sha256": teacher.sha256}
    return teacher, info


def sweep_storage(folder: Path) -> dict[str, str]:
    """``run_sweep`` keyword arguments that keep its MLflow store and Tune results inside ``folder`` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    return {"tracking_uri": f"sqlite:///{folder / 'mlflow.db'}", "storage_path": str(folder / "ray_results")}


@contextmanager
def tuner_fit_spans(spans: list[float]) -> Iterator[None]:
    """Record the wall-clock seconds of every ``ray.tune.Tuner.fit`` call in the block (Ray's start-up,
    the shared work and the MLflow parent run fall outside it); the method is restored afterwards."""
    from ray import tune  # ray: deferred, the GPU benchmark runs without it

    original = tune.Tuner.fit

    def timed(self, *args: Any, **kwargs: Any):
        t0 = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            spans.append(time.perf_counter() - t0)

    tune.Tuner.fit = timed
    try:
        yield
    finally:
        tune.Tuner.fit = original


# ------------------------------------------------------------------------------------------------
# what the experiments share: the demo's config, the CIFAR-shaped teacher, their sizes, the student alone

KD_WEIGHT = 1.5  # the authors' reproducible AT run: CE weight 1, KD weight 1.5, hint weight as calibrated
CE_ONLY = {"distill.method": "kd_only", "distill.kd_weight": 0.0, "distill.ce_weight": 1.0}  # no teacher term

CIFAR_TEXT = """
seed: 0
data: {{dataset: imagefolder, root: {root}, train_samples: {train}, val_samples: 1000, probe_size: 1000}}
teacher: {{arch: resnet20, train: {{epochs: {teacher_epochs}, batch_size: 64, lr: 0.05, lr_schedule: cosine}}}}
student: {{arch: resnet8}}
"""


def search_waste_settings(quick: bool, tiny: bool) -> dict[str, Any]:
    """search_waste's sizes: trials, epochs and seeds per sweep, the CIFAR-shaped subset and its teacher's epochs
    (hint_ratio_transfer trains with the same, so the two share one cached CIFAR-shaped teacher)."""
    if tiny:
        return {"samples": 2, "epochs": 2, "seeds": 2, "cifar_train": 1000, "teacher_epochs": 2}
    if quick:
        return {"samples": 4, "epochs": 3, "seeds": 2, "cifar_train": 2000, "teacher_epochs": 6}
    return {"samples": 8, "epochs": 6, "seeds": 3, "cifar_train": 5000, "teacher_epochs": 15}


def natural_settings(quick: bool, tiny: bool) -> dict[str, Any]:
    """Sizes of selection_quality_natural's three variants (decisive_answers' full run takes the full one's).
    ``train`` is the student's stratified subset (10 % of it becomes the
    selection split), ``test`` the held-out photographs scored (None: all 5 000), ``teacher_train`` and
    ``teacher_epochs`` the teacher's (search_waste's CIFAR teacher at the same size, so one cached file),
    ``families`` the (method, KD weight) pairs, ``probe_sizes`` the probe-sensitivity study's sizes.

    A distillation epoch (resnet20 → resnet8, one thread) ran at ~175 images/s on the 2-core machine under
    load (load average 4–6): tiny 2 min (measured: 128 s at 300 photographs beside a running benchmark), quick ~8 min, full
    ~60–80 min (about 44 rounds of two concurrent ~90-s trials, plus ~1 min of Ray, Tune and MLflow per
    sweep), quick and full without training the teacher (shared with search_waste, +1.5 / +5–9 min if not
    cached)."""
    if tiny:
        return {"variant": "tiny (smoke test)", "families": [("at", 0.0)], "measures": ["r2_cca"], "seeds": 2,
                "train": 300, "test": 300, "epochs": 1, "teacher_train": 500, "teacher_epochs": 2,
                "teacher_threads": 1, "full_baselines": False, "decode": False, "probe_sizes": [100, 250]}
    if quick:
        return {"variant": "quick", "families": [("at", 0.0), ("at", KD_WEIGHT)], "measures": ["r2_cca"],
                "seeds": 2, "train": 1000, "test": 2000, "epochs": 3, "teacher_train": 2000, "teacher_epochs": 6,
                "teacher_threads": 2, "full_baselines": True, "decode": True, "probe_sizes": [250, 1000, 1800]}
    return {"variant": "full", "families": [("at", 0.0), ("at", KD_WEIGHT), ("fitnet", 0.0), ("fitnet", KD_WEIGHT)],
            "measures": ["r2_cca", "cka_linear"], "seeds": 3, "train": 2000, "test": None, "epochs": 8,
            "teacher_train": 5000, "teacher_epochs": 15, "teacher_threads": 2, "full_baselines": True,
            "decode": True, "probe_sizes": [250, 500, 1000, 2000, 4500]}


def demo_raw() -> dict[str, Any]:
    """The demo sweep's config as YAML data (its space, recipe and teacher)."""
    return yaml.safe_load(DIGITS_QUICK.read_text())


def cifar_raw(root: Path, s: dict[str, Any]) -> dict[str, Any]:
    """The demo's space and recipe on CIFAR-shaped data: 32-px photographs, a resnet20 teacher."""
    raw = demo_raw()
    raw.update(yaml.safe_load(CIFAR_TEXT.format(root=root, train=s["cifar_train"],
                                                teacher_epochs=s["teacher_epochs"])))
    return raw


def cifar_teacher(raw: dict[str, Any]) -> tuple[Teacher, str]:
    """The CIFAR-shaped resnet20 teacher, trained once on the training part and cached with the benchmarks."""
    cfg = config_from_dict({**copy.deepcopy(raw), "name": "bench_waste_cifar_teacher"})
    with threads(2):
        train_teacher(cfg, progress=True)
    return load_teacher(cfg, progress=False), str(teacher_cache_dir(cfg) / "teacher.pt")


def ce_only(cfg: Config, teacher: Teacher, ds: ImageDataset | None = None,
            evaluate_test: bool = False) -> StudentResult:
    """The student trained alone: cross-entropy only (no hints, no KD) with the config's recipe, splits and seed,
    the reference a distilled student is measured against (``ds``: the config's data set, loaded when None)."""
    plain = cfg.with_values(CE_ONLY)
    return train_student(plain, None, teacher.model, dataset_for(plain) if ds is None else ds,
                         teacher_sha256=teacher.sha256, evaluate_test=evaluate_test)
