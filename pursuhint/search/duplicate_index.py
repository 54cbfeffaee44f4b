"""The duplicate index: ``train key → owner trial, state, per-epoch history``, held by a small Ray actor named per
sweep (``train_key`` in ``duplicates.py`` makes the keys). Free of torch, so the actor's worker starts in about a
second: of the package it imports only ``trial_keys``.
"""

from __future__ import annotations

from typing import Any, Optional

import ray

from .trial_keys import owned_by


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
