"""`make gpu-check`: exercise every CUDA path on a GPU machine and print what it measured, in at most 8 minutes.

    python bench/gpu_check.py [--full] [--skip-tests] [--dry-run]

Steps (``--dry-run`` lists them, with their timeouts, without a GPU):

1. Dependencies: what the check imports; a missing one is named with the exact install line (a system torch
   is never replaced). Ray, Optuna, MLflow and pydantic are installed offline from the GPU kit
   (``make gpu-kit``; ``$GPU_KIT`` or ``gpu-kit/``) when they are missing and the kit is there.
2. The CUDA tests (``-m cuda``, with ``PURSUHINT_REQUIRE_CUDA=1`` so none can pass by skipping), the
   memory-mapped placements' CUDA test, and the device-decision tests.
3. The ``gpu`` benchmark in its check-sized form (``--tiny``) unless ``--full``: epoch time with the images on
   the device and on the host, the step-sync saving, ResNet-110 selection time, 1 and 4 concurrent
   fractional-GPU trials.
4. The ``cohorts`` benchmark in its check-sized form (``--tiny``): the arms of one seed one after another vs one
   cohort, on the GPU with ResNet-110 → ResNet-20 too (the CUDA tests include a cohort's equality with
   separate training).
5. A short confirmation sweep on the CIFAR-10 photographs (``selection_quality_natural --tiny``), when Ray,
   MLflow and Optuna are importable and the photographs are there: ``$PURSUHINT_CIFAR10_SUBSET``, or the GPU
   kit's packed sample of them (6 000 photographs), unpacked before the steps that read them.

The budget: a lent GPU machine is held for minutes, so the whole check fits in :data:`BUDGET_S` (480 s, one
H200's 8 minutes). Every step runs under its own timeout (:data:`TIMEOUTS`, the kit's install and each of the
two pytest runs included: 450 s together), :data:`RESERVE_S` is left for what runs outside them (the
interpreter, imports, CUDA's start, the summary), and no step runs past the budget's end whatever came before
(a step with no time left is NOT RUN). To get there the benchmarks run trimmed, as ``--tiny`` instead of
``--quick`` (the step timeouts added up to 840 s, the kit's install untimed): the ``gpu`` benchmark times 5 000
training photographs instead of all 20 000, 2 560 images for the step syncs instead of 5 120, 5 000 probe
images instead of 10 000, and 4 one-epoch trials at 1 and 4 concurrent instead of 8 two-epoch trials at 1, 2,
4 and 8; the ``cohorts`` benchmark runs each pair once instead of twice, with 320 digits for one epoch, 128
CIFAR-shaped images and 2 000 for ResNet-110 → ResNet-20 instead of 2 epochs, 2 000 and 10 000. ``--full``
runs the ``gpu`` benchmark's full settings (up to :data:`FULL_GPU_TIMEOUT` s) and lifts the 8-minute budget.

Everything is written under ``$GPU_CHECK_OUT`` (default ``runs/gpu-check/``), never into the committed
``bench/results.json`` or ``docs/benchmarks.md``, and every table measured is printed here too, since the
machine is handed back. A step ends ok, FAILED or NOT RUN (with why). Exit status: 0 when every step ran and
passed, 1 when one failed, 3 when none failed but one was NOT RUN, 2 without a CUDA device.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/gpu_check.py` from a checkout: make `bench` and `pursuhint` importable
    sys.path.insert(0, str(ROOT))

CUDA_TESTS = ["tests/test_cuda.py", "tests/test_data.py", "tests/test_checkpoint.py", "tests/test_similarity.py",
              "tests/test_memory_map.py"]
DEVICE_TESTS = ["tests/test_devices.py"]
NEEDED = {"torch": "torch", "torchvision": "torchvision", "sklearn": "scikit-learn", "scipy": "scipy",
          "yaml": "pyyaml", "matplotlib": "matplotlib", "pydantic": "pydantic", "pytest": "pytest"}
SWEEP_STACK = {"ray": "ray[tune]", "optuna": "optuna", "mlflow": "mlflow"}
# What `make gpu-kit` carries (import name → the kit's wheel): the image lacks all of these.
KIT = {"ray": "ray[tune]", "optuna": "optuna", "mlflow": "mlflow-skinny", "pydantic": "pydantic",
       "sqlalchemy": "sqlalchemy", "alembic": "alembic"}
BUDGET_S = 480  # the whole check: one H200's 8 minutes
# Each subprocess's timeout (s); the CUDA and the device tests are two pytest runs. Measured on a lent H200
# (2026-12-04): the kit's install 24 s, the CUDA tests 26 s of pytest, the device tests 12 s, the cohorts 28 s,
# the sweep 83 s, the gpu benchmark 89 s with a warm cache and 134 s cold (its first teacher, JPEG decode
# and Ray start), so it has the most.
TIMEOUTS = {"kit install": 60, "CUDA tests": 50, "device tests": 25, "gpu benchmark": 160, "cohort benchmark": 45,
            "confirmation sweep": 110}
RESERVE_S = BUDGET_S - sum(TIMEOUTS.values())  # what runs outside the steps: interpreter, imports, CUDA start
END_S = 10  # the budget's last seconds, kept for the summary: no step runs into them
FULL_GPU_TIMEOUT = 420  # --full: the gpu benchmark's full settings, the 8-minute budget lifted
STEPS = [
    ("dependencies", f"import what the check needs; name the install line of anything missing (the GPU kit's "
                     f"offline install: {TIMEOUTS['kit install']} s); unpack the kit's photographs where none are"),
    ("CUDA tests", f"pytest -m cuda {' '.join(CUDA_TESTS)} (PURSUHINT_REQUIRE_CUDA=1), then {DEVICE_TESTS[0]}; "
                   f"{TIMEOUTS['CUDA tests']} s and {TIMEOUTS['device tests']} s"),
    ("gpu benchmark", f"bench/run.py --only gpu --tiny into $GPU_CHECK_OUT (check-sized); "
                      f"{TIMEOUTS['gpu benchmark']} s"),
    ("cohort benchmark", f"bench/run.py --only cohorts --tiny into $GPU_CHECK_OUT (check-sized, ResNet-110 → "
                         f"ResNet-20 too); {TIMEOUTS['cohort benchmark']} s"),
    ("confirmation sweep", f"bench/run.py --only selection_quality_natural --tiny into $GPU_CHECK_OUT (Ray, "
                           f"Optuna, MLflow and the photographs); {TIMEOUTS['confirmation sweep']} s"),
]
_deadline: float | None = None  # perf_counter() past which no step runs (main() sets it; None: no budget)


def _say(msg: str) -> None:
    print(f"[gpu-check] {msg}", flush=True)


def missing(modules: dict[str, str]) -> list[str]:
    """The pip names of the modules in ``modules`` (import name → pip name) that cannot be imported here."""
    return [pip for name, pip in modules.items() if importlib.util.find_spec(name) is None]


def install_line(pips: list[str], kit: Path | None = None, python: str | None = None) -> str:
    """The command that installs ``pips`` into this Python (or ``python``) without touching its torch."""
    where = f"--no-index --find-links {kit} " if kit is not None else ""
    return f"{python or sys.executable} -m pip install {where}{' '.join(pips)}"


# A system Python marked externally managed (PEP 668: Debian's, Ubuntu's) refuses any pip install. The kit's
# install may go ahead there: it is offline (--no-index) and the kit holds only projects the image lacks, so it
# adds packages and can replace none of the system's (a conflict fails the resolution instead).
KIT_INSTALL_ENV = {"PIP_BREAK_SYSTEM_PACKAGES": "1"}


def find_kit() -> Path | None:
    """The GPU kit's folder (``$GPU_KIT``, else ``gpu-kit/`` in the checkout) when it holds wheels, else None."""
    folder = Path(os.environ.get("GPU_KIT") or ROOT / "gpu-kit").resolve()
    return folder if folder.is_dir() and any(folder.glob("*.whl")) else None


def step_timeout(step: str) -> int:
    """``step``'s timeout (s): its own, cut to what is left of the budget (0: none left)."""
    timeout = TIMEOUTS[step]
    if _deadline is not None:
        timeout = min(timeout, max(0, int(_deadline - time.perf_counter())))
    return timeout


def dependencies() -> tuple[str, str]:
    """(status, why): ok when the check can run. What the GPU image lacks (the sweep stack and pydantic) is first
    installed offline from the GPU kit when the kit is there (``make gpu-kit``), within its timeout."""
    kit = find_kit()
    from_kit = missing(KIT)
    kit_why = None
    if from_kit and kit is not None:
        _say(f"installing {', '.join(from_kit)} from the GPU kit {kit}")
        kit_why = _run(install_line(from_kit, kit).split(), step_timeout("kit install"), KIT_INSTALL_ENV)
        importlib.invalidate_caches()  # see what was just installed
    lacking = missing(NEEDED)
    if lacking:
        return "FAILED", (f"missing {', '.join(lacking)}: {install_line([p for p in lacking if p != 'torch'])}"
                          + (f" (the GPU kit's install: {kit_why})" if kit_why else ""))
    stack = missing(SWEEP_STACK)
    if stack:
        return "ok", (f"the sweep stack is missing ({', '.join(stack)}): the sweep steps will be NOT RUN; "
                      f"`make gpu-kit` here, carry gpu-kit/, or {install_line(stack)}")
    return "ok", "all there"


def photographs() -> str:
    """Where the natural-image steps read the CIFAR-10 photographs: where the benchmarks find them
    (``$PURSUHINT_CIFAR10_SUBSET``, or the shared data folder beside the checkout), else the GPU kit's packed
    sample (``make gpu-kit``), unpacked into a temporary folder that the variable then names for the steps."""
    from bench.common import CIFAR10_SUBSET_ENV, cifar10_subset, holds_photographs  # deferred: imports torch
    from bench.gpu_kit import PHOTOS

    named = os.environ.get(CIFAR10_SUBSET_ENV)
    if named and not holds_photographs(Path(named)):  # a wrong path is said, not replaced by the sample
        return f"${CIFAR10_SUBSET_ENV} names {named}, which has no train/ folder: random images or NOT RUN"
    found = cifar10_subset()
    if found is not None:
        return f"the photographs in {found}"
    kit = find_kit()
    if kit is None or not (kit / PHOTOS).is_file():
        return f"no photographs (${CIFAR10_SUBSET_ENV}, or {PHOTOS} in the GPU kit): random images or NOT RUN"
    folder = Path(tempfile.mkdtemp(prefix="pursuhint-photos-"))
    with tarfile.open(kit / PHOTOS) as tar:
        n = sum(member.isfile() for member in tar.getmembers())
        tar.extractall(folder, filter="data")
    os.environ[CIFAR10_SUBSET_ENV] = str(folder)
    return f"the GPU kit's sample of the photographs: {n:,} unpacked into {folder}"


def _cuda_or_exit() -> str:
    import torch  # torch: deferred, cheap --dry-run and dependency check

    if not torch.cuda.is_available():
        _say(f"no CUDA device: torch {torch.__version__} (CUDA build {torch.version.cuda or 'none'}) sees none; "
             "run this on a machine with an NVIDIA GPU")
        sys.exit(2)
    name = torch.cuda.get_device_name(0)
    cap = ".".join(map(str, torch.cuda.get_device_capability(0)))
    _say(f"device: {name} (compute capability {cap}), torch {torch.__version__}, CUDA {torch.version.cuda}")
    return name


def _run(cmd: list[str], timeout: int, env: dict[str, str] | None = None) -> str | None:
    """Run ``cmd`` from the checkout within ``timeout`` s; None when it passed, else why not."""
    if timeout <= 0:
        return f"not started: the {BUDGET_S} s budget is spent"
    _say("$ " + " ".join(cmd[1:]))
    try:
        code = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                              timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        _say(f"ran past {timeout} s")
        return f"ran past its {timeout} s"
    return None if code == 0 else f"exit status {code}: see the output above"


def tests() -> tuple[str, str]:
    whys = []
    for step, args in (("CUDA tests", ["-m", "cuda", *CUDA_TESTS]), ("device tests", DEVICE_TESTS)):
        cmd = [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", *args]
        why = _run(cmd, step_timeout(step), {"PURSUHINT_REQUIRE_CUDA": "1"})
        if why is not None:
            whys.append(f"{step}: {why}")
    return ("FAILED", "; ".join(whys)) if whys else ("ok", "")


def _bench(name: str, out: Path, flags: list[str], timeout: int) -> tuple[str, str]:
    """Run one benchmark into ``out`` and print its tables; NOT RUN when its entry says it was skipped."""
    from bench.run import read_results, render_entry  # deferred: needs pydantic, dependencies() may install it

    if timeout <= 0:
        return "NOT RUN", f"the {BUDGET_S} s budget is spent"
    results, docs = out / "results.json", out / "benchmarks.md"
    why = _run([sys.executable, "bench/run.py", "--only", name, *flags, "--output", str(results),
                "--docs", str(docs)], timeout)
    entry = read_results(results).get(name)
    if entry is not None:
        print(render_entry(name, entry), flush=True)
    if why is not None:
        return "FAILED", why
    if entry is None or entry.get("skipped"):
        return "NOT RUN", ((entry or {}).get("notes") or ["no entry written"])[0]
    return "ok", f"tables above; {results}"


def benchmark(out: Path, full: bool) -> tuple[str, str]:
    if full:
        return _bench("gpu", out, [], FULL_GPU_TIMEOUT)
    return _bench("gpu", out, ["--tiny"], step_timeout("gpu benchmark"))


def cohort_benchmark(out: Path) -> tuple[str, str]:
    return _bench("cohorts", out, ["--tiny"], step_timeout("cohort benchmark"))


def confirmation_sweep(out: Path) -> tuple[str, str]:
    stack = missing(SWEEP_STACK)
    if stack:
        return "NOT RUN", f"{', '.join(stack)} not installed here: {install_line(stack)} (or the GPU kit)"
    return _bench("selection_quality_natural", out, ["--tiny"], step_timeout("confirmation sweep"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true",
                        help="the gpu benchmark's full settings (no 8-minute budget then)")
    parser.add_argument("--skip-tests", action="store_true", help="only the benchmark and the sweep")
    parser.add_argument("--dry-run", action="store_true", help="list the steps and where they write; run nothing")
    args = parser.parse_args(argv)
    out = Path(os.environ.get("GPU_CHECK_OUT") or ROOT / "runs" / "gpu-check")
    if args.dry_run:
        for i, (step, what) in enumerate(STEPS, 1):
            print(f"{i}. {step}: {what}")
        print(f"at most {BUDGET_S} s in all: {sum(TIMEOUTS.values())} s of step timeouts, {RESERVE_S} s for the rest")
        print(f"writes under {out} (GPU_CHECK_OUT); never bench/results.json or docs/benchmarks.md")
        return 0
    global _deadline
    t0 = time.perf_counter()
    _deadline = None if args.full else t0 + BUDGET_S - END_S
    results = {"dependencies": dependencies()}
    _say(f"dependencies: {results['dependencies'][1]}")
    if results["dependencies"][0] != "ok":
        _say(f"dependencies: FAILED ({results['dependencies'][1]})")
        return 1
    _cuda_or_exit()
    _say(f"photographs: {photographs()}")
    out.mkdir(parents=True, exist_ok=True)
    results["CUDA tests"] = ("NOT RUN", "--skip-tests") if args.skip_tests else tests()
    results["gpu benchmark"] = benchmark(out, args.full)
    results["cohort benchmark"] = cohort_benchmark(out)
    results["confirmation sweep"] = confirmation_sweep(out)
    for what, (status, why) in results.items():
        _say(f"{what}: {status}" + (f" ({why})" if why else ""))
    _say(f"done in {time.perf_counter() - t0:.0f} s; written under {out}")
    (out / "summary.json").write_text(json.dumps({k: {"status": s, "why": w} for k, (s, w) in results.items()},
                                                 indent=2))
    statuses = {s for s, _ in results.values()}
    return 1 if "FAILED" in statuses else 3 if "NOT RUN" in statuses else 0


if __name__ == "__main__":
    sys.exit(main())
