"""A Ctrl-C that Tune catches must stop the sweep: ``sweep._fit`` tells it from Tune's SIGINT handler, which
Tune puts back only when it was interrupted (a Ray internal, so checked here against the Ray installed)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from pursuhint.errors import SweepInterrupted
from pursuhint.search.sweep import _fit


def _trainable(config):
    from ray import tune

    for i in range(config["steps"]):
        time.sleep(0.2)
        tune.report({"step": i})
        Path(config["running"]).touch()  # the test presses Ctrl-C once a trial runs


def _tuner(tmp_path, name: str, steps: int):
    from ray import tune

    running = tmp_path / f"{name}.running"
    return tune.Tuner(_trainable, param_space={"steps": steps, "running": str(running)},
                      run_config=tune.RunConfig(name=name, storage_path=str(tmp_path), verbose=0))


def _ctrl_c_once(path: Path, stop: threading.Event) -> None:
    """SIGINT to this process (Ctrl-C) once ``path`` exists: the trial has reported, so Tune is running it."""
    while not stop.is_set():
        if path.exists():
            os.kill(os.getpid(), signal.SIGINT)
            return
        time.sleep(0.1)


def test_fit_returns_when_tune_finished_and_raises_when_a_ctrl_c_stopped_it(tmp_path, local_ray):
    grid = _fit(_tuner(tmp_path, "done", 3), "done")  # finished: Tune's handler stays, no interruption
    assert grid[0].metrics["step"] == 2
    stop = threading.Event()
    presser = threading.Thread(target=_ctrl_c_once, args=(tmp_path / "stopped.running", stop), daemon=True)
    presser.start()
    try:
        with pytest.raises(SweepInterrupted, match="'stopped' interrupted; its state is saved"):
            _fit(_tuner(tmp_path, "stopped", 300), "stopped")  # 60 s unless stopped
    finally:
        stop.set()
        presser.join()
