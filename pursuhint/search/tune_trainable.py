"""The Tune function trainable of a sweep: one trial (``trial.run_one``) or, in the confirmation stage, a
cohort: the arms of one seed trained together (``train.student.train_cohort``: one loader pass per epoch and
one teacher forward per batch), each ending exactly as it would have alone.

Each member keeps its own MLflow child run (its trial tag is ``<trial id>-m<i>``, tagged ``pursuhint.cohort``
with the Tune trial's id), with the same params, tags and metrics as a trial of its own. The cohort's Tune
results carry every member's as JSON under ``MEMBERS_KEY`` (``{index: [its new results]}``), so the readers
(``results.read_trials``) see one record per member; its checkpoint holds a folder per member (``m<i>/``).

.. code-block:: yaml

    search: {confirm: {seeds: {min: 3, max: 10}, cohort: auto}}
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ray import tune

from .. import tracking
from ..config import config_from_text
from ..infra.devices import runtime_device
from ..train.student import CohortMember, train_cohort
from .shared import SharedWork
from .trial_keys import COHORT_KEY, CONFIRM_TRIAL_KEY, MEMBERS_KEY, member_id
from .trial import (STATE_FILE, Arm, SweepInfo, _claim, _epoch_reporter, _quiet_worker, _restore, _tune_metrics,
                        end_arm, epoch_metrics, index_restored, prepare_arm, replayed, run_one)


def run_trial(config: dict[str, Any], shared: SharedWork, sweep: SweepInfo) -> None:
    """The Tune function trainable: a cohort of the confirmation stage's arms, or one trial."""
    config = config.get(CONFIRM_TRIAL_KEY, config)  # a confirmation trial's spec comes wrapped (one grid entry)
    config_from_text(shared.config_yaml)  # imports the config's plugins: the teacher may be a user's model
    if COHORT_KEY in config:
        run_cohort(list(config[COHORT_KEY]), shared, sweep)
    else:
        run_one(config, shared, sweep)


class _Reports:
    """A cohort's Tune results: each member's new results since the last report, sent as one report (with the
    cohort's checkpoint) after every epoch, and the members' final results at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.new: dict[int, list[dict[str, Any]]] = {}
        self.last: dict[int, dict[str, Any]] = {}

    def add(self, index: int, line: dict[str, Any]) -> None:
        self.new.setdefault(index, []).append(line)
        self.last[index] = {**self.last.get(index, {}), **line}

    def finish(self, index: int, line: dict[str, Any]) -> None:
        """The member's final result: its last one with ``line`` (its status) over it."""
        self.add(index, {**self.last.get(index, {}), **line})

    def send(self, epoch: int, final: bool = False) -> None:
        if not self.new and not final:
            return
        if final:  # the last report holds every member's final result
            for i, last in self.last.items():
                if self.new.get(i, [None])[-1] != last:
                    self.new.setdefault(i, []).append(last)
        line = {"epoch": epoch, "status": "ended" if final else "running", "val_acc": cohort_val_acc(self.last),
                MEMBERS_KEY: json.dumps({str(i): v for i, v in sorted(self.new.items())}, default=str)}
        self.new = {}
        checkpoint = None if final else tune.Checkpoint.from_directory(str(self.workdir))
        tune.report(line, checkpoint=checkpoint)


NO_RESULT = ("invalid", "error")  # a member's final statuses without an accuracy of its own: none is counted


def cohort_val_acc(last: dict[int, dict[str, Any]]) -> float:
    """A cohort's Tune ``val_acc``: the mean over its members that have a result (an invalid member trained
    nothing; a failed one ended without a result); 0 while none has one."""
    accs = [float(v["val_acc"]) for v in last.values()
            if v.get("status") not in NO_RESULT and isinstance(v.get("val_acc"), (int, float))]
    return sum(accs) / len(accs) if accs else 0.0


def run_cohort(specs: list[dict[str, Any]], shared: SharedWork, sweep: SweepInfo) -> None:
    """Train the planned arms as one cohort (see the module docstring); a member that cannot be built ends
    ``invalid``, a duplicate replays its owner's result, and the others train together, each with its run."""
    _quiet_worker(sweep)
    trial_id = tune.get_context().get_trial_id()
    teacher = shared.teacher(runtime_device())
    workdir = Path(tempfile.mkdtemp(prefix="pursuhint-cohort-"))
    reports = _Reports(workdir)
    cohort_tag = {tracking.COHORT_TAG: trial_id}
    training: list[tuple[int, Arm, Any, Path]] = []
    for i, spec in enumerate(specs):
        mid, folder = member_id(trial_id, i), workdir / f"m{i}"
        folder.mkdir()
        arm = prepare_arm(spec, shared, sweep, teacher, mid, folder, cohort_tag)
        if isinstance(arm, dict):  # cannot be built: ended invalid on its own run
            reports.finish(i, arm)
            continue
        index, claim = _claim(sweep, arm.key, mid, wait=False)  # a cohort never waits: none can wait on another
        if claim["role"] == "wait":  # another trial trains the same student: this member trains it too
            index, claim = None, {"role": "owner"}
        if claim["role"] == "reuse":
            for line in replayed(claim, arm.tracker, arm.record):
                reports.add(i, line)
            continue
        training.append((i, arm, index, folder))
    _restore_members(workdir, trial_id, training, reports)
    members = []
    for i, arm, index, folder in training:
        best = float(reports.last.get(i, {}).get("best_val_acc", 0.0))
        callback = _epoch_reporter(arm.tracker, index, arm.key, arm.trial_id, folder, arm.facts, arm.record, best,
                                   send=lambda line, i=i: reports.add(i, line))
        members.append(CohortMember(arm.cfg, arm.hint_set, folder, [callback], STATE_FILE))
    results = train_cohort(members, teacher, shared.dataset, teacher_sha256=shared.teacher_sha256,
                           evaluate_test=True, after_epoch=reports.send) if members else []
    for (i, arm, index, _), result in zip(training, results):
        if result.fit.error is not None:
            arm.failed(index, result.fit.message)
            reports.finish(i, {"status": "error", "error": result.fit.message[:500]})
            continue
        line = end_arm(result, arm, index)
        reports.finish(i, line if line is not None else {"status": "completed"})
    reports.send(max((len(r.fit.history) for r in results), default=0), final=True)
    shutil.rmtree(workdir, ignore_errors=True)


def _restore_members(workdir: Path, trial_id: str, training: list[tuple[int, Arm, Any, Path]],
                     reports: _Reports) -> None:
    """A retried or resumed cohort continues each member from its folder in Tune's newest checkpoint; a member
    restored after its last epoch reports its final result again (the cohort's last report must hold it)."""
    for i, arm, index, folder in training:
        history = _restore(folder, arm.trial_id, arm.tracker, arm.record, subfolder=f"m{i}")
        index_restored(index, arm.key, arm.trial_id, history)
        if history:
            best = max(h.val_acc for h in history)
            reports.last[i] = {**_tune_metrics(epoch_metrics(history[-1], best)), **arm.facts}

