"""Tune search algorithm and scheduler: Optuna (seeded TPE or random) behind the baseline trials,
and an ASHA that never stops a baseline (it must run the full budget to be a fair comparison)."""

from __future__ import annotations

import pickle
import sys
from typing import Any, Optional

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from ..config import Config
from .importance import open_storage
from .space import baseline_configs, define_by_run
from .trial_keys import BASELINE_KEY

METRIC, MODE = "val_acc", "max"


class BaselinesFirst(Searcher):
    """Suggests the baseline configs first, then delegates to the inner searcher.

    Results of baseline trials are not shown to the inner searcher (they are not points of its space).
    """

    def __init__(self, inner: Optional[Searcher], baselines: list[dict[str, Any]], rank_key: str = METRIC) -> None:
        super().__init__(metric=METRIC, mode=MODE)
        self.rank_key = rank_key  # what Optuna learns from: the last epoch's val_acc, or best_val_acc
        self.inner = inner
        self.pending = list(baselines)
        self.baseline_trials: set[str] = set()
        self.inner_trials: set[str] = set()

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], config: dict, **spec: Any) -> bool:
        return True  # metric and mode are fixed at construction (val_acc, max)

    def suggest(self, trial_id: str) -> Optional[dict]:
        if self.pending:
            self.baseline_trials.add(trial_id)
            return dict(self.pending.pop(0))
        if self.inner is None:
            return Searcher.FINISHED
        suggestion = self.inner.suggest(trial_id)
        if isinstance(suggestion, dict):
            self.inner_trials.add(trial_id)
            suggestion = {BASELINE_KEY: "", **suggestion}
        return suggestion

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self.inner is not None and trial_id in self.inner_trials:
            self.inner.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        if self.inner is not None and trial_id in self.inner_trials:
            if result and self.rank_key != METRIC and self.rank_key in result:
                result = {**result, METRIC: result[self.rank_key]}
            self.inner.on_trial_complete(trial_id, result=result, error=error)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:  # written by save() above, inside the sweep's own folder
            self.__dict__.update(pickle.load(f))
        _fail_orphans(self.inner)


def _fail_orphans(inner: Optional[Searcher]) -> None:
    """On ``--resume``: the restored Optuna searcher goes on writing into the same kept study; a trial it had asked
    the study for after its state was last saved (the driver was killed) would stay RUNNING there forever, so it is
    marked failed. Nothing to do for a study in memory (restored with the searcher's state)."""
    study = getattr(inner, "_ot_study", None)
    if study is None:
        return
    from optuna.trial import TrialState  # optuna: loaded by the driver only when a sweep searches

    known = {getattr(t, "_trial_id", None) for t in getattr(inner, "_ot_trials", {}).values()}
    try:
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t._trial_id not in known:
                study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    except Exception as exc:  # noqa: BLE001 - the study's bookkeeping must never stop a resumed sweep

        print(f"pursuhint: warning: could not tidy the Optuna study's unfinished trials ({exc})", file=sys.stderr)


class BaselineASHA(ASHAScheduler):
    """ASHA on ``val_acc`` that records baselines in its rungs but always lets them finish."""

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if trial.config.get(BASELINE_KEY):
            return TrialScheduler.CONTINUE
        return decision


def make_searcher(cfg: Config, storage: Optional[str] = None) -> BaselinesFirst:
    """Seeded Optuna TPE (``searcher: optuna``) or Optuna's random sampler (``random``); its study, named after
    the sweep, is kept in the RDB ``storage`` (a URL; None: in memory), loaded if it exists."""
    inner = None
    if cfg.space:
        import optuna  # optuna: loaded by the driver only when a sweep searches
        from ray.tune.search.optuna import OptunaSearch  # ray: loaded only when a sweep runs


        sampler = (optuna.samplers.TPESampler(seed=cfg.seed) if cfg.search.searcher == "optuna"
                   else optuna.samplers.RandomSampler(seed=cfg.seed))
        inner = OptunaSearch(space=define_by_run(cfg.space, cfg.distill.method), metric=METRIC, mode=MODE,
                             sampler=sampler, study_name=cfg.name,
                             storage=open_storage(storage) if storage else None)
    plain = [] if cfg.space else [{BASELINE_KEY: ""}]  # nothing searched: run the config itself once
    rank_key = "best_val_acc" if cfg.search.metric == "best" else METRIC  # final: the last epoch's val_acc
    return BaselinesFirst(inner, baseline_configs(cfg) + plain, rank_key)


def make_scheduler(cfg: Config) -> TrialScheduler:
    if cfg.search.scheduler == "fifo":
        return FIFOScheduler()
    return BaselineASHA(time_attr="training_iteration", max_t=cfg.train.epochs,
                        grace_period=min(cfg.search.grace_period, cfg.train.epochs),
                        reduction_factor=cfg.search.reduction_factor)


def total_trials(cfg: Config, num_samples: Optional[int] = None) -> int:
    """Searched trials plus baselines (a config without a space searches nothing: baselines + itself)."""
    searched = (num_samples or cfg.search.num_samples) if cfg.space else 1
    return searched + len(baseline_configs(cfg))
