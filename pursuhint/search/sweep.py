"""``pursuhint sweep``: shared work once, then Ray Tune trials (Optuna samples, ASHA stops the weak),
every trial in MLflow under one parent run; resumable after a crash.

This module is the sweep's order of steps; Ray's start and end are ``ray_session``'s, the parent run's
bookkeeping ``parent_run``'s, the shared work's Ray task ``shared_task``'s, and what the driver does when Tune ends
a trial ``callbacks``'."""

from __future__ import annotations

import json
import logging
import os
import signal
import shutil
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .. import tracking
from ..config import Config
from ..errors import PursuhintError, SweepInterrupted  # noqa: F401 (SweepInterrupted: re-exported)
from ..infra.fileio import write_text_atomic
from ..infra.logs import HeldLogs, hold_logs, log_to_file, quiet_terminal, stop_logging_to_file
from .confirm import (Race, cohorts, comparisons_of, confirm_seeds, confirmation_table,
                      confirmed_results, group_results, pick_top, plan, stop_reason)
from .importance import study_exists, study_storage
from .parent_run import ParentRun, retire
from .ray_session import RaySession, head_node_id
from .layout import MARKER, confirm_round_name, experiment_dir, stage_dirs
from .results import TrialRow, row_from_result
from .shared_task import SharedPlacement, reserve_shared, run_shared_work
from .space import short_name
from .trial_keys import CONFIRM_TRIAL_KEY


@dataclass
class SweepResult:
    """Where a finished sweep's results are, and its leaderboard (``search.results`` rows, best first)."""

    experiment_dir: Path
    tracking_uri: str
    parent_run_id: str
    leaderboard: list[TrialRow]
    confirmation: Optional[dict[str, Any]] = None  # the confirmation table (None when the stage is off)
    optuna_storage: Optional[str] = None  # the RDB URL holding the Optuna study named after the sweep (None: in memory)


def run_sweep(cfg: Config, *, address: Optional[str] = None, resume: bool = False, overwrite: bool = False,
              num_samples: Optional[int] = None, tracking_uri: Optional[str] = None,
              storage_path: Optional[str] = None, verbose: int = 1, progress: bool = True) -> SweepResult:
    """Run (or ``resume``) the sweep the config describes and return its leaderboard.

    ``overwrite`` replaces an earlier sweep of the same name in the Tune storage (its MLflow runs stay,
    under a parent tagged as replaced); without it an existing sweep is refused unless resumed.
    """
    _tune_environment()
    uri = tracking.resolve_tracking_uri(tracking_uri, cfg.tracking.uri)
    tracking.check_reachable(uri)
    tracking.fail_fast_http()  # before Ray starts, so a local Ray's workers inherit it too
    exp_dir = experiment_dir(cfg.name, storage_path)  # None: remote storage, Tune's alone to read
    storage_str = str(exp_dir.parent) if exp_dir is not None else str(storage_path)
    _storage_policy(cfg, exp_dir, resume, overwrite)
    ray_session = RaySession(address, cfg.plugins)
    ray_session.check_local_resources(cfg)  # refused before a local Ray starts or a file is written
    held = _quiet_and_held()  # before the Optuna study and Ray say anything
    log_file, placement = None, None
    try:
        study_url = _study(cfg, exp_dir, resume, overwrite)
        ray_session.start()
        ray_session.check_resources(cfg)
        # The shared work's resources (a GPU whenever trials ask for one) are reserved before anything of the
        # sweep is written: a cluster that cannot give them within search.shared_timeout_s refuses the sweep in
        # one sentence, leaving no log file, parent run or marker behind.
        placement = reserve_shared(cfg)
        if overwrite:  # only now, with all the new sweep needs in hand: a refused sweep loses nothing
            _replace_old(cfg, uri, exp_dir, study_url)
        log_file = log_to_file(exp_dir, held)  # with what was said since the terminal went quiet
        parent = ParentRun.open(uri, cfg.name, str(exp_dir or storage_str))
        with parent.ended_if_interrupted():
            parent.log_sweep(cfg, study_url)
            # `index` (the duplicate index actor's handle) must live as long as the sweep: Ray ends an actor
            # once nothing holds a handle to it, and trials look it up by name.
            shared, index, trainable, callbacks = _trial_setup(cfg, parent, exp_dir, progress, placement)
            run_config = _run_config(cfg, storage_str, verbose, callbacks)
            tuner = _search_tuner(cfg, trainable, run_config, resume, exp_dir, storage_str, study_url, num_samples)
            grid = _fit(tuner, cfg.name)
            _raise_if_unfinished(cfg, grid, num_samples)
            confirmation = None
            if cfg.search.confirm.top_k > 0:
                confirmation = _confirmation_stage(cfg, grid, trainable, run_config, resume,
                                                   exp_dir.parent if exp_dir is not None else None, storage_str,
                                                   shared.dataset.splits, shared.auto_cohort)
                if confirmation is not None:
                    parent.log_confirmation(exp_dir, confirmation)
            return _finish(cfg, parent, exp_dir, storage_str, confirmation, study_url)
    finally:
        if placement is not None:
            placement.release()  # already, once the shared work ran; this is for a sweep stopped before it
        stop_logging_to_file(held)
        stop_logging_to_file(log_file)
        ray_session.close()


def _tune_environment() -> None:
    """Tune's output settings for a sweep (set only where the user has not set them)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic table, with our column names
    # Tune's "snapshotting has been triggered multiple times" advice fires on every small fast sweep and asks
    # nothing of the user (checkpointing every epoch is deliberate): keep the terminal for what matters.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def _run_config(cfg: Config, storage_str: str, verbose: int, callbacks: list[Any]) -> dict[str, Any]:
    """What every Tune experiment of the sweep (the search stage, each confirmation round) runs with."""
    from ray import tune  # ray: deferred, as every import of ray here

    return dict(storage_path=storage_str, verbose=verbose, checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                failure_config=tune.FailureConfig(max_failures=cfg.search.max_failures), callbacks=callbacks)


def _own_callbacks(run_config: dict[str, Any]) -> dict[str, Any]:
    """``run_config`` with a list of callbacks of its own: Tune appends its loggers to the list it is given, so a
    shared one carried the search stage's loggers (files open for writing) into each confirmation round, whose
    Tuner then could not be pickled after a Ctrl-C."""
    return {**run_config, "callbacks": list(run_config["callbacks"])}


def _fit(tuner: Any, name: str) -> Any:
    """``tuner.fit()``, raising SweepInterrupted when Tune stopped on a Ctrl-C: Tune swaps in its own SIGINT handler
    and puts the previous one back only when it is interrupted, and the trials it then ends can look finished, so
    their statuses alone cannot tell (the sweep must stop with its state saved, not go on)."""
    watched = threading.current_thread() is threading.main_thread() and os.environ.get("TUNE_DISABLE_SIGINT_HANDLER",
                                                                                       "0") == "0"
    before = signal.getsignal(signal.SIGINT) if watched else None
    grid = tuner.fit()
    if watched and signal.getsignal(signal.SIGINT) is before:
        raise SweepInterrupted(f"sweep {name!r} interrupted; its state is saved: run the same command with --resume "
                               f"to finish it")
    return grid


def _raise_if_unfinished(cfg: Config, grid: Any, num_samples: Optional[int]) -> None:
    """SweepInterrupted when Tune returned before every trial of the sweep ended (stopped, killed driver)."""
    from .searcher import total_trials  # ray: deferred

    unfinished = _unfinished(grid, total_trials(cfg, num_samples))
    if unfinished:
        raise SweepInterrupted(f"sweep {cfg.name!r} interrupted with {unfinished} trial(s) unfinished; its "
                               f"state is saved: run the same command with --resume to finish it")


def _finish(cfg: Config, parent: ParentRun, exp_dir: Optional[Path], storage_str: str, confirmation: Any,
            study_url: Optional[str]) -> SweepResult:
    """Close the sweep's MLflow runs, read its leaderboard, log the report and return the result."""
    parent.finish(exp_dir, cfg.name)
    rows = parent.leaderboard(exp_dir)
    parent.log_report(cfg.name, rows, confirmation, study_url, searched=bool(cfg.space),
                      source=f"Tune results {exp_dir}" if exp_dir is not None else f"MLflow run {parent.run_id}")
    return SweepResult(experiment_dir=exp_dir or Path(storage_str), tracking_uri=parent.uri,
                       parent_run_id=parent.run_id, leaderboard=rows, confirmation=confirmation,
                       optuna_storage=_kept(study_url, cfg.name))


def _storage_policy(cfg: Config, exp_dir: Optional[Path], resume: bool, overwrite: bool) -> None:
    """Refuse what would mix two sweeps in one Tune folder (``overwrite`` lets a new sweep replace the old one,
    see :func:`_replace_old`). Remote storage (``exp_dir`` None) is Tune's alone to judge."""
    if exp_dir is None:
        return
    exists = (exp_dir / MARKER).exists()
    if resume and not exists:
        raise PursuhintError(f"no sweep named {cfg.name!r} to resume under {exp_dir.parent}; "
                             f"run it without --resume first (or pass its --storage-path)")
    if resume and overwrite:
        raise PursuhintError("--resume and --overwrite contradict each other; pass one of them")
    if not resume and exists and not overwrite:
        raise PursuhintError(f"a sweep named {cfg.name!r} already exists in {exp_dir}; pass --resume to "
                             f"continue it, --overwrite to start it again, or change `name` or "
                             f"--storage-path for a new one")


def _replace_old(cfg: Config, uri: str, exp_dir: Optional[Path], study_url: Optional[str]) -> None:
    """``--overwrite``: retire the old sweep (its MLflow runs stay, under a parent tagged as replaced), delete its
    Tune folders and its Optuna study. Called once the new sweep has passed every check and holds its resources."""
    if exp_dir is not None and exp_dir.exists():
        retire(uri, cfg.name, str(exp_dir))
        shutil.rmtree(exp_dir)
        for folder in stage_dirs(exp_dir)[1:]:
            shutil.rmtree(folder, ignore_errors=True)
    if study_url is not None and study_exists(study_url, cfg.name):
        import optuna  # optuna: deferred

        optuna.delete_study(study_name=cfg.name, storage=study_url)


def _quiet_and_held() -> HeldLogs:
    """A quiet terminal, and what the terminal no longer shows held in memory until ``log_to_file`` writes it into
    the sweep's log file (its handler, which ``stop_logging_to_file`` removes)."""
    import mlflow  # noqa: F401 - deferred (heavy); imported here so that its console handler exists to be quieted
    import optuna  # noqa: F401 - deferred (heavy), as mlflow

    quiet_terminal()
    return hold_logs()


def _trial_setup(cfg: Config, parent: ParentRun, exp_dir: Optional[Path], progress: bool,
                 placement: SharedPlacement) -> tuple[Any, Any, Any, list[Any]]:
    """The shared work (teacher, matrices: once, in a Ray task in ``placement``), the duplicate index (its actor
    handle: keep it for the whole sweep), the trainable and the callbacks; writes the sweep's marker (what
    ``report``, ``export`` and ``--resume`` find it by)."""
    import ray  # ray: deferred, as every import in this function
    from ray import tune
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from .callbacks import EndTrials
    from .duplicate_index import DuplicateIndexActor
    from .trial import SweepInfo
    from .tune_trainable import run_trial

    shared = run_shared_work(cfg, progress, placement)
    actor_name = f"pursuhint-duplicates-{parent.run_id}"
    # On the head node: a worker node that goes away must not take the index with it.
    head = NodeAffinitySchedulingStrategy(node_id=head_node_id(), soft=True)
    index = DuplicateIndexActor.options(name=actor_name, get_if_exists=True, scheduling_strategy=head).remote()
    ray.get(index.seed.remote(parent.finished_trials()))
    info = SweepInfo(name=cfg.name, tracking_uri=parent.uri, experiment_id=parent.experiment_id,
                     parent_run_id=parent.run_id, duplicates_actor=actor_name,
                     cpus_per_trial=cfg.search.resources_per_trial.cpu)
    res = {"cpu": cfg.search.resources_per_trial.cpu, "gpu": cfg.search.resources_per_trial.gpu}
    trainable = tune.with_resources(tune.with_parameters(run_trial, shared=shared, sweep=info), res)
    if exp_dir is not None:
        write_text_atomic(exp_dir / MARKER, json.dumps({"name": cfg.name, "tracking_uri": parent.uri,
                                                        "parent_run_id": parent.run_id,
                                                        "config_yaml": cfg.to_yaml()}, indent=2))
    return shared, index, trainable, [EndTrials(actor_name, parent.uri, parent.experiment_id, parent.run_id)]


def _search_tuner(cfg: Config, trainable: Any, run_config: dict[str, Any], resume: bool, exp_dir: Optional[Path],
                  storage_str: str, study_url: Optional[str], num_samples: Optional[int]) -> Any:
    """The search stage's Tuner: restored from its saved state on ``--resume``, else new (Optuna behind the
    baselines, ASHA or FIFO)."""
    from ray import tune  # ray: deferred, as the searcher

    from .searcher import make_scheduler, make_searcher, total_trials

    if resume:
        return tune.Tuner.restore(str(exp_dir) if exp_dir else f"{storage_str.rstrip('/')}/{cfg.name}",
                                  trainable=trainable, resume_unfinished=True, resume_errored=True)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            metric="val_acc", mode="max", search_alg=make_searcher(cfg, study_url), scheduler=make_scheduler(cfg),
            num_samples=total_trials(cfg, num_samples), max_concurrent_trials=cfg.search.max_concurrent_trials,
            reuse_actors=True),
        run_config=tune.RunConfig(name=cfg.name, progress_reporter=_reporter(cfg), **_own_callbacks(run_config)))


def _search_rows(grid: Any) -> list[TrialRow]:
    """The finished search stage's trials, from Tune's grid (local or remote storage alike)."""
    from .callbacks import ended_status  # ray: deferred (a Tune callback's module)

    rows = []
    for result in grid:
        metrics = result.metrics or {}
        status = ended_status(metrics) or metrics.get("status", "error" if result.error else "completed")
        rows.append(row_from_result(result.config or {}, metrics, status, metrics.get("trial_id", "")))
    return rows


def _confirmation_stage(cfg: Config, search_grid: Any, trainable: Any, run_config: dict[str, Any], resume: bool,
                        storage: Optional[Path], storage_str: str, splits: dict[str, Any],
                        auto_cohort: int) -> Optional[dict[str, Any]]:
    """Retrain the search's top-K distinct configurations and their baselines over fresh seeds, racing: the first
    round trains every arm with ``min`` seeds, each later round one more seed for the arms whose comparisons
    are undecided (Tune trials of the same sweep, one folder a round, resumable); then the confirmation table.
    ``auto_cohort``: the students per trial ``cohort: auto`` means (what fits a trial's share of the GPU)."""
    conf = cfg.search.confirm
    size = auto_cohort if conf.cohort == "auto" else conf.cohort_size
    candidates = pick_top(_search_rows(search_grid), conf.top_k, cfg.search.metric)
    if not candidates:
        print("pursuhint: no searched trial completed, so there is nothing to confirm", file=sys.stderr)
        return None
    seeds = confirm_seeds(cfg.seed, conf.max_seeds)
    race = Race(comparisons_of(candidates, conf.baselines), conf.min_seeds, conf.max_seeds, conf.margin)
    racing = conf.max_seeds > conf.min_seeds
    print(f"pursuhint: confirmation stage: {len(candidates)} configuration(s), {len(race.comparisons)} comparison(s) "
          + (f"racing {conf.min_seeds} to {conf.max_seeds} seeds" if racing else f"× {conf.min_seeds} seeds")
          + f" (margin ±{conf.margin:g} points), full budget, test split", file=sys.stderr)
    results, hours, n, arms = [], 0.0, conf.min_seeds, None
    while True:
        round_seeds = seeds[:n] if arms is None else [seeds[n - 1]]
        got, spent = _confirmation_round(cfg, candidates, round_seeds, arms, n - conf.min_seeds + 1, size,
                                         trainable, run_config, resume, storage, storage_str)
        results += got
        hours += spent
        race.look(group_results(results), n)
        reason = stop_reason(race, n, hours, conf.budget_hours)
        if reason:
            break
        arms, n = race.open_arms(), n + 1
        print(f"pursuhint: confirmation round {n - conf.min_seeds + 1}: seed {seeds[n - 1]} for {len(arms)} arm(s) "
              f"with {len(race.open)} undecided comparison(s)", file=sys.stderr)
    print(f"pursuhint: the confirmation stage stopped: {reason}", file=sys.stderr)
    table = confirmation_table(candidates, results, n, race)
    return table | {"seeds": seeds[:n], "splits": splits, "stopped": reason, "trial_hours": hours}


def _confirmation_round(cfg: Config, candidates: list[Any], seeds: list[int], arms: Optional[set[tuple]],
                        number: int, cohort_size: int, trainable: Any, run_config: dict[str, Any], resume: bool,
                        storage: Optional[Path], storage_str: str) -> tuple[list[Any], float]:
    """One round of the confirmation stage as its own Tune experiment (``<name>-confirm`` for the first, then
    ``-round2``, ...), its arms in cohorts of at most ``cohort_size``; returns its results and trial-hours. A
    resumed sweep restores a round that has a folder."""
    from ray import tune  # ray: deferred

    planned = plan(cfg, candidates, seeds, cfg.search.confirm.baselines, arms)
    trials = cohorts(planned, cohort_size)
    name = confirm_round_name(cfg.name, number)
    path = str(storage / name) if storage is not None else f"{storage_str.rstrip('/')}/{name}"
    if number == 1:
        together = f" in {len(trials)} Tune trials (cohorts)" if len(trials) < len(planned) else ""
        print(f"pursuhint: confirmation round 1: seeds {', '.join(map(str, seeds))} = {len(planned)} arm-seeds"
              f"{together}", file=sys.stderr)
    if resume and tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable, param_space={CONFIRM_TRIAL_KEY: tune.grid_search(trials)},
            tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=cfg.search.max_concurrent_trials,
                                        reuse_actors=True),
            run_config=tune.RunConfig(name=name, **_own_callbacks(run_config)))
    grid = _fit(tuner, cfg.name)
    unfinished = _unfinished(grid, len(trials))
    if unfinished:
        raise SweepInterrupted(f"sweep {cfg.name!r} interrupted in its confirmation stage with {unfinished} "
                               f"trial(s) unfinished; run the same command with --resume to finish it")
    results = [c for r in grid for c in confirmed_results((r.config or {}).get(CONFIRM_TRIAL_KEY, {}), r.metrics or {})]
    hours = sum(float((r.metrics or {}).get("time_total_s", 0.0) or 0.0) for r in grid) / 3600
    return results, hours


def _study(cfg: Config, exp_dir: Optional[Path], resume: bool, overwrite: bool) -> Optional[str]:
    """The RDB URL the sweep's Optuna study is kept in (None: in memory, said in one line). A new sweep refuses
    a study of its name already there, unless ``overwrite`` (``_replace_old`` deletes it); ``--resume`` goes on
    in it."""
    if not cfg.space:
        return None  # nothing searched: no Optuna study
    url = study_storage(cfg, exp_dir)
    if url is None:
        print("pursuhint: note: Tune writes to remote storage, so the Optuna study is kept in memory only; set "
              "search.optuna_storage (an RDB URL) to keep it", file=sys.stderr)
        return None
    if not resume and not overwrite and study_exists(url, cfg.name):
        raise PursuhintError(f"an Optuna study named {cfg.name!r} already exists in {tracking.scrub(url)}; pass "
                             f"--resume to continue its sweep, --overwrite to start it again, or change `name` "
                             f"or search.optuna_storage")
    return url


def _kept(url: Optional[str], name: str) -> Optional[str]:
    """``url`` when it holds the study ``name`` (a sweep resumed from before studies were kept has none)."""
    try:
        return url if url and study_exists(url, name) else None
    except Exception as exc:  # noqa: BLE001 - a storage gone away now only loses the dashboard hint
        logging.getLogger("pursuhint").info("cannot read the Optuna storage %s (%s)", url, exc)
        return None


def _unfinished(grid: Any, expected: int) -> int:
    """How many of the ``expected`` trials Tune did not finish (terminated or errored): an interrupted run."""
    trials = getattr(getattr(grid, "_experiment_analysis", None), "trials", None) or []
    if os.environ.get("PURSUHINT_DEBUG_SWEEP"):
        print("trial statuses:", [getattr(t, "status", None) for t in trials], file=sys.stderr)
    done = sum(1 for t in trials if getattr(t, "status", "TERMINATED") in ("TERMINATED", "ERROR"))
    return max(0, expected - done)


def _reporter(cfg: Config) -> Any:
    """Tune's progress table, with the searched keys under their short names."""
    from ray.tune import CLIReporter  # ray: deferred

    params = {key: short_name(key) for key in cfg.space}
    params["pursuhint.baseline"] = "baseline"
    return CLIReporter(parameter_columns=params,
                       metric_columns={"val_acc": "val_acc", "epoch": "epoch", "training_iteration": "iter"},
                       max_report_frequency=30, sort_by_metric=True)
