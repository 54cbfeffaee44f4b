"""The search space of a sweep: the config's spec leaves as an Optuna define-by-run function, and
the baseline trials every sweep includes."""

from __future__ import annotations

from typing import Any, Callable

from ..config import Config
from ..config.grammar import BY_METHOD, branch_for, leaf_values, method_defaults
from ..distill.methods import adds_crd, method_class
from .columns import SHORT_NAMES
from .trial_keys import BASELINE_KEY

BRANCH_SEP = "@"  # Optuna's name for a by_method leaf's branch: ``distill.hint_ratio@fitnet``


def plain_values(sampled: dict[str, Any]) -> dict[str, Any]:
    """A trial's sampled values as config keys: without Optuna's per-branch names (``key@method``), whose
    value the plain key carries too."""
    return {k: v for k, v in sampled.items() if BRANCH_SEP not in k}


def short_name(key: str) -> str:
    """``selection.similarity`` → ``similarity``; other keys keep their dotted path."""
    return SHORT_NAMES.get(key, key)


class DefineByRun:
    """An Optuna define-by-run function sampling every spec leaf under its dotted key (picklable, so
    the searcher's state can be saved with the sweep and restored on ``--resume``).

    A by_method leaf is sampled after the method, only in the chosen method's branch, under the name
    ``key@method`` (each branch is its own Optuna parameter, so TPE learns each separately); the plain key
    is returned with the same value for the trial's config.
    """

    def __init__(self, space: dict[str, dict[str, Any]], method: str = "") -> None:
        self.space = dict(space)
        self.method = method  # distill.method when it is not searched

    def __call__(self, trial: Any) -> dict[str, Any]:
        values = {}
        for key, spec in self.space.items():
            if BY_METHOD not in spec:
                values[key] = _suggest(trial, key, spec)
        method = values.get("distill.method", self.method)
        plain = {}
        for key, spec in self.space.items():
            if BY_METHOD in spec:
                plain[key] = _suggest(trial, f"{key}{BRANCH_SEP}{method}", branch_for(spec, method))
        return plain


def _suggest(trial: Any, name: str, spec: dict[str, Any]) -> Any:
    kind, args = next(iter(spec.items()))
    if kind == "choice":
        return trial.suggest_categorical(name, list(args))
    if kind == "randint":
        return trial.suggest_int(name, int(args[0]), int(args[1]))
    if kind == "uniform":
        return trial.suggest_float(name, float(args[0]), float(args[1]))
    if kind == "loguniform":
        return trial.suggest_float(name, float(args[0]), float(args[1]), log=True)
    if kind == "quniform":
        low, high, q = (float(a) for a in args)
        # Optuna needs (high - low) to be a multiple of the step; shrink high to the grid.
        steps = int((high - low) // q)
        return trial.suggest_float(name, low, low + steps * q, step=q)
    raise ValueError(f"unknown search-space kind {kind!r}")  # pragma: no cover - config validation forbids it


def define_by_run(space: dict[str, dict[str, Any]], method: str = "") -> Callable[[Any], dict[str, Any]]:
    return DefineByRun(space, method)


def methods_in_space(cfg: Config) -> list[str]:
    """The distillation methods a sweep may try: the choice list, or the one configured. From a choice
    list, methods with neither hints nor CRD are left out: the KD-only baseline already trains them."""
    if "distill.method" not in cfg.space:
        return [cfg.distill.method]
    return [m for m in leaf_values(cfg, "distill.method") if method_class(m).uses_hints or adds_crd(m)]


def baseline_configs(cfg: Config) -> list[dict[str, Any]]:
    """One trial per method with the default hints (and with uniform or random hints when asked), and one
    KD-only trial (``search.baselines``).

    Searched keys other than the method take the defaults non-sweep commands use (selection keys are
    carried along for Tune's table only: a baseline's hints do not come from clustering), then
    ``search.baseline_values`` (e.g. the benchmark's β for the default hints).
    """
    def common(method: str) -> dict[str, Any]:  # by_method leaves: the method's own branch
        values = {**method_defaults(cfg, method), **cfg.search.baseline_values}
        return {k: v for k, v in values.items() if k != "distill.method"}

    out: list[dict[str, Any]] = []
    for kind in ("default", "uniform", "random"):  # uniform/random: K of the searched defaults
        if kind in cfg.search.baselines:
            for method in methods_in_space(cfg):
                out.append({BASELINE_KEY: kind, **common(method), "distill.method": method})
    if "kd_only" in cfg.search.baselines:
        out.append({BASELINE_KEY: "kd_only", **common("kd_only"), "distill.method": "kd_only"})
    return out
