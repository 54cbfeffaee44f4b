"""The readers of a sweep's results: one ``TrialRow`` per trial, from MLflow or from Tune's results folder
(the sweep's record, readable when MLflow is away), ranked the same way; and the confirmation table.

``search.record.SweepRecord`` finds a sweep by its name and calls these; ``search.sync`` and ``run_sweep`` read
rows from here too. Picking hint sets from the rows is ``search.hint_sets``'; ``pursuhint.export`` only writes them
out. Both readers turn a trial's MLflow params and tags into a row with the same function, and a row's columns are
declared once, in ``search/columns.py``.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from .. import tracking
from ..config import config_from_text
from ..errors import PursuhintError

from ..hints.hintset import RECIPE
from . import columns
from .layout import CONFIRMATION_FILE, read_marker
from .space import plain_values
from .trial_keys import BASELINE_KEY, CONFIRMS_KEY, MEMBERS_KEY, ROLE_KEY, member_id


NAN = float("nan")
MLFLOW_KEY = "pursuhint_mlflow"  # in a trial's Tune results: its MLflow run's name, params and tags
FINAL = ("completed", "diverged", "invalid", "stopped", "error")
def _score(self: Any) -> float:
    """The accuracy the row is ranked by (``search.metric``)."""
    return self.best_val_acc if self.metric == "best" else self.final_val_acc


def _positions(self: Any) -> list[int]:
    """The hint points' 1-based positions among the teacher's candidate layers."""
    return [int(p) for p in self.hint_indices.split(",") if p.strip().isdigit()]


def _kind(self: Any) -> str:
    """Searched, stopped, duplicate or the baseline's name (``columns.kind``)."""
    return columns.kind(self.baseline, self.duplicate_of, self.status)


# Besides its columns (``search/columns.py``), a row knows how it was ranked and what the trial's folder holds.
_BOOKKEEPING = [
    ("metric", str, field(default="final")),  # which of final_val_acc / best_val_acc ``rank`` sorted by
    ("epochs", int, field(default=0)),  # the last epoch the trial reported
    ("sampled", dict, field(default_factory=dict)),  # what the searcher sampled (dotted keys)
    ("recipe", dict, field(default_factory=dict)),  # how the student was trained (see ``RECIPE``)
    ("hint_set_path", str, field(default="")),  # the hint set in the trial's newest checkpoint
]

TrialRow = make_dataclass(
    "TrialRow",
    [("trial_id", str)]
    + [(c.field, c.type, field(default=c.default)) for c in columns.COLUMNS
       if c.field != "trial_id" and c.field not in columns.DERIVED]
    + _BOOKKEEPING,
    namespace={"score": property(_score), "positions": property(_positions), "kind": property(_kind),
               "__module__": __name__,
               "__doc__": """One trial of a sweep as the leaderboard, the report plot, export and sync see it: one
    field per recorded column of ``search/columns.py`` (``baseline`` is ``none`` for searched trials;
    ``hint_indices`` are 1-based positions joined by commas; ``final_val_acc`` is the last epoch's
    selection-split accuracy, the newest while the trial runs; ``rank`` and the gains are set by ``rank``), and
    the bookkeeping fields ``metric``, ``epochs``, ``sampled``, ``recipe`` and ``hint_set_path`` (the last three
    known only when read from Tune's folder). ``score`` is the value ``rank`` sorts by."""},
)


def recipe_from_params(params: Mapping[str, str]) -> dict[str, Any]:
    """The recipe fields a trial's params hold (``hint_weight_setting``: ``auto`` or the β it was given)."""
    out: dict[str, Any] = {}
    for name in RECIPE:
        value = params.get("hint_weight" if name == "hint_weight_setting" else name)
        if value is None:
            continue
        if name == "method":
            out[name] = value
        elif name == "method_params":
            out[name] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        elif name == "hint_weight_setting" and value == "auto":
            out[name] = "auto"
        elif name in ("epochs", "seed"):
            out[name] = int(float(value))
        else:
            out[name] = columns.number(value)
    if params.get("threads"):  # what a bit-for-bit rerun needs besides the recipe (``distill`` reads them)
        out["threads"] = int(float(params["threads"]))
    if params.get("device_type"):
        out["device_type"] = str(params["device_type"])
    return out


def row_from_record(trial_id: str, params: Mapping[str, str], tags: Mapping[str, str], **known: Any) -> TrialRow:
    """A row from a trial's MLflow params and tags (as MLflow holds them, or as the trial recorded them
    in Tune's results); ``known`` sets the fields these do not hold (status, best_val_acc, ...)."""
    return TrialRow(**{**columns.from_record(params, tags), "trial_id": trial_id,
                       "recipe": recipe_from_params(params), **known})


def recorded_folder(uri: str, name: str) -> tuple[Optional[Path], Optional[str]]:
    """Where the sweep named ``name`` put its Tune results folder and its Optuna study, as its MLflow parent run
    records them: (the folder when it is a folder here, else None; the study's RDB URL, None when not
    recorded or kept in memory). (None, None) when the store or the sweep cannot be read."""
    try:
        _, parent = find_parent(uri, name)
        tags = tracking.client(uri).get_run(parent).data.tags
    except Exception:  # noqa: BLE001 - no store, no sweep or MLflow away: the caller falls back to the defaults
        return None, None
    folder = Path(tags.get(tracking.SWEEP_DIR_TAG, ""))
    study = tags.get(tracking.OPTUNA_TAG)
    return (folder if str(folder) and folder.is_dir() else None), (study if study and "://" in study else None)


def find_parent(uri: str, name: str) -> tuple[str, str]:
    """(experiment id, newest sweep parent run id) of the sweep named ``name`` in MLflow."""
    c = tracking.client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is None:
        raise PursuhintError(f"no sweep named {name!r} in the MLflow store {uri}; check the name "
                             f"(the config's `name`) or --tracking-uri")
    parents = tracking.find_runs(uri, exp.experiment_id, **{tracking.ROLE_TAG: "sweep"})
    if not parents:
        raise PursuhintError(f"experiment {name!r} in {uri} has no sweep run; run `pursuhint sweep` first")
    parents.sort(key=lambda r: r.info.start_time, reverse=True)
    return exp.experiment_id, parents[0].info.run_id


def rows_from_mlflow(uri: str, parent: str, metric: Optional[str] = None) -> list[TrialRow]:
    """The search stage's trials as MLflow has them (children of run ``parent``, without the confirmation
    stage's runs), ranked by ``metric`` (default: the sweep's ``search.metric``, a param of the parent)."""
    c = tracking.client(uri)
    run = c.get_run(parent)
    exp_id = run.info.experiment_id
    metric = metric or run.data.params.get("metric", "final")
    rows = []
    for run in tracking.find_runs(uri, exp_id, **{tracking.PARENT_TAG: parent}):
        m, tags = run.data.metrics, run.data.tags
        if tags.get(tracking.ROLE_TAG) == "confirm":  # the confirmation stage has its own table
            continue
        rows.append(row_from_record(tags.get(tracking.TRIAL_TAG, ""), run.data.params, tags, run_id=run.info.run_id,
                                 final_val_acc=float(m.get("final_val_acc", m.get("val_acc", NAN))),
                                 best_val_acc=float(m.get("best_val_acc", m.get("val_acc", NAN)))))
    return rank(rows, metric)


@dataclass
class TrialRecord:
    """One trial as Tune's folder has it."""

    trial_id: str
    folder: Path
    results: list[dict[str, Any]]
    record: Optional[dict[str, Any]]  # MLFLOW_KEY, decoded (None if the trial never reported it)
    errored: bool
    artifacts: str = "artifacts"  # where its hint set and atlas are in a checkpoint (a member: m<i>/artifacts)

    @property
    def epochs(self) -> list[dict[str, Any]]:
        """The per-epoch results (epoch ≥ 1), last report of each epoch."""
        out: dict[int, dict[str, Any]] = {}
        for r in self.results:
            if isinstance(r.get("epoch"), int) and r["epoch"] >= 1 and "val_acc" in r and "train_loss" in r:
                out[r["epoch"]] = r
        if not out:  # duplicates replay their owner's history without train_loss
            for r in self.results:
                if isinstance(r.get("epoch"), int) and r["epoch"] >= 1 and "val_acc" in r:
                    out[r["epoch"]] = r
        return [out[e] for e in sorted(out)]

    def status(self, sweep_finished: bool) -> Optional[str]:
        """The trial's final status, or None while it may still be running."""
        last = self.results[-1] if self.results else {}
        status = last.get("status")
        if status == "duplicate":
            return (self.record or {}).get("tags", {}).get(tracking.STATUS_TAG, "completed")
        if status in FINAL:
            return status
        total = last.get("epochs_total")
        if total and int(last.get("epoch", 0)) >= int(total):
            return "completed"
        if not sweep_finished:
            return None
        return "error" if self.errored else "stopped"


def read_trials(exp_dir: Path, silent: bool = False) -> list[TrialRecord]:
    """Every trial folder of the sweep with its results (a torn last line is ignored); with ``silent``
    also the trials that never reported (named by their folder). A cohort trial of the confirmation stage is
    read as one record per member (``<trial id>-m<i>``), each with its own results, as if it had run alone."""
    out = []
    for folder in sorted(p for p in Path(exp_dir).iterdir() if (p / "params.json").exists()):
        results = []
        path = folder / "result.json"
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    results.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        trial_id = next((r["trial_id"] for r in results if r.get("trial_id")), folder.name if silent else "")
        if not trial_id:
            continue
        errored = (folder / "error.txt").exists()
        if any(MEMBERS_KEY in r for r in results):
            out += _member_records(trial_id, folder, results, errored)
        else:
            out.append(TrialRecord(trial_id, folder, results, _mlflow_record(results), errored))
    return out


def _mlflow_record(results: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The newest MLflow record (``MLFLOW_KEY``) in a trial's results, decoded."""
    for r in reversed(results):
        if isinstance(r.get(MLFLOW_KEY), str):
            return json.loads(r[MLFLOW_KEY])
    return None


def _member_records(trial_id: str, folder: Path, results: list[dict[str, Any]], errored: bool) -> list[TrialRecord]:
    """A cohort trial's members: each report carries ``MEMBERS_KEY``, JSON ``{index: [its new results]}``."""
    members: dict[int, list[dict[str, Any]]] = {}
    for r in results:
        if isinstance(r.get(MEMBERS_KEY), str):
            for index, new in json.loads(r[MEMBERS_KEY]).items():
                members.setdefault(int(index), []).extend(new)
    out = []
    for index in sorted(members):
        mid = member_id(trial_id, index)
        own = [{**r, "trial_id": mid} for r in members[index]]
        out.append(TrialRecord(mid, folder, own, _mlflow_record(own), errored, artifacts=f"m{index}/artifacts"))
    return out


def rows_from_tune(exp_dir: Path, metric: Optional[str] = None) -> list[TrialRow]:
    """The sweep's trials as Tune's results folder has them (see ``read_trials``), ranked by ``metric``
    (default: the sweep's ``search.metric``): each trial's recorded MLflow params, its per-epoch results and
    its newest checkpoint's hint set."""
    exp_dir = Path(exp_dir)
    info = read_marker(exp_dir)
    finished = bool(info.get("finished"))
    metric = metric or _sweep_metric(info.get("config_yaml", ""))
    rows = []
    for trial in read_trials(exp_dir, silent=True):
        sampled = json.loads((trial.folder / "params.json").read_text())
        accs = [r["val_acc"] for r in trial.results if isinstance(r.get("val_acc"), (int, float))]
        epochs = [r["epoch"] for r in trial.results if isinstance(r.get("epoch"), int)]
        checkpoints = sorted(trial.folder.glob("checkpoint_*/artifacts/hint_set.json"))
        finals = [r["final_val_acc"] for r in trial.results if isinstance(r.get("final_val_acc"), (int, float))]
        known = {"status": trial.status(finished) or "running", "best_val_acc": float(max(accs)) if accs else NAN,
                 "final_val_acc": float(finals[-1]) if finals else float(accs[-1]) if accs else NAN,
                 "epochs": max(epochs, default=0), "hint_set_path": str(checkpoints[-1]) if checkpoints else "",
                 "sampled": {k: v for k, v in sampled.items() if k != BASELINE_KEY}}
        resolved = [r["hint_weight_resolved"] for r in trial.results if "hint_weight_resolved" in r]
        if trial.record is not None:
            params = {**trial.record["params"], **({"hint_weight_resolved": resolved[-1]} if resolved else {})}
            rows.append(row_from_record(trial.trial_id, params, trial.record["tags"], **known))
        else:  # never reported: only what was sampled is known
            rows.append(_unreported(trial.trial_id, sampled, info.get("config_yaml", ""), known))
    return rank(rows, metric)


def row_from_result(config: Mapping[str, Any], last: Mapping[str, Any], status: str, trial_id: str) -> TrialRow:
    """A search trial's row from its Tune config and last report (what a finished Tune grid holds, also when
    Tune wrote to remote storage); the confirmation stage picks its configurations from these. The recipe's
    numbers come from the config keys their columns name; β is the one the trial trained with."""
    numbers = {c.field: columns.number(config.get(c.key)) for c in columns.COLUMNS
               if c.key and c.type is float and c.field not in ("hint_weight", "hint_ratio")}
    return TrialRow(
        trial_id=trial_id, baseline=config.get(BASELINE_KEY, "") or "none", status=status,
        final_val_acc=columns.number(last.get("final_val_acc", last.get("val_acc"))),
        best_val_acc=columns.number(last.get("best_val_acc")),
        method=str(last.get("method_name", config.get("distill.method", ""))),
        n_hints=columns.count(last.get("n_hints_used")), hint_layers=str(last.get("hint_layer_names", "")),
        hint_weight=columns.number(last.get("hint_weight_resolved", config.get("distill.hint_weight"))),
        sampled={k: v for k, v in config.items() if k not in (BASELINE_KEY, ROLE_KEY, CONFIRMS_KEY)}, **numbers)


def _sweep_metric(config_yaml: str) -> str:
    """``search.metric`` of a sweep's recorded config (``final`` when it cannot be read)."""

    try:
        return config_from_text(config_yaml).search.metric if config_yaml else "final"
    except PursuhintError:
        return "final"


def _unreported(trial_id: str, sampled: dict[str, Any], config_yaml: str, known: dict[str, Any]) -> TrialRow:
    """The row of a trial that never reported (so recorded no params): method and recipe from its config."""
    from ..train.student import kd_only_config  # torch: deferred, a sweep's results are read without it

    baseline = sampled.get(BASELINE_KEY, "") or "none"
    cfg = config_from_text(config_yaml).with_values(plain_values(known["sampled"]))
    if baseline == "kd_only":
        cfg = kd_only_config(cfg)
    return TrialRow(trial_id=trial_id, baseline=baseline, method=cfg.distill.method, hint_weight=0.0,
                    kd_weight=cfg.distill.kd_weight, ce_weight=cfg.distill.ce_weight, lr=cfg.train.lr, **known)


def rank(rows: list[TrialRow], metric: str = "final") -> list[TrialRow]:
    """Sort best first by ``metric`` (``final``: the last epoch's val_acc; ``best``: the best epoch's; ties:
    trial id) and set ``rank``, ``metric``, ``gain_default`` and ``gain_kd`` on each row."""
    for r in rows:
        r.metric = metric
    default = {r.method: r.score for r in rows if r.baseline == "default"}
    kd = next((r.score for r in rows if r.baseline == "kd_only"), NAN)
    rows = sorted(rows, key=lambda r: (-_finite_or(r.score, -1.0), r.trial_id))
    for i, r in enumerate(rows, 1):
        r.rank = i
        r.gain_default = r.score - default.get(r.method, NAN)
        r.gain_kd = r.score - kd
    return rows


def table(rows: list[TrialRow]) -> dict[str, list[Any]]:
    """The rows as columns (``columns.TABLE_FIELDS``), for the parent run's ``leaderboard.json``."""
    return {name: [getattr(r, name) for r in rows] for name in columns.TABLE_FIELDS}


def search_stage_label(rows: list[TrialRow]) -> str:
    """What the search-stage leaderboard is, and what it is sorted by (``search.metric``)."""
    metric = rows[0].metric if rows else "final"
    by = "the best epoch's val_acc" if metric == "best" else "the last epoch's val_acc"
    return (f"Search stage: one seed, selection split (ranked by {by}, search.metric: {metric}, as the "
            f"confirmation stage picks; not a confirmed result)")


def _finite_or(value: float, fallback: float) -> float:
    return value if isinstance(value, (int, float)) and math.isfinite(value) else fallback


def confirmation_table(exp_dir: Optional[Path], uri: Optional[str] = None,
                       parent: Optional[str] = None) -> Optional[dict[str, Any]]:
    """The sweep's confirmation table: ``confirmation.json`` in its Tune folder, else (given ``uri`` and
    ``parent``) the parent run's artifact; None when the sweep has no confirmation stage (yet)."""
    path = exp_dir / CONFIRMATION_FILE if exp_dir is not None else None
    if path is not None and path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    if uri is None or parent is None or CONFIRMATION_FILE not in tracking.artifact_names(uri, parent):
        return None
    with tempfile.TemporaryDirectory() as d:
        path = Path(tracking.client(uri).download_artifacts(parent, CONFIRMATION_FILE, d))
        return json.loads(path.read_text(encoding="utf-8"))
