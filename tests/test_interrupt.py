"""A Ctrl-C that Tune catches must stop the sweep: ``sweep._fit`` tells it from Tune's SIGINT handler, which
Tune puts back only when it was interrupted (a Ray internal, so checked here against the Ray installed)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from pursuhint.errors import SweepInterrupted
from pursuhint.search.sweep import _fit

pytestmark = pytest.mark.slow  # a local Ray


def _trainable(config):
    from ray import tune

    for i in range(config["steps"]):
        time.sleep(0.2)
        tune.report({"step": i})


def _tuner(tmp_path, name: str, steps: int):
    from ray import tune

    return tune.Tuner(_trainable, param_space={"steps": steps},
                      run_config=tune.RunConfig(name=name, storage_path=str(tmp_path), verbose=0))


def test_fit_returns_when_tune_finished_and_raises_when_a_ctrl_c_stopped_it(tmp_path):
    import ray
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import the tests folder
    ray.init(address="local", num_cpus=1, include_dashboard=False)
    try:
        grid = _fit(_tuner(tmp_path, "done", 3), "done")  # finished: Tune's handler stays, no interruption
        assert grid[0].metrics["step"] == 2
        timer = threading.Timer(8.0, os.kill, (os.getpid(), signal.SIGINT))  # once the trial runs
        timer.start()
        try:
            with pytest.raises(SweepInterrupted, match="'stopped' interrupted; its state is saved"):
                _fit(_tuner(tmp_path, "stopped", 300), "stopped")  # 60 s unless stopped
        finally:
            timer.cancel()
    finally:
        ray.shutdown()
