"""Picking a sweep's hint sets from its rows (the confirmed configurations', else the best rows'), and a trial's atlas."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

from .. import tracking
from ..errors import PursuhintError
from ..hints.hintset import HintSet
from .results import TrialRow


def top_hint_sets(rows: list[TrialRow], top: int = 1, *, sweep: str = "", parent: str = "",
                  uri: Optional[str] = None) -> list[HintSet]:
    """The hint sets of the ``top`` best rows with distinct hint points, scored and with provenance.

    Each is read from the trial's Tune checkpoint (``hint_set_path``) or, given ``uri``, from its MLflow
    run's ``hint_set.json``; a trial whose hint set cannot be read is passed over.
    """
    load = _loader(uri)
    out: list[HintSet] = []
    seen: set[str] = set()
    for row in rows:
        if not row.hint_indices or row.hint_indices in seen or not math.isfinite(row.score):
            continue
        hs = load(row)
        if hs is None:
            continue
        seen.add(row.hint_indices)
        hs.score = row.score
        # the recipe once, under its own names (``hint_weight`` is the β it trained with, the resolved one when
        # ``hint_weight_setting`` is auto); JSON has no NaN, so fields the trial's params lack are left out
        recipe = {k: v for k, v in row.recipe.items() if not (isinstance(v, float) and not math.isfinite(v))}
        hs.provenance.update({**recipe, "method": row.method, "hint_weight": row.hint_weight,
                              "kd_weight": row.kd_weight, "lr": row.lr, "score_metric": f"{row.metric}_val_acc",
                              "sweep": sweep, "trial_id": row.trial_id, "mlflow_run_id": row.run_id,
                              "sweep_run_id": parent, "baseline": row.baseline, "student_layers": row.student_layers})
        if math.isfinite(row.ce_weight):
            hs.provenance["ce_weight"] = row.ce_weight
        out.append(hs)
        if len(out) >= top:
            break
    return out


def layer_atlas_png(row: TrialRow, uri: Optional[str] = None) -> Optional[bytes]:
    """The trial's ``layer_atlas.png`` (its hint points over the teacher's similarity matrix, default hints marked):
    from its Tune checkpoint beside ``hint_set_path``, else, given ``uri``, from its MLflow run; None when neither
    has it (a duplicate trial has no checkpoint of its own)."""
    if row.hint_set_path:
        path = Path(row.hint_set_path).with_name("layer_atlas.png")
        if path.is_file():
            return path.read_bytes()
    if uri is None or not row.run_id:
        return None
    from mlflow.exceptions import MlflowException  # mlflow: loaded only when MLflow is read

    with tempfile.TemporaryDirectory() as d:
        try:
            return Path(tracking.client(uri).download_artifacts(row.run_id, "layer_atlas.png", d)).read_bytes()
        except (MlflowException, OSError):
            return None


def _loader(uri: Optional[str]) -> Callable[[TrialRow], Optional[HintSet]]:
    def load(row: TrialRow) -> Optional[HintSet]:
        if row.hint_set_path:
            return HintSet.load(row.hint_set_path)
        if uri is None or not row.run_id:
            return None
        from mlflow.exceptions import MlflowException  # mlflow: loaded only when MLflow is read

        with tempfile.TemporaryDirectory() as d:
            try:  # a run whose hint set is missing or unreadable is passed over
                return HintSet.load(tracking.client(uri).download_artifacts(row.run_id, "hint_set.json", d))
            except (MlflowException, OSError, PursuhintError):
                return None

    return load


def confirmed_hint_sets(table: dict[str, Any], sets: list[HintSet], top: int) -> list[HintSet]:
    """The confirmed configurations' hint sets (found among ``sets``, the search stage's, by trial or by
    layers) in the confirmation table's order, each carrying its test mean, sd and seeds, its gains with
    their CIs and verdicts, and the split hashes: what ``export`` writes and the parent's best hint set."""
    by_trial = {hs.provenance.get("trial_id"): hs for hs in sets}
    by_layers = {",".join(hs.layers): hs for hs in reversed(sets)}
    out = []
    for c in table["configurations"][:top]:
        hs = by_trial.get(c["trial_id"]) or by_layers.get(c["hint_layers"])
        if hs is None:
            continue
        hs.score = c["test_acc"]["mean"]
        fields = {"stage": "confirmation", "test_acc_mean": c["test_acc"]["mean"], "test_acc_sd": c["test_acc"]["sd"],
                  "test_acc_seeds": ",".join(f"{k}:{v:.4g}" for k, v in c["seeds"].items()),
                  "n_seeds": c["test_acc"]["n"], "search_trial_id": c["trial_id"]}
        for kind, g in c["gains"].items():  # provenance holds scalars: one field per figure
            fields.update({f"gain_vs_{kind}": g["mean"], f"gain_vs_{kind}_ci_low": g["low"],
                           f"gain_vs_{kind}_ci_high": g["high"], f"gain_vs_{kind}_verdict": g["verdict"],
                           f"gain_vs_{kind}_decision": g.get("decision", "")})
        if table.get("answer"):
            fields["answer"] = table["answer"]
        for split, info in table.get("splits", {}).items():
            fields.update({f"split_{split}_size": info["size"], f"split_{split}_hash": info["hash"]})
        hs.provenance.update(fields)
        out.append(hs)
    return out


def hint_sets_for(rows: list[TrialRow], top: int, table: Optional[dict[str, Any]] = None, *, sweep: str = "",
                  parent: str = "", uri: Optional[str] = None) -> list[HintSet]:
    """The ``top`` hint sets ``export`` writes: the confirmation ``table``'s (see ``confirmed_hint_sets``) when it
    has configurations, reading only the hint sets of the rows they came from; else the search's best rows'."""
    if not (table and table.get("configurations")):
        return top_hint_sets(rows, top, sweep=sweep, parent=parent, uri=uri)
    confirmed = table["configurations"][:top]
    ids, layers = {c["trial_id"] for c in confirmed}, {c["hint_layers"] for c in confirmed}
    wanted = [r for r in rows if r.trial_id in ids or r.hint_layers in layers]
    return confirmed_hint_sets(table, top_hint_sets(wanted, len(wanted), sweep=sweep, parent=parent, uri=uri), top)
