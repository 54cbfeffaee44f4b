"""``pursuhint sweep``: shared work once, then Ray Tune trials (Optuna samples, ASHA stops the weak),
every trial in MLflow under one parent run; resumable after a crash."""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from .. import tracking
from ..config import Config
from ..errors import PursuhintError, SweepInterrupted  # noqa: F401 (SweepInterrupted: re-exported)
from ..fileio import write_text_atomic
from ..logs import log_to_file, quiet_terminal, stop_logging_to_file
from .results import (MARKER, TrialRow, confirm_round_name, experiment_dir, row_from_result, rows_from_mlflow,
                      rows_from_tune, stage_dirs)
from .sync import (finish_parent, mark_finished, retire_lost_runs, set_aside_lost_trials, sync_sweep,
                   unreported_lost_trials)


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
    import ray
    from ray import tune

    uri = tracking.resolve_tracking_uri(tracking_uri, cfg.tracking.uri)
    tracking.check_reachable(uri)
    tracking.fail_fast_http()  # before Ray starts, so a local Ray's workers inherit it too
    exp_dir = experiment_dir(cfg.name, storage_path)  # None: remote storage, Tune's alone to read
    storage_str = str(exp_dir.parent) if exp_dir is not None else str(storage_path)
    _storage_policy(cfg, uri, exp_dir, resume, overwrite)
    if not address and not ray.is_initialized():
        _check_resources(cfg, total=_local_resources())  # refused before a local Ray starts or a file is written
    log_file = _quiet_and_logged(exp_dir)  # before the Optuna study and Ray say anything
    try:
        study_url = _study(cfg, exp_dir, resume, overwrite)
        _ray_init(address, cfg.plugins)
    except BaseException:
        stop_logging_to_file(log_file)
        raise
    opened: tuple[str, str] = ()  # (experiment id, parent run id) once the parent run exists
    try:
        _check_resources(cfg, autoscaling=bool(address))
        experiment_id = tracking.ensure_experiment(uri, cfg.name)
        parent = tracking.parent_run(uri, experiment_id, str(exp_dir or storage_str), run_name=f"sweep-{cfg.name}")
        opened = (experiment_id, parent)
        _log_parent(uri, parent, cfg)
        # where the sweep's parts are, so `report` and `export` find them from the name and tracking URI alone
        tracking.set_tags(uri, parent, {tracking.OPTUNA_TAG: study_url or "in memory"})
        # `index` (the duplicate index actor's handle) must live as long as the sweep: Ray ends an actor once
        # nothing holds a handle to it, and trials look it up by name.
        shared, index, trainable, callbacks = _trial_setup(cfg, uri, experiment_id, parent, exp_dir, progress)
        run_config = dict(storage_path=storage_str, verbose=verbose,
                          checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                          failure_config=tune.FailureConfig(max_failures=cfg.search.max_failures),
                          callbacks=callbacks)
        tuner = _search_tuner(cfg, trainable, run_config, resume, exp_dir, storage_str, study_url, num_samples)
        grid = tuner.fit()
        _raise_if_unfinished(cfg, grid, num_samples)
        confirmation = None
        if cfg.search.confirm.top_k > 0:
            confirmation = _confirmation_stage(cfg, grid, trainable, run_config, resume,
                                               exp_dir.parent if exp_dir is not None else None, storage_str,
                                               shared.dataset.splits)
            if confirmation is not None:
                _log_confirmation(uri, parent, exp_dir, confirmation)
        return _finish(cfg, uri, experiment_id, parent, exp_dir, storage_str, confirmation, study_url)
    except (SweepInterrupted, KeyboardInterrupt):
        if opened:
            _end_interrupted(uri, *opened)
        raise
    finally:
        stop_logging_to_file(log_file)
        if ray.is_initialized() and _we_started_ray:
            ray.shutdown()


def _tune_environment() -> None:
    """Tune's output settings for a sweep (set only where the user has not set them)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic table, with our column names
    # Tune's "snapshotting has been triggered multiple times" advice fires on every small fast sweep and asks
    # nothing of the user (checkpointing every epoch is deliberate): keep the terminal for what matters.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def _raise_if_unfinished(cfg: Config, grid: Any, num_samples: Optional[int]) -> None:
    """SweepInterrupted when Tune returned before every trial of the sweep ended (stopped, killed driver)."""
    from .searcher import total_trials

    unfinished = _unfinished(grid, total_trials(cfg, num_samples))
    if unfinished:
        raise SweepInterrupted(f"sweep {cfg.name!r} interrupted with {unfinished} trial(s) unfinished; its "
                               f"state is saved: run the same command with --resume to finish it")


def _finish(cfg: Config, uri: str, experiment_id: str, parent: str, exp_dir: Optional[Path], storage_str: str,
            confirmation: Any, study_url: Optional[str]) -> SweepResult:
    """Close the sweep's MLflow runs, read its leaderboard, log the report and return the result."""
    _finish_mlflow(uri, experiment_id, parent, exp_dir, cfg.name)
    rows = _leaderboard(uri, parent, exp_dir)
    _log_report(uri, parent, cfg.name, rows, confirmation, study_url, searched=bool(cfg.space),
                source=f"Tune results {exp_dir}" if exp_dir is not None else f"MLflow run {parent}")
    return SweepResult(experiment_dir=exp_dir or Path(storage_str), tracking_uri=uri, parent_run_id=parent,
                       leaderboard=rows, confirmation=confirmation, optuna_storage=_kept(study_url, cfg.name))


def _storage_policy(cfg: Config, uri: str, exp_dir: Optional[Path], resume: bool, overwrite: bool) -> None:
    """Refuse what would mix two sweeps in one Tune folder; ``overwrite`` retires the old one (its MLflow runs
    stay, under a parent tagged as replaced). Remote storage (``exp_dir`` None) is Tune's alone to judge."""
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
    if overwrite and exp_dir.exists():
        import shutil

        _retire(uri, cfg.name, str(exp_dir))
        shutil.rmtree(exp_dir)
        for folder in stage_dirs(exp_dir)[1:]:
            shutil.rmtree(folder, ignore_errors=True)


def _quiet_and_logged(exp_dir: Optional[Path]) -> Any:
    """A quiet terminal and the sweep's log file (its handler, which ``stop_logging_to_file`` removes)."""
    import mlflow  # noqa: F401 - imported here so that its console handler exists to be quieted
    import optuna  # noqa: F401

    quiet_terminal()
    return log_to_file(exp_dir)  # everything the terminal no longer shows


def _trial_setup(cfg: Config, uri: str, experiment_id: str, parent: str, exp_dir: Optional[Path],
                 progress: bool) -> tuple[Any, Any, Any, list[Any]]:
    """The shared work (teacher, matrices: once, in a Ray task), the duplicate index (its actor handle: keep it
    for the whole sweep), the trainable and the callbacks; writes the sweep's marker (what ``report``,
    ``export`` and ``--resume`` find it by)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from .duplicates import DuplicateIndexActor
    from .trainable import SweepInfo
    from .trials import run_trial

    shared = run_shared_work(cfg, progress)
    actor_name = f"pursuhint-duplicates-{parent}"
    # On the head node: a worker node that goes away must not take the index with it.
    head = NodeAffinitySchedulingStrategy(node_id=_head_node_id(), soft=True)
    index = DuplicateIndexActor.options(name=actor_name, get_if_exists=True, scheduling_strategy=head).remote()
    ray.get(index.seed.remote(_finished_from_mlflow(uri, experiment_id, parent)))
    info = SweepInfo(name=cfg.name, tracking_uri=uri, experiment_id=experiment_id, parent_run_id=parent,
                     duplicates_actor=actor_name, cpus_per_trial=cfg.search.resources_per_trial.cpu)
    res = {"cpu": cfg.search.resources_per_trial.cpu, "gpu": cfg.search.resources_per_trial.gpu}
    from ray import tune

    trainable = tune.with_resources(tune.with_parameters(run_trial, shared=shared, sweep=info), res)
    if exp_dir is not None:
        write_text_atomic(exp_dir / MARKER, json.dumps({"name": cfg.name, "tracking_uri": uri, "parent_run_id": parent,
                                                        "config_yaml": cfg.to_yaml()}, indent=2))
    return shared, index, trainable, [_end_trials_callback(actor_name, uri, experiment_id, parent)]


def _search_tuner(cfg: Config, trainable: Any, run_config: dict[str, Any], resume: bool, exp_dir: Optional[Path],
                  storage_str: str, study_url: Optional[str], num_samples: Optional[int]) -> Any:
    """The search stage's Tuner: restored from its saved state on ``--resume``, else new (Optuna behind the
    baselines, ASHA or FIFO)."""
    from ray import tune

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
        run_config=tune.RunConfig(name=cfg.name, progress_reporter=_reporter(cfg), **run_config))


_we_started_ray = False


def _search_rows(grid: Any) -> list[TrialRow]:
    """The finished search stage's trials, from Tune's grid (local or remote storage alike)."""
    rows = []
    for result in grid:
        metrics = result.metrics or {}
        status = _ended_status(metrics) or metrics.get("status", "error" if result.error else "completed")
        rows.append(row_from_result(result.config or {}, metrics, status, metrics.get("trial_id", "")))
    return rows


def _confirmation_stage(cfg: Config, search_grid: Any, trainable: Any, run_config: dict[str, Any], resume: bool,
                        storage: Optional[Path], storage_str: str,
                        splits: dict[str, Any]) -> Optional[dict[str, Any]]:
    """Retrain the search's top-K distinct configurations and their baselines over fresh seeds, racing: the first
    round trains every arm with ``min`` seeds, each later round one more seed for the arms whose comparisons
    are undecided (Tune trials of the same sweep, one folder a round, resumable); then the confirmation table."""
    from .confirm import (Race, comparisons_of, confirm_seeds, confirmation_table, group_results, pick_top,
                          stop_reason)

    conf = cfg.search.confirm
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
        got, spent = _confirmation_round(cfg, candidates, round_seeds, arms, n - conf.min_seeds + 1, trainable,
                                         run_config, resume, storage, storage_str)
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
                        number: int, trainable: Any, run_config: dict[str, Any], resume: bool,
                        storage: Optional[Path], storage_str: str) -> tuple[list[Any], float]:
    """One round of the confirmation stage as its own Tune experiment (``<name>-confirm`` for the first, then
    ``-round2``, ...); returns its results and trial-hours. A resumed sweep restores a round that has a folder."""
    from ray import tune

    from .confirm import CONFIRM_TRIAL_KEY, cohorts, confirmed_results, plan

    planned = plan(cfg, candidates, seeds, cfg.search.confirm.baselines, arms)
    trials = cohorts(planned, cfg.search.confirm.cohort_size)
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
            run_config=tune.RunConfig(name=name, **run_config))
    grid = tuner.fit()
    unfinished = _unfinished(grid, len(trials))
    if unfinished:
        raise SweepInterrupted(f"sweep {cfg.name!r} interrupted in its confirmation stage with {unfinished} "
                               f"trial(s) unfinished; run the same command with --resume to finish it")
    results = [c for r in grid for c in confirmed_results((r.config or {}).get(CONFIRM_TRIAL_KEY, {}), r.metrics or {})]
    hours = sum(float((r.metrics or {}).get("time_total_s", 0.0) or 0.0) for r in grid) / 3600
    return results, hours


def _end_interrupted(uri: str, experiment_id: str, parent: str) -> None:
    """An interrupted sweep's runs end KILLED in MLflow (trials that had ended keep their status); ``--resume``
    reopens them. MLflow being away must not hide the interruption itself."""
    try:
        tracking.end_open_children(uri, experiment_id, parent, "interrupted", "sweep interrupted; --resume continues it")
        tracking.end_run(uri, parent, "interrupted", "sweep interrupted; --resume continues it")
    except Exception as exc:  # noqa: BLE001 - any MLflow failure: report it, the interruption matters more
        print(f"pursuhint: warning: could not mark the interrupted runs in MLflow ({tracking.scrub(str(exc))[:200]})",
              file=sys.stderr)


def _log_confirmation(uri: str, parent: str, exp_dir: Optional[Path], table: dict[str, Any]) -> None:
    """``confirmation.json`` in the sweep's folder and on the parent run, with its plot (``confirmation.png``) and
    the headline metrics."""
    import tempfile

    from .confirm import ANSWER_TAG, FILE, headline

    text = json.dumps(table, indent=2, default=str)
    if exp_dir is not None:
        write_text_atomic(exp_dir / FILE, text)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / FILE
            path.write_text(text)
            tracking.log_artifact(uri, parent, str(path))
            if table.get("configurations") or table.get("baselines"):
                from ..plots import confirmation_plot

                confirmation_plot(table, Path(tmp) / "confirmation.png")
                tracking.log_artifact(uri, parent, str(Path(tmp) / "confirmation.png"))
        metrics = headline(table)
        if metrics:
            tracking.log_metrics(uri, parent, metrics, 0)
        tags = {tracking.CONFIRMATION_TAG: str(exp_dir / FILE) if exp_dir is not None else f"parent run artifact {FILE}"}
        if table.get("answer"):
            tags[ANSWER_TAG] = table["answer"]
        tracking.set_tags(uri, parent, tags)
    except Exception as exc:  # noqa: BLE001 - MLflow away: the table is in the sweep's folder
        print(f"pursuhint: warning: could not log the confirmation table to MLflow ({tracking.scrub(str(exc))[:200]})",
              file=sys.stderr)


def _study(cfg: Config, exp_dir: Optional[Path], resume: bool, overwrite: bool) -> Optional[str]:
    """The RDB URL the sweep's Optuna study is kept in (None: in memory, said in one line). A new sweep refuses
    a study of its name already there, unless ``overwrite`` (then it is deleted); ``--resume`` goes on in it."""
    from .importance import study_exists, study_storage

    if not cfg.space:
        return None  # nothing searched: no Optuna study
    url = study_storage(cfg, exp_dir)
    if url is None:
        print("pursuhint: note: Tune writes to remote storage, so the Optuna study is kept in memory only; set "
              "search.optuna_storage (an RDB URL) to keep it", file=sys.stderr)
        return None
    if not resume and study_exists(url, cfg.name):
        if not overwrite:
            raise PursuhintError(f"an Optuna study named {cfg.name!r} already exists in {tracking.scrub(url)}; pass "
                                 f"--resume to continue its sweep, --overwrite to start it again, or change `name` "
                                 f"or search.optuna_storage")
        import optuna

        optuna.delete_study(study_name=cfg.name, storage=url)
    return url


def _kept(url: Optional[str], name: str) -> Optional[str]:
    """``url`` when it holds the study ``name`` (a sweep resumed from before studies were kept has none)."""
    from .importance import study_exists

    try:
        return url if url and study_exists(url, name) else None
    except Exception as exc:  # noqa: BLE001 - a storage gone away now only loses the dashboard hint
        logging.getLogger("pursuhint").info("cannot read the Optuna storage %s (%s)", url, exc)
        return None


def _log_report(uri: str, parent: str, name: str, rows: list[TrialRow], confirmation: Optional[dict[str, Any]],
                study_url: Optional[str], searched: bool = True, source: str = "") -> None:
    """The browsable page (``report.html``: tables, plots, atlases, importances) on the parent run; a page that
    cannot be drawn or logged is a one-line warning, never a failed sweep."""
    import tempfile

    try:
        from .report import write_report
        from .importance import NoImportances, param_importances

        importances: Any = "parameter importances: none, this sweep searched nothing (its config has no spec leaf)"
        if searched:
            try:
                importances = param_importances(study_url, name)
            except NoImportances as exc:
                importances = str(exc)
        with tempfile.TemporaryDirectory() as tmp:
            path = write_report(Path(tmp) / "report.html", name, rows, confirmation=confirmation,
                                importances=importances, tracking_uri=uri, source=source)
            tracking.log_artifact(uri, parent, str(path))
    except Exception as exc:  # noqa: BLE001 - the sweep's results are all recorded already
        print(f"pursuhint: warning: could not log report.html on the sweep's run ({tracking.scrub(str(exc))[:200]})",
              file=sys.stderr)


def _ray_init(address: Optional[str], plugins: Sequence[str] = ()) -> None:
    """Start a local Ray or connect to a cluster, shipping the config's plugin modules to its workers."""
    global _we_started_ray
    import ray

    if ray.is_initialized():
        _we_started_ray = False
        return
    if address and address not in ("auto", "local") and "://" not in address:
        _check_port(address)
    runtime_env = {"py_modules": shipped} if (shipped := plugin_modules(plugins)) else None
    try:
        if address:
            ray.init(address=address, log_to_driver=True, runtime_env=runtime_env)
        else:
            ray.init(address="local", include_dashboard=False, runtime_env=runtime_env)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise PursuhintError(f"cannot connect to the Ray cluster at {address!r} ({exc}); start it with "
                             f"`ray start --head` or `ray up ray_cluster.yaml`, or drop --address "
                             f"to run locally") from None
    _we_started_ray = True


def plugin_modules(plugins: Sequence[str]) -> list[Any]:
    """The plugin modules Ray must ship to its workers (each module's top-level package, or the module file):
    those the driver imported from a folder of the user's, not from an installed distribution."""
    import sysconfig

    installed = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}
    out: list[Any] = []
    for name in plugins:
        top = sys.modules.get(name.split(".")[0])
        where = getattr(top, "__file__", None)
        if top is None or where is None or top in out:
            continue
        if any(Path(where).resolve().is_relative_to(p) for p in installed) or top.__name__ == "pursuhint":
            continue
        out.append(top)
    return out


def _head_node_id() -> str:
    """The Ray head node's id (the node that lives as long as the cluster), else the driver's node."""
    import ray

    for node in ray.nodes():
        if node.get("Alive") and "node:__internal_head__" in node.get("Resources", {}):
            return node["NodeID"]
    return ray.get_runtime_context().get_node_id()


def _unfinished(grid: Any, expected: int) -> int:
    """How many of the ``expected`` trials Tune did not finish (terminated or errored): an interrupted run."""
    trials = getattr(getattr(grid, "_experiment_analysis", None), "trials", None) or []
    if os.environ.get("PURSUHINT_DEBUG_SWEEP"):
        print("trial statuses:", [getattr(t, "status", None) for t in trials], file=sys.stderr)
    done = sum(1 for t in trials if getattr(t, "status", "TERMINATED") in ("TERMINATED", "ERROR"))
    return max(0, expected - done)


def _retire(uri: str, name: str, sweep_dir: str) -> None:
    """Tag the MLflow parent of a sweep being overwritten so the new sweep gets a parent of its own."""
    import time as _time

    try:
        exp = tracking.client(uri).get_experiment_by_name(name)
        if exp is None:
            return
        for run in tracking.find_runs(uri, exp.experiment_id, **{tracking.ROLE_TAG: "sweep",
                                                                  tracking.SWEEP_DIR_TAG: sweep_dir}):
            tracking.set_tags(uri, run.info.run_id, {tracking.SWEEP_DIR_TAG: f"{sweep_dir} (replaced "
                                                     f"{_time.strftime('%Y-%m-%d %H:%M:%S')})"})
    except Exception as exc:  # noqa: BLE001 - MLflow away: the old runs simply keep their folder tag
        print(f"pursuhint: warning: could not tag the replaced sweep's MLflow runs ({tracking.scrub(str(exc))[:200]})",
              file=sys.stderr)


def _check_port(address: str) -> None:
    """``host:port`` must answer within seconds; ray.init would otherwise retry for minutes."""
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
            return
    except (OSError, ValueError) as exc:
        raise PursuhintError(f"cannot connect to the Ray cluster at {address!r} ({exc}); start it with "
                             f"`ray start --head` or `ray up ray_cluster.yaml`, or drop --address "
                             f"to run locally") from None


def _local_resources() -> dict[str, float]:
    """What a local Ray started by this process will have: every CPU core and every visible GPU."""
    import torch

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def _check_resources(cfg: Config, autoscaling: bool = False, total: Optional[dict[str, float]] = None) -> None:
    """A trial asking for more than the cluster has would wait forever: refuse it on a local Ray; on a
    remote cluster (which may still be scaling up from zero workers) warn instead."""
    import ray

    want = cfg.search.resources_per_trial
    total = ray.cluster_resources() if total is None else total
    for kind, need in (("CPU", want.cpu), ("GPU", want.gpu)):
        have = total.get(kind, 0)
        if need > have:
            msg = (f"search.resources_per_trial asks for {need:g} {kind} per trial but the Ray cluster has "
                   f"{have:g}")
            if not autoscaling:
                raise PursuhintError(f"{msg}; lower it (fractions share a GPU) or add nodes")
            print(f"pursuhint: warning: {msg} now; trials wait until the autoscaler adds nodes", file=sys.stderr)


def _prepare_remote(config_yaml: str, progress: bool, threads: int = 1):
    import torch

    from .shared import prepare_shared

    torch.set_num_threads(threads)  # as many as the task holds CPUs: teacher training and the probe pass
    return prepare_shared(config_yaml, progress=progress)


def shared_resources(cfg: Config, nodes: Sequence[dict[str, float]]) -> dict[str, float]:
    """What the shared work asks Ray for: a GPU whenever the trials ask for GPUs (even before a GPU node has
    joined), and ``search.shared_cpus`` CPUs, by default 1 on a CPU sweep and a GPU node's CPUs per GPU (at
    least 2) otherwise. ``nodes`` are the alive nodes' resources (``ray.nodes()[i]["Resources"]``)."""
    gpu = 1 if cfg.search.resources_per_trial.gpu > 0 else 0
    if cfg.search.shared_cpus is not None:
        return {"CPU": float(cfg.search.shared_cpus), "GPU": float(gpu)}
    if not gpu:
        return {"CPU": 1.0, "GPU": 0.0}
    per_gpu = [n.get("CPU", 0) / n["GPU"] for n in nodes if n.get("GPU", 0) >= 1]
    return {"CPU": float(max(2, int(min(per_gpu)) if per_gpu else 2)), "GPU": 1.0}


def run_shared_work(cfg: Config, progress: bool) -> Any:
    """The shared work, once, in a Ray task placed where ``shared_resources`` says. Its resources are reserved
    first (a placement group) so that a cluster that cannot give them within ``search.shared_timeout_s`` stops
    the sweep with one sentence naming what is missing, instead of running the teacher somewhere else."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    need = shared_resources(cfg, nodes)
    bundle = {k: v for k, v in need.items() if v > 0}
    pg = placement_group([bundle])
    try:
        ray.get(pg.ready(), timeout=cfg.search.shared_timeout_s)
    except ray.exceptions.GetTimeoutError:
        remove_placement_group(pg)
        have = ray.cluster_resources()
        raise PursuhintError(
            f"the shared work (teacher, probe pass, similarities) needs {int(need['GPU'])} GPU and "
            f"{need['CPU']:g} CPUs on one node, and the cluster (CPU {have.get('CPU', 0):g}, GPU "
            f"{have.get('GPU', 0):g}) gave none within search.shared_timeout_s = {cfg.search.shared_timeout_s:g} s; "
            f"add a node with them, or set search.resources_per_trial.gpu: 0 to run on CPUs") from None
    try:
        task = ray.remote(_prepare_remote).options(
            num_cpus=need["CPU"], num_gpus=need["GPU"],
            scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=pg))
        return ray.get(task.remote(cfg.to_yaml(), progress, max(1, int(need["CPU"]))))
    finally:
        remove_placement_group(pg)


def _reporter(cfg: Config):
    from ray.tune import CLIReporter

    from .space import short_name

    params = {key: short_name(key) for key in cfg.space}
    params["pursuhint.baseline"] = "baseline"
    return CLIReporter(parameter_columns=params,
                       metric_columns={"val_acc": "val_acc", "epoch": "epoch", "training_iteration": "iter"},
                       max_report_frequency=30, sort_by_metric=True)


def _end_trials_callback(actor_name: str, uri: str, experiment_id: str, parent: str):
    """A Tune callback for trials Tune ends itself: it tells the duplicate index, and marks the MLflow
    run ``stopped`` (ASHA stopped it early) or ``error`` (it failed for good)."""
    from ray.tune import Callback

    class EndTrials(Callback):
        def _tell_index(self, method: str, *args: Any) -> None:
            import ray

            try:
                getattr(ray.get_actor(actor_name), method).remote(*args)
            except ValueError:  # the index is gone (its node died): trials train on their own
                logging.getLogger("pursuhint").info("the duplicate index is gone; %s of %s not recorded", method, args)

        def _mark(self, trial: Any, state: str, status: Optional[str]) -> None:
            self._tell_index("finish_trial", trial.trial_id, state)
            if status is None:
                return
            try:
                runs = [r for tag in (tracking.TRIAL_TAG, tracking.COHORT_TAG)  # a cohort's members have their own
                        for r in tracking.find_runs(uri, experiment_id, **{tag: trial.trial_id,
                                                                           tracking.PARENT_TAG: parent})]
                for run in runs:
                    if run.data.tags.get(tracking.STATUS_TAG) == "running":
                        tracking.set_tags(uri, run.info.run_id, {tracking.STATUS_TAG: status})
                        tracking.end_run(uri, run.info.run_id, status,
                                         "stopped early by ASHA" if status == "stopped" else "")
            except Exception as exc:  # noqa: BLE001 - MLflow away: `report --sync` and the trial's retries catch up
                logging.getLogger("pursuhint").info("could not end trial %s's MLflow run: %s", trial.trial_id, exc)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._mark(trial, "done", _ended_status(trial.last_result or {}))

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._mark(trial, "failed", "error")

        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._tell_index("recovering", trial.trial_id)

    return EndTrials()


def _ended_status(last: dict[str, Any]) -> Optional[str]:
    """For a trial whose last report still said ``running`` (Tune ended it, not the trial itself):
    ``completed`` when it had trained every epoch (ASHA stops trials at max_t too), else ``stopped``."""
    if last.get("status") != "running":
        return None
    total = last.get("epochs_total")
    return "completed" if total and int(last.get("epoch", 0)) >= int(total) else "stopped"


def _log_parent(uri: str, parent: str, cfg: Config) -> None:
    from mlflow.entities import Param

    c = tracking.client(uri)
    run = c.get_run(parent)
    if "num_samples" not in run.data.params:
        c.log_batch(parent, params=[Param("num_samples", str(cfg.search.num_samples)),
                                    Param("searcher", cfg.search.searcher),
                                    Param("scheduler", cfg.search.scheduler),
                                    Param("teacher", cfg.teacher.arch), Param("student", cfg.student.arch),
                                    Param("dataset", cfg.data.dataset), Param("metric", cfg.search.metric)])
        c.log_text(parent, tracking.scrub(cfg.to_yaml()), "config.yaml")
        c.log_dict(parent, cfg.space, "search_space.json")


def _leaderboard(uri: str, parent: str, exp_dir: Optional[Path]) -> list[TrialRow]:
    """The finished sweep's rows: from Tune's folder (the record), or from MLflow when Tune wrote to remote
    storage (empty if MLflow is away then; ``_finish_mlflow`` has said so)."""
    from mlflow.exceptions import MlflowException

    if exp_dir is not None:
        return rows_from_tune(exp_dir)
    try:
        return rows_from_mlflow(uri, parent)
    except MlflowException:
        return []


def _finished_from_mlflow(uri: str, experiment_id: str, parent: str) -> dict[str, dict[str, Any]]:
    """Results of this sweep's finished trials (a resumed sweep's duplicate index starts from them)."""
    out: dict[str, dict[str, Any]] = {}
    try:
        runs = tracking.find_runs(uri, experiment_id, **{tracking.PARENT_TAG: parent})
    except Exception as exc:  # noqa: BLE001 - MLflow away: the index starts from Tune's folder alone
        logging.getLogger("pursuhint").warning("cannot read the finished trials from MLflow (%s); a resumed sweep "
                                               "may train a duplicate again", tracking.scrub(str(exc))[:200])
        return out
    c = tracking.client(uri)
    for run in runs:
        tags = run.data.tags
        key, status = tags.get(tracking.TRAIN_KEY_TAG), tags.get(tracking.STATUS_TAG)
        if not key or status not in ("completed", "diverged") or tags.get(tracking.DUPLICATE_TAG):
            continue
        history: dict[int, dict[str, Any]] = {}
        for name in ("val_acc", "train_loss", "epoch_time", "test_acc", "final_val_acc"):  # a replay ends as it did
            for m in c.get_metric_history(run.info.run_id, name):
                history.setdefault(m.step, {"epoch": m.step})[name] = m.value
        out[key] = {"owner": tags.get(tracking.TRIAL_TAG, ""), "state": "done", "status": status,
                    "run_id": run.info.run_id, "history": [history[s] for s in sorted(history)]}
    return out


def _finish_mlflow(uri: str, experiment_id: str, parent: str, exp_dir: Optional[Path], name: str) -> None:
    """Set aside trials a killed driver lost (see ``sync``), write into MLflow what trials could not (server
    away meanwhile), then the parent's leaderboard; if MLflow is still away, say how to write it later.
    Tune's folder has every result either way."""
    try:
        if exp_dir is None:  # Tune results on remote storage: the trials' own logging is all there is
            finish_parent(uri, parent)
            return
        mark_finished(exp_dir)
        stages = stage_dirs(exp_dir)
        lost = [t for folder in stages for t in set_aside_lost_trials(folder)]
        lost += unreported_lost_trials(uri, experiment_id, parent, stages)
        if lost:
            retire_lost_runs(uri, experiment_id, parent, lost)
            print(f"pursuhint: {len(lost)} trial(s) the killed driver had started but Tune never saved were "
                  f"replaced on --resume; their partial runs are set aside ({', '.join(lost)})", file=sys.stderr)
        summary = sync_sweep(exp_dir, uri)
        if summary.changed:
            print(f"pursuhint: MLflow caught up with Tune's results: {summary}", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - MLflow away: Tune's folder keeps everything
        where = exp_dir or "Tune's results folder"
        print(f"pursuhint: warning: MLflow is missing some of this sweep ({tracking.scrub(str(exc))[:300]}); "
              f"every result is in {where}: run `pursuhint report {name} --sync` when the server is back",
              file=sys.stderr)
