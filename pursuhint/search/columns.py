"""A trial's columns, each declared once: where its value comes from (config key, MLflow param or tag), its
short name, how a cell shows it and which tables show it.

``TrialRow`` (``search/results.py``), the trial's MLflow params (``trial.trial_params``), both readers of a
sweep, the parent run's ``leaderboard.json``, the text leaderboard (``pursuhint report``) and the report page's
leaderboard all derive from ``COLUMNS``; ``tests/test_columns.py`` checks that they agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from .. import tracking

NAN = float("nan")


@dataclass(frozen=True)
class Column:
    """One trial column.

    ``field`` is the ``TrialRow`` attribute and the ``leaderboard.json`` column; ``key`` the config key it
    comes from (its searched values are shown and logged under ``param``); ``param`` / ``tag`` the MLflow param
    or tag that records it (``read`` overrides how a recorded param is read back); ``head`` the leaderboards'
    heading (empty: not shown), ``text`` whether the terminal's leaderboard shows it too; ``digits`` /
    ``signed`` the cell's format; ``empty`` what a cell shows for an empty string.
    """

    field: str
    type: type
    default: Any
    key: str = ""
    param: str = ""
    tag: str = ""
    read: Optional[Callable[[Mapping[str, Any]], Any]] = None
    head: str = ""
    text: bool = True
    digits: int = 2
    signed: bool = False
    empty: str = ""


def _hint_weight(params: Mapping[str, Any]) -> Any:
    """The β a trial trained with: its calibrated value when the config said ``auto``, else the one given."""
    return params.get("hint_weight_resolved", params.get("hint_weight"))


def _hint_ratio(params: Mapping[str, Any]) -> Any:
    """r of a calibrated β; none when β was given (r did not matter)."""
    return params.get("hint_ratio") if params.get("hint_weight") == "auto" else None


# In the leaderboards' order; columns without a heading are recorded and read back but not shown.
COLUMNS: tuple[Column, ...] = (
    Column("rank", int, 0, head="rank"),
    Column("trial_id", str, "", tag=tracking.TRIAL_TAG, head="trial", text=False),
    Column("run_id", str, ""),
    Column("final_val_acc", float, NAN, head="val_acc"),
    Column("best_val_acc", float, NAN, head="best"),
    Column("hint_indices", str, "", param="hint_indices", head="hints", empty="-"),
    Column("hint_layers", str, "", param="hint_layers"),
    Column("similarity", str, "none", key="selection.similarity", param="similarity", head="similarity"),
    Column("algorithm", str, "none", key="selection.algorithm", param="algorithm", head="algorithm"),
    Column("center", str, "none", key="selection.center", param="center", head="center"),
    Column("n_hints", int, 0, key="selection.n_hints", param="n_hints"),
    Column("method", str, "", key="distill.method", param="method", head="method"),
    Column("hint_weight", float, NAN, key="distill.hint_weight", param="hint_weight", read=_hint_weight,
           head="hint_w", digits=4),
    Column("hint_ratio", float, NAN, key="distill.hint_ratio", param="hint_ratio", read=_hint_ratio,
           head="ratio", digits=3),
    Column("kd_weight", float, NAN, key="distill.kd_weight", param="kd_weight", head="kd_w", digits=3),
    Column("ce_weight", float, NAN, key="distill.ce_weight", param="ce_weight", head="ce_w", digits=3),
    Column("lr", float, NAN, key="train.lr", param="lr", head="lr", digits=4),
    Column("gain_default", float, NAN, head="vs_default", signed=True),
    Column("gain_kd", float, NAN, head="vs_kd", signed=True),
    Column("kind", str, "", head="kind"),
    Column("status", str, "", tag=tracking.STATUS_TAG, head="status", text=False),
    Column("baseline", str, "none", tag=tracking.BASELINE_TAG),
    Column("duplicate_of", str, "", tag=tracking.DUPLICATE_TAG),
    Column("student_layers", str, "", param="student_layers"),
    Column("n_candidates", int, 0, param="n_candidates"),
)
BY_FIELD: dict[str, Column] = {c.field: c for c in COLUMNS}
DERIVED = ("kind",)  # computed from other columns (a ``TrialRow`` property), never recorded
TABLE_FIELDS: tuple[str, ...] = tuple(c.field for c in COLUMNS)  # the columns of ``leaderboard.json``
SHORT_NAMES: dict[str, str] = {c.key: c.param for c in COLUMNS if c.key}  # config key → Tune column, MLflow param


def kind(baseline: str, duplicate_of: str, status: str) -> str:
    """What a row is: the baseline's name, ``duplicate`` (a reused trial), ``stopped`` (ASHA stopped it early:
    its accuracy is an early epoch's) or ``searched``."""
    if baseline not in ("", "none"):
        return baseline
    if duplicate_of:
        return "duplicate"
    return "stopped" if status == "stopped" else "searched"


def number(value: Any) -> float:
    """A recorded number (a string in MLflow), NaN when missing or unreadable."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return NAN


def count(value: Any) -> int:
    """A recorded count, 0 when missing."""
    read = number(value)
    return int(read) if math.isfinite(read) else 0


def from_record(params: Mapping[str, Any], tags: Mapping[str, Any]) -> dict[str, Any]:
    """The recorded columns' values from a trial's MLflow params and tags (as MLflow holds them, or as the
    trial wrote them into Tune's results); a missing text param reads as the empty string."""
    out: dict[str, Any] = {}
    for c in COLUMNS:
        if c.tag:
            out[c.field] = tags.get(c.tag, c.default)
        elif c.param:
            value = c.read(params) if c.read else params.get(c.param)
            out[c.field] = number(value) if c.type is float else count(value) if c.type is int else (
                "" if value is None else str(value))
    return out


def cell(row: Any, column: Column) -> str:
    """One leaderboard cell as text (``-`` for a missing number or an empty hint list); the text and the HTML
    leaderboards both show these."""
    value = getattr(row, column.field)
    if column.type is float:
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return "-"
        if column.signed:
            return f"{value:+.{column.digits}f}"
        text = f"{value:.{column.digits}f}"
        return text.rstrip("0").rstrip(".") if column.digits > 2 else text
    return str(value) or column.empty


def shown(text: bool = False) -> list[Column]:
    """The leaderboard's columns: the report page's (all with a heading), or the terminal's (``text``)."""
    return [c for c in COLUMNS if c.head and (c.text or not text)]


def format_leaderboard(rows: list[Any], limit: Optional[int] = None) -> str:
    """A plain-text table of the leaderboard (rows from ``search.results``, ranked): ``val_acc`` is the last
    epoch's selection-split accuracy, ``best`` the best epoch's; ``rank`` and the gains follow ``search.metric``;
    ``kind`` says searched, stopped (early, by ASHA), duplicate (reused) or the baseline's name."""
    columns = shown(text=True)
    lines = [tuple(c.head for c in columns)]
    lines += [tuple(cell(r, c) for c in columns) for r in rows[:limit]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)
