"""The names a trial carries in its Tune config and results (baseline, role, what it confirms, a cohort's
members) and a cohort member's id. Free of torch: the duplicate index's actor imports it."""

from __future__ import annotations

BASELINE_KEY = "pursuhint.baseline"
ROLE_KEY = "pursuhint.role"  # "confirm" in a confirmation trial's config ("" or absent: a search trial)
CONFIRMS_KEY = "pursuhint.confirms"  # the search trial id a confirmation trial repeats, or the baseline's name
COHORT_KEY = "pursuhint.cohort"  # a cohort trial's spec: {COHORT_KEY: [one planned spec per member]}
MEMBERS_KEY = "pursuhint_members"  # a cohort trial's Tune result: JSON {member index: that member's result}
CONFIRM_TRIAL_KEY = "pursuhint.confirm_trial"  # the Tune grid's one key: each value is a planned trial


MEMBER_SEP = "-m"  # between a cohort trial's id and its member's index


def member_id(trial_id: str, index: int) -> str:
    """A cohort member's id: its MLflow run's trial tag and its record's name in every reader."""
    return f"{trial_id}{MEMBER_SEP}{index}"


def owned_by(owner: str, trial_id: str) -> bool:
    """Whether ``owner`` (a trial or cohort member id) belongs to Tune trial ``trial_id``."""
    return owner == trial_id or owner.startswith(trial_id + MEMBER_SEP)
