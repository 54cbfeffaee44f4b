"""`make gpu-check`: exercise every CUDA path on a GPU machine and record its figures, in about 8 minutes.

    python bench/gpu_check.py [--quick] [--skip-tests]

1. The CUDA tests (``-m cuda``, with ``PURSUHINT_REQUIRE_CUDA=1`` so none can pass by skipping) and the
   device-decision tests.
2. The ``gpu`` benchmark (epoch time of resnet56 → resnet20 at 32 px on the CIFAR-10 subset with the images
   on the device and on the host, the step-sync saving, ResNet-110 selection with 10 000 probe images, and
   trials per second at 1, 2, 4 and 8 concurrent fractional-GPU trials), written into bench/results.json
   under ``gpu`` with the device named, and into docs/benchmarks.md.
3. A short confirmation sweep on the subset, when Ray, MLflow and Optuna are installed and the sweep has a
   confirmation stage.

Exits 2 when there is no CUDA device, and 1 when any CUDA path broke (a failed test or a benchmark that
raised): it never reports success by skipping.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CUDA_TESTS = ["tests/test_cuda.py", "tests/test_data.py", "tests/test_checkpoint.py", "tests/test_similarity.py"]
DEVICE_TESTS = ["tests/test_devices.py"]


def _say(msg: str) -> None:
    print(f"[gpu-check] {msg}", flush=True)


def _cuda_or_exit() -> str:
    import torch

    if not torch.cuda.is_available():
        _say(f"no CUDA device: torch {torch.__version__} (CUDA build {torch.version.cuda or 'none'}) sees none; "
             "run this on a machine with an NVIDIA GPU")
        sys.exit(2)
    name = torch.cuda.get_device_name(0)
    cap = ".".join(map(str, torch.cuda.get_device_capability(0)))
    _say(f"device: {name} (compute capability {cap}), torch {torch.__version__}, CUDA {torch.version.cuda}")
    return name


def _tests(timeout: int) -> bool:
    env = dict(os.environ, PURSUHINT_REQUIRE_CUDA="1", PYTHONUNBUFFERED="1")
    ok = True
    for args in (["-m", "cuda", *CUDA_TESTS], DEVICE_TESTS):
        cmd = [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", *args]
        _say("$ " + " ".join(cmd[1:]))
        try:
            rc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            _say(f"tests ran past {timeout} s")
            rc = 1
        ok &= rc == 0
    return ok


def _benchmark(quick: bool, timeout: int) -> bool:
    cmd = [sys.executable, "bench/run.py", "--only", "gpu"] + (["--quick"] if quick else [])
    _say("$ " + " ".join(cmd[1:]))
    try:
        return subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"), timeout=timeout).returncode == 0
    except subprocess.TimeoutExpired:
        _say(f"the gpu benchmark ran past {timeout} s")
        return False


def _confirmation_sweep() -> bool:
    missing = [m for m in ("ray", "mlflow", "optuna") if importlib.util.find_spec(m) is None]
    if missing:
        _say(f"confirmation sweep NOT RUN: {', '.join(missing)} not installed here (the device tests and the "
             "benchmark above do not need them)")
        return True
    from pursuhint.config import SearchConfig

    if "confirm" not in SearchConfig.model_fields:
        _say("confirmation sweep NOT RUN: this version of pursuhint has no confirmation stage yet")
        return True
    if not (ROOT / "bench" / "selection_quality_natural.py").exists():
        _say("confirmation sweep NOT RUN: bench/selection_quality_natural.py (the natural-image sweep it runs) "
             "is not written yet")
        return True
    cmd = [sys.executable, "bench/run.py", "--only", "selection_quality_natural", "--quick"]
    _say("$ " + " ".join(cmd[1:]))
    return subprocess.run(cmd, cwd=ROOT).returncode == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller benchmark settings")
    parser.add_argument("--skip-tests", action="store_true", help="only the benchmark and the sweep")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    _cuda_or_exit()
    results = {}
    if not args.skip_tests:
        results["CUDA tests"] = _tests(timeout=240)
    results["gpu benchmark"] = _benchmark(args.quick, timeout=420)
    results["confirmation sweep"] = _confirmation_sweep()
    for what, ok in results.items():
        _say(f"{what}: {'ok' if ok else 'FAILED'}")
    _say(f"done in {time.perf_counter() - t0:.0f} s")
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
