"""The search space of a sweep: the config's spec leaves as an Optuna define-by-run function, and
the baseline trials every sweep includes."""

from __future__ import annotations

from typing import Any, Callable

from ..config import Config
from ..distill.methods import adds_crd, method_class

# Short names for the searched keys: Tune's table columns and MLflow params use them.
SHORT_NAMES: dict[str, str] = {
    "selection.similarity": "similarity",
    "selection.n_hints": "n_hints",
    "selection.algorithm": "algorithm",
    "selection.center": "center",
    "distill.method": "method",
    "distill.hint_weight": "hint_weight",
    "distill.kd_weight": "kd_weight",
    "distill.ce_weight": "ce_weight",
    "train.lr": "lr",
}

BASELINE_KEY = "pursuhint.baseline"


def short_name(key: str) -> str:
    """``selection.similarity`` → ``similarity``; other keys keep their dotted path."""
    return SHORT_NAMES.get(key, key)


class DefineByRun:
    """An Optuna define-by-run function sampling every spec leaf under its dotted key (picklable, so
    the searcher's state can be saved with the sweep and restored on ``--resume``)."""

    def __init__(self, space: dict[str, dict[str, Any]]) -> None:
        self.space = dict(space)

    def __call__(self, trial: Any) -> None:
        for key, spec in self.space.items():
            kind, args = next(iter(spec.items()))
            if kind == "choice":
                trial.suggest_categorical(key, list(args))
            elif kind == "randint":
                trial.suggest_int(key, int(args[0]), int(args[1]))
            elif kind == "uniform":
                trial.suggest_float(key, float(args[0]), float(args[1]))
            elif kind == "loguniform":
                trial.suggest_float(key, float(args[0]), float(args[1]), log=True)
            elif kind == "quniform":
                low, high, q = (float(a) for a in args)
                # Optuna needs (high - low) to be a multiple of the step; shrink high to the grid.
                steps = int((high - low) // q)
                trial.suggest_float(key, low, low + steps * q, step=q)
            else:  # pragma: no cover - config validation forbids other kinds
                raise ValueError(f"unknown search-space kind {kind!r}")


def define_by_run(space: dict[str, dict[str, Any]]) -> Callable[[Any], None]:
    return DefineByRun(space)


def methods_in_space(cfg: Config) -> list[str]:
    """The distillation methods a sweep may try: the choice list, or the one configured. From a choice
    list, methods with neither hints nor CRD are left out: the KD-only baseline already trains them."""
    spec = cfg.space.get("distill.method")
    if spec and "choice" in spec:
        return [m for m in spec["choice"] if method_class(m).uses_hints or adds_crd(m)]
    return [cfg.distill.method]


def baseline_configs(cfg: Config) -> list[dict[str, Any]]:
    """One trial per method with the default hints (and with uniform or random hints when asked), and one
    KD-only trial (``search.baselines``).

    Searched keys other than the method take the defaults non-sweep commands use (selection keys are
    carried along for Tune's table only: a baseline's hints do not come from clustering).
    """
    common = {k: v for k, v in cfg.searched_defaults.items() if k != "distill.method"}
    out: list[dict[str, Any]] = []
    for kind in ("default", "uniform", "random"):  # uniform/random: K of the searched defaults
        if kind in cfg.search.baselines:
            for method in methods_in_space(cfg):
                out.append({BASELINE_KEY: kind, **common, "distill.method": method})
    if "kd_only" in cfg.search.baselines:
        out.append({BASELINE_KEY: "kd_only", **common, "distill.method": "kd_only"})
    return out
