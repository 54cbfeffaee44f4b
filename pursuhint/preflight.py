"""Checks that need more than the config file, done before any work starts: do the architectures'
candidate layers admit every number of hints the config (or its search space) can ask for?"""

from __future__ import annotations

from typing import Optional

from .config import Config, check_names
from .errors import ConfigError


def candidate_count(arch: str, granularity: str = "block", in_channels: int = 3) -> Optional[int]:
    """How many candidate hint points ``arch`` has (None when only a forward pass can tell)."""
    from .models import create_model, model_block_stages

    if granularity != "block":
        return None
    stages = model_block_stages(create_model(arch, 10, in_channels=in_channels))
    return sum(len(s) for s in stages) or None


def preflight(cfg: Config, student: bool = True) -> None:
    """Refuse, with one sentence, anything that would only fail once training has started.

    ``student=False`` (for ``select``) checks the teacher side only: a hint set may be made for
    another student later.
    """
    check_names(cfg)
    check_splits(cfg)
    spec = cfg.space.get("selection.n_hints")
    if spec is None:
        wanted = [cfg.selection.n_hints] if cfg.selection.n_hints is not None else []
    elif "choice" in spec:
        wanted = [int(v) for v in spec["choice"]]
    else:
        wanted = [int(spec[next(iter(spec))][1])]  # the largest a range can give
    if not wanted:
        return
    k = max(wanted)
    where = "the search space of selection.n_hints allows" if spec else "selection.n_hints is"
    archs = [("teacher", cfg.teacher.arch, cfg.selection.granularity)]
    if student:
        archs.append(("student", cfg.student.arch, "block"))
    for role, arch_key, gran in archs:
        for arch in _values(cfg, f"{role}.arch", arch_key):
            n = candidate_count(arch, gran)
            if n is not None and k > n:
                raise ConfigError(f"{where} {k} hints, but the {role} {arch} has only {n} candidate layers; "
                                  f"use at most {n}")


def check_splits(cfg: Config) -> None:
    """Each of the three splits (training, selection, test) must hold every class: loading the data set
    with the config's sizes says so, before a teacher, Ray or MLflow is touched."""
    from .teacher import dataset_for

    dataset_for(cfg)


def _values(cfg: Config, key: str, current: str) -> list[str]:
    spec = cfg.space.get(key)
    return list(spec["choice"]) if spec and "choice" in spec else [current]
