"""`make gpu-kit`: the wheels a lent GPU machine lacks, built here for it, small enough to travel with the tree.

    python bench/gpu_kit.py [--out gpu-kit] [--python-version 3.12]

The lent machine reaches no package registry and its image has torch, torchvision, scikit-learn, scipy, pandas,
pyarrow, pytest and more, but not Ray, Optuna, MLflow or pydantic. This downloads, for CPython 3.12 on
manylinux x86-64, the versions this virtual environment runs (``pip download --only-binary=:all:``) with their
dependencies; leaves out the compiled wheels of projects the image has (:data:`ON_THE_IMAGE`: their pure-Python
wheels stay, for an image whose version is too old); and re-zips Ray without
what a sweep never imports (its Java jar, RLlib, Serve, LLM, the dashboard's web client) and with its binaries'
symbol tables stripped, its RECORD rewritten to match. MLflow comes as ``mlflow-skinny`` (the tracking client
and the SQL store, without the UI) beside SQLAlchemy and Alembic. It prints the kit's size: the working tree that
travels is capped at 64 MiB.

Where the CIFAR-10 photographs are (``$PURSUHINT_CIFAR10_SUBSET``), it also packs a stratified sample of them
(:data:`PHOTOS`, ~1.9 MiB), which the check unpacks there for its natural-image steps.

On the GPU machine, ``make gpu-check`` installs it offline (``pip install --no-index --find-links gpu-kit``) when
Ray is missing; carry ``gpu-kit`` with the command (see the README's GPU section).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/gpu_kit.py` from a checkout: make `bench` importable
    sys.path.insert(0, str(ROOT))
DEFAULT_OUT = ROOT / "gpu-kit"
CAP_MIB = 64  # what travels to the lent machine, the project included
ROOM_MIB = 4  # left under the cap for the project's own files (~2 MiB in git), with a margin
# What the kit installs there: the sweep's stack, at the versions this environment runs.
WANTED = {"ray[tune]": "ray", "optuna": "optuna", "mlflow-skinny": "mlflow", "pydantic": "pydantic",
          "sqlalchemy": "sqlalchemy", "alembic": "alembic"}
# Projects the lent GPU image already holds (its package list as read on 2026-11-17): their wheels stay out.
ON_THE_IMAGE = {
    "absl-py", "aiohappyeyeballs", "aiohttp", "aiosignal", "annotated-doc", "anyio", "attrs", "certifi",
    "charset-normalizer", "click", "cloudpickle", "colorama", "contourpy", "cycler", "filelock", "fonttools",
    "frozenlist", "fsspec", "grpcio", "h11", "httpcore", "httpx", "idna", "jinja2", "joblib", "kiwisolver",
    "markupsafe", "matplotlib", "msgpack", "multidict", "networkx", "numpy", "packaging", "pandas", "pillow",
    "prometheus-client", "propcache", "protobuf", "psutil", "pyarrow", "pygments", "pyparsing", "pytest",
    "python-dateutil", "pyyaml", "requests", "rich", "scikit-learn", "scipy", "setuptools", "six", "sympy",
    "threadpoolctl", "torch", "torchvision", "tqdm", "typing-extensions", "urllib3", "werkzeug", "wheel", "wrapt",
    "yarl", "zipp",
}
# A stratified sample of the CIFAR-10 photographs, for the check's natural-image steps (the lent machine sees no
# shared data folder): 500 training photographs a class, the gpu benchmark's 5 000, and 100 a class to test on.
PHOTOS = "cifar10-sample.tgz"
PHOTOS_PER_CLASS = {"train": 500, "test": 100}
# Parts of Ray's wheel a sweep never imports (paths inside the wheel).
RAY_DROPPED = ("ray/jars/", "ray/rllib/", "ray/serve/", "ray/llm/", "ray/dashboard/client/build/")


def project(wheel: str) -> str:
    """A wheel file's project name, normalised (``PyYAML-6.0-…`` → ``pyyaml``)."""
    return re.sub(r"[-_.]+", "-", Path(wheel).name.split("-")[0]).lower()


def requirements() -> list[str]:
    """``name==version`` of what the kit installs, at the versions this environment runs."""
    out = []
    for spec, dist in WANTED.items():
        installed = "mlflow" if dist == "mlflow" else dist
        out.append(f"{spec}=={metadata.version(installed)}")
    return out


def strip_symbols(data: bytes) -> bytes:
    """An ELF binary or library without its symbol table (``strip --strip-unneeded``: what dynamic linking needs
    stays); other files, or without ``strip``, unchanged."""
    if not data.startswith(b"\x7fELF") or len(data) < 2**20 or shutil.which("strip") is None:
        return data
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "elf"
        f.write_bytes(data)
        done = subprocess.run(["strip", "--strip-unneeded", str(f)], capture_output=True)
        return f.read_bytes() if done.returncode == 0 else data


def strip_wheel(path: Path, dropped: tuple[str, ...] = RAY_DROPPED) -> tuple[int, int]:
    """Re-zip wheel ``path`` without the files under ``dropped`` and with its large binaries' symbol tables
    stripped, its RECORD rewritten for what stays (pip checks RECORD against the archive); (bytes before, after)."""
    before = path.stat().st_size
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
        kept = [i for i in src.infolist() if not i.filename.startswith(dropped)]
        record = next(i for i in kept if i.filename.endswith(".dist-info/RECORD"))
        lines = []
        for info in kept:
            if info is record:
                continue
            data = strip_symbols(src.read(info))
            info.file_size = len(data)
            dst.writestr(info, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            lines.append(f"{info.filename},sha256={digest},{len(data)}")
        lines.append(f"{record.filename},,")
        dst.writestr(record, "\n".join(lines) + "\n")
    tmp.replace(path)
    return before, path.stat().st_size


def is_pure(wheel: str) -> bool:
    """Whether ``wheel`` is pure Python (tagged ``…-none-any.whl``): small, and installable on any image."""
    return Path(wheel).name.endswith("-none-any.whl")


def keep_only_missing(folder: Path) -> list[str]:
    """Delete the compiled wheels of projects the image has; the names deleted. Their pure-Python wheels stay:
    pip installs one only where the image's version is too old for a kit project (the lent image's certifi
    2026.7.22 was, for databricks-sdk's ``certifi>=2026.10.19``, on 2026-12-04), and keeps the image's otherwise."""
    gone = []
    for wheel in sorted(folder.glob("*.whl")):
        if project(wheel.name) in ON_THE_IMAGE and not is_pure(wheel.name):
            wheel.unlink()
            gone.append(project(wheel.name))
    return gone


def build(out: Path, python_version: str = "3.12") -> int:
    """Download, filter and strip the kit into ``out``; its size in bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
               "--python-version", python_version, "--implementation", "cp",
               "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
               "--platform", "manylinux_2_28_x86_64", "--dest", tmp, *requirements()]
        print("gpu-kit: " + " ".join(cmd[3:]), flush=True)
        subprocess.run(cmd, check=True)
        dropped = keep_only_missing(Path(tmp))
        print(f"gpu-kit: left out the compiled wheels the GPU image has: {', '.join(sorted(set(dropped)))}")
        for wheel in Path(tmp).glob("ray-*.whl"):
            before, after = strip_wheel(wheel)
            print(f"gpu-kit: {wheel.name}: {before / 2**20:.1f} MiB → {after / 2**20:.1f} MiB without "
                  f"{', '.join(RAY_DROPPED)}")
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(tmp, out)
    wheels = sum(p.stat().st_size for p in out.glob("*.whl"))
    print(f"gpu-kit: {len(list(out.glob('*.whl')))} wheels, {wheels / 2**20:.1f} MiB in {out}")
    root = photographs_here()
    if root is None:
        print("gpu-kit: no CIFAR-10 photographs here ($PURSUHINT_CIFAR10_SUBSET): the check's natural-image steps "
              "will use random images or be NOT RUN")
    else:
        n = pack_photos(root, out / PHOTOS)
        print(f"gpu-kit: {n:,} photographs from {root} packed into {out / PHOTOS} "
              f"({(out / PHOTOS).stat().st_size / 2**20:.1f} MiB)")
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"gpu-kit: {size / 2**20:.1f} MiB in all (what travels is capped at {CAP_MIB} MiB with the project)")
    return size


def photographs_here() -> Path | None:
    """The CIFAR-10 photographs the benchmarks read here, if any (``bench.common.cifar10_subset``)."""
    from bench.common import cifar10_subset  # deferred: bench.common imports torch, the kit's build needs none

    return cifar10_subset()


def pack_photos(root: Path, dest: Path, per_class: dict[str, int] = PHOTOS_PER_CLASS) -> int:
    """Write ``dest``: the first ``per_class[split]`` files (by name) of each class folder of ``root``'s ImageFolder
    splits, as a gzipped tar (their JPEG headers repeat, so 6 000 photographs take ~1.9 MiB); how many it holds."""
    n = 0
    with tarfile.open(dest, "w:gz") as tar:
        for split, count in per_class.items():
            for cls in sorted(p for p in (root / split).iterdir() if p.is_dir()):
                for photo in sorted(cls.iterdir())[:count]:
                    tar.add(photo, arcname=f"{split}/{cls.name}/{photo.name}")
                    n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--python-version", default="3.12", help="the GPU image's Python (default 3.12)")
    args = parser.parse_args(argv)
    size = build(args.out, args.python_version)
    if size > (CAP_MIB - ROOM_MIB) * 2**20:
        print(f"gpu-kit: too large to travel with the project ({size / 2**20:.1f} MiB)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
