"""The sweep's Tune callbacks: what the driver does when Tune itself ends a trial (ASHA stopped it, it failed
for good) or restores one, which the trial cannot report itself."""

from __future__ import annotations

import logging
from typing import Any, Optional

import ray
from ray.tune import Callback

from .. import tracking


class EndTrials(Callback):
    """For trials Tune ends itself: tells the duplicate index (the actor named ``actor_name``), and marks the
    trial's MLflow run(s) under ``parent`` ``stopped`` (ASHA stopped it early) or ``error`` (it failed for good)."""

    def __init__(self, actor_name: str, uri: str, experiment_id: str, parent: str) -> None:
        self.actor_name = actor_name
        self.uri = uri
        self.experiment_id = experiment_id
        self.parent = parent

    def _tell_index(self, method: str, *args: Any) -> None:
        try:
            getattr(ray.get_actor(self.actor_name), method).remote(*args)
        except ValueError:  # the index is gone (its node died): trials train on their own
            logging.getLogger("pursuhint").info("the duplicate index is gone; %s of %s not recorded", method, args)

    def _mark(self, trial: Any, state: str, status: Optional[str]) -> None:
        self._tell_index("finish_trial", trial.trial_id, state)
        if status is None:
            return
        uri = self.uri
        try:
            runs = [r for tag in (tracking.TRIAL_TAG, tracking.COHORT_TAG)  # a cohort's members have their own
                    for r in tracking.find_runs(uri, self.experiment_id, **{tag: trial.trial_id,
                                                                            tracking.PARENT_TAG: self.parent})]
            for run in runs:
                if run.data.tags.get(tracking.STATUS_TAG) == "running":
                    tracking.set_tags(uri, run.info.run_id, {tracking.STATUS_TAG: status})
                    tracking.end_run(uri, run.info.run_id, status, "stopped early by ASHA" if status == "stopped" else "")
        except Exception as exc:  # noqa: BLE001 - MLflow away: `report --sync` and the trial's retries catch up
            logging.getLogger("pursuhint").info("could not end trial %s's MLflow run: %s", trial.trial_id, exc)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial Tune completed: ``completed`` or ``stopped`` unless the trial said how it ended itself."""
        self._mark(trial, "done", ended_status(trial.last_result or {}))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial that failed for good (its retries spent): ``error``."""
        self._mark(trial, "failed", "error")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial Tune restarts after its worker died: the duplicate index stops others waiting on its work."""
        self._tell_index("recovering", trial.trial_id)


def ended_status(last: dict[str, Any]) -> Optional[str]:
    """For a trial whose last report still said ``running`` (Tune ended it, not the trial itself):
    ``completed`` when it had trained every epoch (ASHA stops trials at max_t too), else ``stopped``."""
    if last.get("status") != "running":
        return None
    total = last.get("epochs_total")
    return "completed" if total and int(last.get("epoch", 0)) >= int(total) else "stopped"
