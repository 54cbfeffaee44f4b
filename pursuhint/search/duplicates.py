"""Duplicate trials: two trials that resolve to the same hint set, method, weights and recipe train
the same student, so the second reuses the first one's result instead of training again.

A small Ray actor, named per sweep, holds ``train key → owner trial, state, per-epoch history``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Optional

import ray

from ..config import Config
from ..distill.methods import hint_weight_for, own_params
from .space import owned_by


def train_key(cfg: Config, hint_indices: Optional[list[int]]) -> str:
    """What determines a trained student: the hint points and everything in student/distill/train/data."""
    dump = cfg.model_dump(mode="json")
    payload = {
        "hints": hint_indices,
        "student": dump["student"], "train": dump["train"], "data": dump["data"], "seed": dump["seed"],
        "distill": {**dump["distill"], "hint_weight": hint_weight_for(cfg.distill.method, cfg.distill.hint_weight),
                    "params": own_params(cfg.distill.method, cfg.distill.params)},  # only what the method gets
        "granularity": dump["selection"]["granularity"],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


class DuplicateIndex:
    """``claim`` a key: the first trial owns it and trains; later ones wait for it and reuse its history.
    (Plain class, so its rules are testable without Ray; the sweep runs it as the Ray actor ``DuplicateIndexActor``.)"""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}

    def seed(self, entries: dict[str, dict[str, Any]]) -> None:
        """Finished results from earlier sessions of the same sweep (read back from MLflow)."""
        for key, entry in entries.items():
            self.entries.setdefault(key, entry)

    def claim(self, key: str, trial_id: str) -> dict[str, Any]:
        entry = self.entries.get(key)
        if entry is None or entry["owner"] == trial_id or entry["state"] == "failed":
            self.entries[key] = {"owner": trial_id, "state": "running", "history": [], "run_id": None,
                                 "status": None}
            return {"role": "owner"}
        if entry["state"] == "running":
            return {"role": "wait", "owner": entry["owner"]}
        return {"role": "reuse", **entry}

    def update(self, key: str, trial_id: str, stats: dict[str, Any], run_id: Optional[str] = None) -> None:
        entry = self.entries.get(key)
        if entry and entry["owner"] == trial_id:
            entry["history"].append(stats)
            entry["run_id"] = run_id or entry["run_id"]

    def finish(self, key: str, trial_id: str, state: str, status: Optional[str] = None) -> None:
        entry = self.entries.get(key)
        if entry and entry["owner"] == trial_id:
            entry["state"] = state
            entry["status"] = status

    def recovering(self, trial_id: str) -> None:
        """The owner's worker died and Tune restarts it: its waiters must not wait on it (they may hold
        the very resources it needs), so the key goes to whichever trial claims it next (a cohort's members
        are the trial's too)."""
        for entry in self.entries.values():
            if owned_by(entry["owner"], trial_id) and entry["state"] == "running":
                entry["state"] = "failed"

    def finish_trial(self, trial_id: str, state: str) -> None:
        """Called by the driver when Tune ends a trial (e.g. ASHA stopped it, or it errored)."""
        for entry in self.entries.values():
            if owned_by(entry["owner"], trial_id) and entry["state"] == "running":
                entry["state"] = state
                entry["status"] = entry.get("status") or ("stopped" if state == "done" else "error")

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return self.entries


DuplicateIndexActor = ray.remote(num_cpus=0)(DuplicateIndex)
