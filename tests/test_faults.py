"""Faults a long sweep meets on shared hardware, injected for real: a trial's worker process SIGKILLed
mid-epoch, the driver interrupted (Ctrl-C) and SIGKILLed, the MLflow server stopped mid-sweep; and trials that diverge or
cannot be trained. Each sweep runs the command line in its own process, as users run it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from pursuhint import tracking
from pursuhint.cli import main
from pursuhint.config import load_config
from pursuhint.errors import PursuhintError
from pursuhint.search.sweep import run_sweep
from pursuhint.search.trial import RESTORED_TAG

from sweep_helpers import (BIN, children, epoch_steps, free_port, kill_tree, start_mlflow_server, stop_group,
                           sweep_argv, trial_lines, tune_results, wait_for, write_config)

EPOCHS = 8  # long enough to kill a trial mid-run (running_trial wants 3 epochs to go), short for the suite


def sweep_env(isolated_runs: Path) -> dict[str, str]:
    return {**os.environ, "PURSUHINT_RUNS": str(isolated_runs)}


def launch(tmp_path: Path, isolated_runs: Path, name: str, samples: int, uri: str = "", output: bool = True,
           confirm_k: int = 0, epochs: int = EPOCHS, seeds: str = "", env: dict[str, str] | None = None):
    """Start ``pursuhint sweep`` on a tiny fifo config in its own session: (process, uri, Tune folder, argv);
    ``seeds`` replaces the confirmation stage's ``seeds: 2`` (e.g. with a race); ``env`` is added to the sweep's
    environment."""
    cfg_path = write_config(tmp_path, name, epochs=epochs, samples=samples, scheduler="fifo", confirm_k=confirm_k)
    if seeds:
        cfg_path.write_text(cfg_path.read_text().replace("seeds: 2}", seeds + "}"))
    uri = uri or f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = sweep_argv(cfg_path, uri, tmp_path / "ray_results")
    pipe = dict(stdout=subprocess.PIPE, stderr=subprocess.STDOUT) if output else \
        dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = subprocess.Popen(argv, env={**sweep_env(isolated_runs), **(env or {})}, text=True, start_new_session=True,
                            **pipe)
    return proc, uri, tmp_path / "ray_results" / name, argv


def one_run_per_trial(uri: str, name: str, n: int):
    """The sweep's child runs, asserting one per trial and ``n`` in all."""
    parent, runs = children(uri, name)
    ids = Counter(r.data.tags[tracking.TRIAL_TAG] for r in runs)
    assert len(ids) == n and set(ids.values()) == {1}, ids
    return parent, runs


def running_trial(exp_dir: Path, before_end: int = 3):
    """The newest result of a trial that has checkpointed an epoch and has ≥ ``before_end`` to go."""
    for lines in tune_results(exp_dir).values():
        live = [r for r in lines if r.get("status") == "running"]
        if live and live[-1]["epoch"] <= live[-1]["epochs_total"] - before_end:
            return live[-1]
    return None


def saved_trial_states(exp_dir: Path) -> dict[str, str]:
    """trial id → status in Tune's newest saved experiment state (what a resumed sweep starts from)."""
    files = sorted(exp_dir.glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        return {}
    try:
        state = json.loads(files[-1].read_text())
    except json.JSONDecodeError:
        return {}
    out = {}
    for trial_json, _meta in state.get("trial_data", []):
        trial = json.loads(trial_json)
        out[trial["trial_id"]] = trial["status"]
    return out


def kill_a_trial_worker(proc: subprocess.Popen, exp_dir: Path) -> dict:
    """SIGKILL the worker process of a trial in ``exp_dir`` that has checkpointed an epoch and has ≥ 3 to go, mid-
    epoch, then wait until Tune has restarted that trial in another worker process; its last result before."""
    try:
        hit = wait_for(lambda: running_trial(exp_dir) or proc.poll() is not None, 300, "a running trial",
                       interval=0.2)
        assert proc.poll() is None, "the sweep ended before a trial could be killed"
        os.kill(hit["pid"], signal.SIGKILL)

        def moved() -> bool:
            lines = trial_lines(tune_results(exp_dir), hit["trial_id"])
            return any(r.get("pid") != hit["pid"] for r in lines) or proc.poll() is not None

        wait_for(moved, 300, "the killed trial's results from a new worker process", interval=0.2)
        assert proc.poll() is None, "the sweep ended before the killed trial came back"
        return hit
    except BaseException:
        if proc.poll() is None:
            stop_group(proc, signal.SIGKILL)
        raise


def stop_once_a_trial_finished(proc: subprocess.Popen, exp_dir: Path, timeout: float, crash: bool = True) -> str:
    """Wait until Tune's saved state in ``exp_dir`` has a finished trial and an unfinished one, then kill the
    driver and everything it started (its local Ray) at once, as in a machine crash, or (``crash`` false) press
    Ctrl-C (SIGINT to the driver); the driver's output, when it was piped."""
    try:
        def saved_a_finished_trial():
            states = saved_trial_states(exp_dir)
            return "TERMINATED" in states.values() and set(states.values()) != {"TERMINATED"} or \
                proc.poll() is not None

        wait_for(saved_a_finished_trial, timeout, f"a finished trial in {exp_dir.name}'s saved state", interval=0.3)
        assert proc.poll() is None, "the sweep ended before the driver could be stopped"
        if crash:
            kill_tree(proc.pid)
        else:
            proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
        return out or ""
    finally:
        if proc.poll() is None:
            stop_group(proc, signal.SIGKILL)


@pytest.mark.slow
def test_a_driver_stopped_in_each_stage_resumes_to_one_run_per_trial_without_rerunning_finished_ones(
        tmp_path, isolated_runs):
    """A search trial's worker process is SIGKILLed mid-epoch: Tune restarts the trial in another worker, from its
    checkpoint, logging into the same run. The user presses Ctrl-C once a search trial has finished; after
    --resume the driver is killed with its local Ray once a confirmation trial has finished (a crash); a second
    --resume ends the sweep, racing on to a second round (a margin too small to call anything equivalent keeps
    comparisons open after 2 seeds), with one MLflow run per trial and per (arm, seed), every epoch logged once,
    and the finished trials not rerun."""
    epochs = 6
    proc, uri, exp_dir, argv = launch(tmp_path, isolated_runs, "t_crash", samples=2, confirm_k=1, epochs=epochs,
                                      seeds="seeds: {min: 2, max: 3}, margin: 0.001, cohort: 2")
    env = sweep_env(isolated_runs)
    hit = kill_a_trial_worker(proc, exp_dir)
    out = stop_once_a_trial_finished(proc, exp_dir, 400, crash=False)
    assert proc.returncode == 130 and "--resume" in out, out[-3000:]  # interrupted, and told how to go on
    # a quiet terminal: the libraries' INFO lines go to the sweep's log file, not to the user's screen
    log = (exp_dir / "pursuhint.log").read_text()
    for noise in ("Creating initial MLflow database tables", "A new study created"):
        assert noise not in out and noise in log, noise
    parent, runs = children(uri, "t_crash")
    assert parent.info.status == "KILLED"  # MLflow shows the interrupted sweep as such
    killed = next(r for r in runs if r.data.tags[tracking.TRIAL_TAG] == hit["trial_id"])
    assert hit["epoch"] <= int(killed.data.tags[RESTORED_TAG]) <= epochs  # its checkpoint, not scratch
    statuses = Counter(r.info.status for r in runs)
    assert statuses["FINISHED"] >= 1 and set(statuses) <= {"FINISHED", "KILLED"}, statuses
    finished = {t for t, s in saved_trial_states(exp_dir).items() if s == "TERMINATED"}
    assert finished
    lines_before = {v[0]["trial_id"]: len(v) for v in tune_results(exp_dir).values() if v}

    again = subprocess.Popen(argv + ["--resume"], env=env, text=True, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop_once_a_trial_finished(again, exp_dir.parent / "t_crash-confirm", 500)
    resumed = subprocess.run(argv + ["--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "Confirmation stage: racing 2-3 seeds" in resumed.stdout
    table = json.loads((exp_dir / "confirmation.json").read_text())
    arms = [c["seeds"] for c in table["configurations"]] + [b["seeds"] for b in table["baselines"]]
    assert len(arms) == 6 and table["n_seeds"] == 3  # the race went on to a third seed after the resume
    assert (exp_dir.parent / "t_crash-confirm-round2").is_dir()
    n_confirm = sum(len(seeds) for seeds in arms)
    assert n_confirm > 6 * 2
    # 2 searched + 2 baselines; 6 arms × 2 seeds, and the third seed of the arms still racing
    parent, runs = one_run_per_trial(uri, "t_crash", 4 + n_confirm)
    assert parent.data.tags[tracking.STATUS_TAG] == "completed"
    search = [r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "search"]
    assert len(search) == 4 and all(r.data.tags[tracking.STATUS_TAG] == "completed" for r in search)
    for run in search:
        assert epoch_steps(uri, run.info.run_id) == list(range(1, epochs + 1)), run.info.run_name
    after = {v[0]["trial_id"]: len(v) for v in tune_results(exp_dir).values() if v}
    for trial_id in finished:  # not rerun: no new results
        assert after[trial_id] == lines_before[trial_id], trial_id
    confirm = [r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "confirm"]
    keys = Counter((r.data.tags["pursuhint.confirms"], r.data.tags[tracking.BASELINE_TAG],
                    r.data.tags["pursuhint.seed"]) for r in confirm)
    assert len(keys) == n_confirm and set(keys.values()) == {1}, keys  # one run per (arm, seed)
    assert any(tracking.COHORT_TAG in r.data.tags for r in confirm)  # arms trained in cohorts of 2, resumed
    assert all("test_acc" in r.data.metrics for r in confirm)
    assert (exp_dir / "confirmation.json").is_file()


@pytest.mark.slow
def test_mlflow_server_away_mid_sweep_then_report_sync(tmp_path, isolated_runs, capsys):
    """The server is killed once a trial has logged an epoch through it: the sweep trains on and says how to
    sync; with the server back, ``report --sync`` writes what it missed, and a second sync writes nothing. The
    sweep makes no HTTP retries (a user setting, which wins over the sweep's fail-fast default): a refused
    connection fails at once, so nothing is waited for that the test does not need."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_mlflow_server(tmp_path, port)
    proc, _, _, _ = launch(tmp_path, isolated_runs, "t_away", samples=1, uri=uri,
                           env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
    storage = tmp_path / "ray_results"
    env = sweep_env(isolated_runs)
    try:
        def logged_an_epoch():  # by a trial still training: its own run, opened through the server
            try:
                _, runs = children(uri, "t_away")
                return any(r.info.status == "RUNNING" and epoch_steps(uri, r.info.run_id) for r in runs)
            except Exception:  # noqa: BLE001 - the store is being killed: any failure means look again
                return proc.poll() is not None

        wait_for(logged_an_epoch, 300, "a first epoch in MLflow from a running trial", interval=0.3)
        assert proc.poll() is None, "the sweep ended before the server could be stopped"
        stop_group(server, signal.SIGKILL)  # the server goes away (a crash); training must go on
        out, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            stop_group(proc, signal.SIGKILL)
        stop_group(server)
    assert proc.returncode == 0, out[-4000:]
    assert "report t_away --sync" in out
    results = tune_results(storage / "t_away")  # Tune's results have every epoch of every trial
    assert sorted(len([r for r in v if r.get("status") == "running"]) for v in results.values()) == [EPOCHS] * 3

    server = start_mlflow_server(tmp_path, port)  # back, with what it had before it went away
    try:
        parent, runs = children(uri, "t_away")
        missing = 3 * EPOCHS - sum(len(epoch_steps(uri, r.info.run_id)) for r in runs)
        assert missing > 0 and parent.data.tags.get(tracking.STATUS_TAG) != "completed"
        report = [str(BIN / "pursuhint"), "report", "t_away", "--sync", "--storage-path", str(storage)]
        synced = subprocess.run(report, env=env, capture_output=True, text=True, timeout=300)
        assert synced.returncode == 0, synced.stdout[-3000:] + synced.stderr[-3000:]
        assert "synced" in synced.stdout and "3 trials" in synced.stdout
        parent, runs = one_run_per_trial(uri, "t_away", 3)
        assert parent.data.tags[tracking.STATUS_TAG] == "completed"
        client = tracking.client(uri)
        for run in runs:
            assert run.data.tags[tracking.STATUS_TAG] == "completed", run.info.run_name
            assert epoch_steps(uri, run.info.run_id) == list(range(1, EPOCHS + 1)), run.info.run_name
            assert run.data.params["method"] in ("at", "kd_only") and "lr" in run.data.params
            if run.data.params["hint_layers"]:
                assert "hint_set.json" in {f.path for f in client.list_artifacts(run.info.run_id)}
        assert "leaderboard.json" in {f.path for f in client.list_artifacts(parent.info.run_id)}
        capsys.readouterr()
        assert main(report[1:]) == 0  # again, in this process: nothing left to write
        assert "0 MLflow runs created, 0 epochs" in capsys.readouterr().out
    finally:
        stop_group(server, signal.SIGKILL)  # its data is read: no need to wait for a graceful stop


def test_diverging_and_untrainable_trials_end_with_their_status_and_the_sweep_goes_on(golden_sweep):
    """The golden sweep's plugin method trains with β = 1e30 and pairs hints by stage ends: its default hints (3
    stage ends) diverge in the first epoch; its uniform hints at K = 2 cannot pair with resnet8's 3 stages and end
    ``invalid``, reported once and not retried; AT and KD only complete, and the confirmation stage goes on."""
    from golden import NAME

    g = golden_sweep
    by_kind = {(r.baseline, r.method): r.status for r in g.result.leaderboard}
    assert by_kind[("default", "toy_meanmatch")] == "diverged" and by_kind[("uniform", "toy_meanmatch")] == "invalid"
    assert by_kind[("default", "at")] == by_kind[("uniform", "at")] == by_kind[("kd_only", "kd_only")] == "completed"
    assert g.result.confirmation["configurations"], "the sweep went on to confirm AT's configuration"
    _, runs = children(g.uri, NAME)
    search = {(r.data.tags[tracking.BASELINE_TAG], r.data.params["method"]): r for r in runs
              if r.data.tags.get(tracking.ROLE_TAG) == "search"}
    diverged, invalid, kd = (search[k] for k in (("default", "toy_meanmatch"), ("uniform", "toy_meanmatch"),
                                                   ("kd_only", "kd_only")))
    assert invalid.data.tags[tracking.STATUS_TAG] == "invalid" and "stage_ends" in invalid.data.tags["pursuhint.error"]
    assert diverged.data.tags[tracking.STATUS_TAG] == "diverged" and "lr" in diverged.data.tags["pursuhint.message"]
    assert (diverged.info.status, invalid.info.status, kd.info.status) == ("FAILED", "FAILED", "FINISHED")
    assert "lr" in diverged.data.tags[tracking.REASON_TAG] and invalid.data.tags[tracking.REASON_TAG]
    assert not kd.data.tags.get(tracking.REASON_TAG) and kd.data.tags[tracking.STATUS_TAG] == "completed"
    results = tune_results(g.experiment_dir)
    last = Counter(lines[-1]["status"] for lines in results.values())
    # a completed trial's last report is its last epoch ("running"); the others say how they ended
    want = Counter("running" if r.status == "completed" else r.status for r in g.result.leaderboard)
    assert last == want and last["invalid"] >= 1 and last["diverged"] >= 1, (last, want)
    invalid_lines = [lines for lines in results.values() if lines[-1]["status"] == "invalid"]
    assert all(len(lines) == 1 for lines in invalid_lines)  # reported once, not retried


def test_resources_a_trial_can_never_get_are_refused_before_ray_starts(tmp_path):
    import ray

    cfg = load_config(write_config(tmp_path, "t_greedy"))
    for want, kind in (({"gpu": 64}, "GPU"), ({"cpu": 4096}, "CPU")):
        greedy = cfg.with_values({f"search.resources_per_trial.{k}": v for k, v in want.items()})
        with pytest.raises(PursuhintError, match=rf"asks for \d+ {kind} per trial but the Ray cluster has"):
            run_sweep(greedy, tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", storage_path=str(tmp_path / "rr"))
        assert not ray.is_initialized()
    assert not (tmp_path / "rr").exists() and not (tmp_path / "m.db").exists()
