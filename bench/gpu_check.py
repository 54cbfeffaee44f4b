"""`make gpu-check`: exercise every CUDA path on a GPU machine and print what it measured (each step has its own timeout).

    python bench/gpu_check.py [--full] [--skip-tests] [--dry-run]

Steps (``--dry-run`` lists them without a GPU):

1. Dependencies: what the check imports; a missing one is named with the exact install line (a system torch
   is never replaced). Ray, Optuna, MLflow and pydantic are installed offline from the GPU kit
   (``make gpu-kit``; ``$GPU_KIT`` or ``gpu-kit/``) when they are missing and the kit is there.
2. The CUDA tests (``-m cuda``, with ``PURSUHINT_REQUIRE_CUDA=1`` so none can pass by skipping), the
   memory-mapped placements' CUDA test, and the device-decision tests.
3. The ``gpu`` benchmark, quick settings unless ``--full`` (epoch time with the images on the device and on the
   host, the step-sync saving, ResNet-110 selection time, 1/2/4 concurrent fractional-GPU trials).
4. The ``cohorts`` benchmark, quick settings: the arms of one seed one after another vs one cohort, on the GPU
   with ResNet-110 → ResNet-20 too (the CUDA tests include a cohort's equality with separate training).
5. A short confirmation sweep on the CIFAR-10 photographs (``selection_quality_natural --tiny``), when Ray,
   MLflow and Optuna are importable and the photographs are there.

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
TIMEOUTS = {"tests": 180, "gpu benchmark": 210, "cohort benchmark": 120, "confirmation sweep": 150}  # s
STEPS = [
    ("dependencies", "import what the check needs; name the install line of anything missing"),
    ("CUDA tests", f"pytest -m cuda {' '.join(CUDA_TESTS)} (PURSUHINT_REQUIRE_CUDA=1), then {DEVICE_TESTS[0]}; "
                   f"{TIMEOUTS['tests']} s each"),
    ("gpu benchmark", f"bench/run.py --only gpu --quick into $GPU_CHECK_OUT; {TIMEOUTS['gpu benchmark']} s"),
    ("cohort benchmark", f"bench/run.py --only cohorts --quick into $GPU_CHECK_OUT (ResNet-110 → ResNet-20 too); "
                         f"{TIMEOUTS['cohort benchmark']} s"),
    ("confirmation sweep", f"bench/run.py --only selection_quality_natural --tiny into $GPU_CHECK_OUT (Ray, "
                           f"Optuna, MLflow and the photographs); {TIMEOUTS['confirmation sweep']} s"),
]


def _say(msg: str) -> None:
    print(f"[gpu-check] {msg}", flush=True)


def missing(modules: dict[str, str]) -> list[str]:
    """The pip names of the modules in ``modules`` (import name → pip name) that cannot be imported here."""
    return [pip for name, pip in modules.items() if importlib.util.find_spec(name) is None]


def install_line(pips: list[str], kit: Path | None = None) -> str:
    """The command that installs ``pips`` into this Python without touching its torch."""
    where = f"--no-index --find-links {kit} " if kit is not None else ""
    return f"{sys.executable} -m pip install {where}{' '.join(pips)}"


def _kit() -> Path | None:
    folder = Path(os.environ.get("GPU_KIT") or ROOT / "gpu-kit")
    return folder if folder.is_dir() and any(folder.glob("*.whl")) else None


def dependencies() -> tuple[str, str]:
    """(status, why): ok when the check can run. What the GPU image lacks (the sweep stack and pydantic) is first
    installed offline from the GPU kit when the kit is there (``make gpu-kit``)."""
    kit = _kit()
    from_kit = missing(KIT)
    if from_kit and kit is not None:
        _say(f"installing {', '.join(from_kit)} from the GPU kit {kit}")
        subprocess.run(install_line(from_kit, kit).split(), check=False)
    lacking = missing(NEEDED)
    if lacking:
        return "FAILED", f"missing {', '.join(lacking)}: {install_line([p for p in lacking if p != 'torch'])}"
    stack = missing(SWEEP_STACK)
    if stack:
        return "ok", (f"the sweep stack is missing ({', '.join(stack)}): the sweep steps will be NOT RUN; "
                      f"`make gpu-kit` here, carry gpu-kit/, or {install_line(stack)}")
    return "ok", "all there"


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


def _run(cmd: list[str], timeout: int, env: dict[str, str] | None = None) -> bool:
    _say("$ " + " ".join(cmd[1:]))
    try:
        return subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                              timeout=timeout).returncode == 0
    except subprocess.TimeoutExpired:
        _say(f"ran past {timeout} s")
        return False


def tests() -> tuple[str, str]:
    ok = True
    for args in (["-m", "cuda", *CUDA_TESTS], DEVICE_TESTS):
        cmd = [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", *args]
        ok &= _run(cmd, TIMEOUTS["tests"], {"PURSUHINT_REQUIRE_CUDA": "1"})
    return ("ok", "") if ok else ("FAILED", "see the pytest output above")


def _bench(name: str, out: Path, flags: list[str], timeout: int) -> tuple[str, str]:
    """Run one benchmark into ``out`` and print its tables; NOT RUN when its entry says it was skipped."""
    from bench.run import read_results, render_entry  # deferred: needs pydantic, dependencies() may install it

    results, docs = out / "results.json", out / "benchmarks.md"
    ok = _run([sys.executable, "bench/run.py", "--only", name, *flags, "--output", str(results),
               "--docs", str(docs)], timeout)
    entry = read_results(results).get(name)
    if entry is not None:
        print(render_entry(name, entry), flush=True)
    if not ok:
        return "FAILED", "see the output above"
    if entry is None or entry.get("skipped"):
        return "NOT RUN", ((entry or {}).get("notes") or ["no entry written"])[0]
    return "ok", f"tables above; {results}"


def benchmark(out: Path, full: bool) -> tuple[str, str]:
    return _bench("gpu", out, [] if full else ["--quick"], TIMEOUTS["gpu benchmark"])


def cohort_benchmark(out: Path) -> tuple[str, str]:
    return _bench("cohorts", out, ["--quick"], TIMEOUTS["cohort benchmark"])


def confirmation_sweep(out: Path) -> tuple[str, str]:
    stack = missing(SWEEP_STACK)
    if stack:
        return "NOT RUN", f"{', '.join(stack)} not installed here: {install_line(stack)} (or the GPU kit)"
    return _bench("selection_quality_natural", out, ["--tiny"], TIMEOUTS["confirmation sweep"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the gpu benchmark's full settings (longer than 8 min)")
    parser.add_argument("--skip-tests", action="store_true", help="only the benchmark and the sweep")
    parser.add_argument("--dry-run", action="store_true", help="list the steps and where they write; run nothing")
    args = parser.parse_args(argv)
    out = Path(os.environ.get("GPU_CHECK_OUT") or ROOT / "runs" / "gpu-check")
    if args.dry_run:
        for i, (step, what) in enumerate(STEPS, 1):
            print(f"{i}. {step}: {what}")
        print(f"writes under {out} (GPU_CHECK_OUT); never bench/results.json or docs/benchmarks.md")
        return 0
    t0 = time.perf_counter()
    results = {"dependencies": dependencies()}
    _say(f"dependencies: {results['dependencies'][1]}")
    if results["dependencies"][0] != "ok":
        _say(f"dependencies: FAILED ({results['dependencies'][1]})")
        return 1
    _cuda_or_exit()
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
