"""The confirmation stage: the search's top-K distinct configurations, and the baselines of each confirmed
method, trained again over S seeds with the full budget; test accuracy summarised with paired 95 % CIs.

The search ranks on one seed and the selection split; this stage is what makes a winner citable. It plans
the trials (plain dicts a Tune grid runs), and turns their results into the confirmation table.

.. code-block:: yaml

    search: {confirm: {top_k: 3, seeds: 3, baselines: [default, kd_only, uniform, random]}}
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

from ..baselines import BASELINE_LABELS
from ..config import Config
from .results import CONFIRMATION_FILE, TrialRow
from .space import BASELINE_KEY, CONFIRMS_KEY, ROLE_KEY
from .stats import label_of, paired_gain, summarise, verdict

SEED_KEY = "train.seed"
CONFIRM_TRIAL_KEY = "pursuhint.confirm_trial"  # the Tune grid's one key: each value is a planned trial
FILE = CONFIRMATION_FILE  # the table, in the sweep's folder and on the parent run
SEARCHED = "searched"  # the kind of a confirmed (searched) configuration


def confirm_seeds(base_seed: int, n: int) -> list[int]:
    """The S seeds of the confirmation stage, derived from the config's ``seed``: seed + 1, …, seed + S
    (fresh seeds: none repeats the search stage's own)."""
    return [int(base_seed) + 1 + i for i in range(n)]


@dataclass
class Candidate:
    """A search trial the confirmation stage retrains: its sampled values and what makes it distinct."""

    trial_id: str
    sampled: dict[str, Any]
    score: float
    method: str
    n_hints: int
    hint_layers: str
    weights: tuple[Any, ...]  # β as sampled (a number or "auto"), r, KD and CE weights
    lr: float

    @property
    def distinct_key(self) -> tuple:
        """Distinct means another hint-layer set, method, weights or lr."""
        return (self.hint_layers, self.method, self.weights, self.lr)


def pick_top(rows: Iterable[TrialRow], top_k: int, metric: str = "final") -> list[Candidate]:
    """The ``top_k`` best distinct searched configurations by ``final_val_acc`` (or ``best_val_acc``).

    ``rows`` are search trials (``results.row_from_result``); baselines, duplicates and trials that did
    not complete or stop normally are skipped. Ties go to the earlier trial.
    """
    if top_k <= 0:
        return []
    rows = [dataclasses.replace(r, metric=metric) for r in rows]
    eligible = [r for r in rows if r.baseline == "none" and r.status in ("completed", "stopped")
                and r.hint_layers and math.isfinite(r.score)]
    eligible.sort(key=lambda r: (-r.score, r.trial_id))
    out: list[Candidate] = []
    seen: set[tuple] = set()
    for r in eligible:
        weights = tuple(r.sampled.get(k, default) for k, default in
                        (("distill.hint_weight", "auto"), ("distill.hint_ratio", 1.0), ("distill.kd_weight", 0.0),
                         ("distill.ce_weight", 1.0)))
        cand = Candidate(trial_id=r.trial_id, sampled=dict(r.sampled), score=r.score, method=r.method,
                         n_hints=r.n_hints, hint_layers=r.hint_layers,
                         weights=tuple(round(float(w), 10) if isinstance(w, (int, float)) else w for w in weights),
                         lr=round(float(r.sampled.get("train.lr", 0.0)), 10))
        if cand.distinct_key in seen:
            continue
        seen.add(cand.distinct_key)
        out.append(cand)
        if len(out) == top_k:
            break
    return out


def plan(cfg: Config, candidates: Sequence[Candidate], seeds: Sequence[int],
         baselines: Sequence[str]) -> list[dict[str, Any]]:
    """Every confirmation trial's config: each candidate × seed, and for each confirmed method its
    baselines × seed (``default``; ``uniform`` and ``random`` at each confirmed K; ``kd_only`` once).
    Identical trials are planned once."""
    common = {k: v for k, v in cfg.searched_defaults.items()}
    trials: list[dict[str, Any]] = []
    for cand in candidates:
        for seed in seeds:
            trials.append({**cand.sampled, BASELINE_KEY: "", ROLE_KEY: "confirm", CONFIRMS_KEY: cand.trial_id,
                           SEED_KEY: seed})
    for cand in candidates:
        for kind in baselines:
            if kind == "kd_only":
                values = {**common, "distill.method": "kd_only"}
            else:
                values = {**common, **_recipe(cand.sampled), "distill.method": cand.method}
                if kind in ("uniform", "random"):
                    values["selection.n_hints"] = cand.n_hints
            for seed in seeds:
                trials.append({**values, BASELINE_KEY: kind, ROLE_KEY: "confirm", CONFIRMS_KEY: kind, SEED_KEY: seed})
    unique: dict[str, dict[str, Any]] = {}
    for t in trials:
        unique.setdefault(json.dumps(t, sort_keys=True, default=str), t)
    return list(unique.values())


def _recipe(sampled: dict[str, Any]) -> dict[str, Any]:
    """A baseline compared with a configuration shares its training recipe (weights, lr), not its hints."""
    keep = ("distill.hint_weight", "distill.hint_ratio", "distill.kd_weight", "distill.ce_weight", "train.lr")
    return {k: v for k, v in sampled.items() if k in keep}


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


@dataclass
class ConfirmedResult:
    """One confirmation trial's outcome."""

    kind: str  # "searched" or a baseline kind
    confirms: str
    method: str
    n_hints: int
    seed: int
    test_acc: float
    final_val_acc: float
    hint_layers: str = ""


def _group(results: Sequence[ConfirmedResult]) -> dict[tuple, dict[int, float]]:
    out: dict[tuple, dict[int, float]] = {}
    for r in results:
        if not _finite(r.test_acc):
            continue
        if r.kind == SEARCHED:
            key = (SEARCHED, r.confirms)
        elif r.kind == "kd_only":
            key = ("kd_only",)
        elif r.kind == "default":
            key = ("default", r.method)
        else:
            key = (r.kind, r.method, r.n_hints)
        out.setdefault(key, {})[r.seed] = r.test_acc
    return out


def confirmation_table(candidates: Sequence[Candidate], results: Sequence[ConfirmedResult],
                       n_seeds: int) -> dict[str, Any]:
    """The confirmation table: each confirmed configuration's mean ± sd test accuracy over its seeds, and its
    gain over each baseline of the same method paired by seed (mean, 95 % CI, verdict); baselines' own
    summaries; ranked by mean test accuracy."""
    groups = _group(results)
    layers = {r.confirms: r.hint_layers for r in results if r.kind == SEARCHED and r.hint_layers}
    configs = []
    for cand in candidates:
        scores = groups.get((SEARCHED, cand.trial_id), {})
        if not scores:
            continue
        s = summarise(list(scores.values()))
        gains = {}
        for kind, key in (("default", ("default", cand.method)), ("uniform", ("uniform", cand.method, cand.n_hints)),
                          ("random", ("random", cand.method, cand.n_hints)), ("kd_only", ("kd_only",))):
            base = groups.get(key)
            if not base or len(set(base) & set(scores)) < 2:
                continue
            g = paired_gain(scores, base)
            gains[kind] = {**g.as_dict(), "verdict": verdict(g, kind)}
        configs.append({"trial_id": cand.trial_id, "method": cand.method, "n_hints": cand.n_hints,
                        "hint_layers": layers.get(cand.trial_id, cand.hint_layers), "search_score": cand.score,
                        "sampled": cand.sampled, "test_acc": s.as_dict(),
                        "seeds": {str(k): v for k, v in sorted(scores.items())}, "gains": gains})
    configs.sort(key=lambda c: -c["test_acc"]["mean"])
    baselines = []
    for key, scores in sorted(groups.items(), key=lambda kv: str(kv[0])):
        if key[0] == SEARCHED:
            continue
        s = summarise(list(scores.values()))
        baselines.append({"kind": key[0], "label": label_of(key[0]), "method": key[1] if len(key) > 1 else "kd_only",
                          "n_hints": key[2] if len(key) > 2 else None, "test_acc": s.as_dict(),
                          "seeds": {str(k): v for k, v in sorted(scores.items())}})
    baselines.sort(key=lambda b: -b["test_acc"]["mean"])
    return {"n_seeds": n_seeds, "configurations": configs, "baselines": baselines,
            "protocol": "top-K distinct configurations of the search stage (one seed, selection split) retrained "
                        "with S fresh seeds and the full budget; test split; gains paired by seed, Student's t "
                        "95 % CI with S - 1 degrees of freedom"}


def format_table(table: dict[str, Any]) -> str:
    """The confirmation table as text: ranked configurations with ± sd, each gain with its CI and verdict."""
    n = table.get("n_seeds")
    lines = [f"Confirmation stage: {n} seeds each, test split, full budget (ranked by mean test accuracy)"]
    head = f"{'#':>2}  {'configuration':<44} {'test acc':>14}  gains over baselines of the same method (95 % CI)"
    lines.append(head)
    for i, c in enumerate(table.get("configurations", []), 1):
        name = f"{c['method']} K={c['n_hints']} [{c['hint_layers']}]"
        t = c["test_acc"]
        acc = f"{t['mean']:.2f} ± {t['sd']:.2f}" if t.get("sd") is not None else f"{t['mean']:.2f}"
        lines.append(f"{i:>2}  {name[:44]:<44} {acc:>14}  (trial {c['trial_id']})")
        for kind, g in c["gains"].items():
            lines.append(f"{'':>4}vs {BASELINE_LABELS.get(kind, kind):<14} {g['mean']:+.2f} "
                         f"[{g['low']:+.2f}, {g['high']:+.2f}]  {g['verdict']}")
    if table.get("baselines"):
        lines.append("Baselines:")
        for b in table["baselines"]:
            t = b["test_acc"]
            k = f" K={b['n_hints']}" if b.get("n_hints") else ""
            acc = f"{t['mean']:.2f} ± {t['sd']:.2f}" if t.get("sd") is not None else f"{t['mean']:.2f}"
            lines.append(f"    {b['label'] + ' (' + b['method'] + k + ')':<48} {acc:>14}")
    return "\n".join(lines)


def headline(table: dict[str, Any]) -> dict[str, float]:
    """The parent run's metrics: the best configuration's mean test accuracy and its gain over the default
    hints with the CI's bounds."""
    configs = table.get("configurations") or []
    if not configs:
        return {}
    best = configs[0]
    out = {"confirmed_test_acc": float(best["test_acc"]["mean"])}
    g = best["gains"].get("default")
    if g:
        out.update(confirmed_gain_vs_default=float(g["mean"]), confirmed_gain_vs_default_ci_low=float(g["low"]),
                   confirmed_gain_vs_default_ci_high=float(g["high"]))
    return out


def confirmed_result(spec: dict[str, Any], last: dict[str, Any]) -> ConfirmedResult:
    """A confirmation trial's outcome from its planned spec and last report (test_acc is NaN if it failed)."""
    kind = spec.get(BASELINE_KEY) or SEARCHED
    return ConfirmedResult(kind=kind, confirms=str(spec.get(CONFIRMS_KEY, "")),
                           method=str(last.get("method_name", spec.get("distill.method", ""))),
                           n_hints=int(last.get("n_hints_used", spec.get("selection.n_hints") or 0) or 0),
                           seed=int(spec[SEED_KEY]), test_acc=float(last.get("test_acc", float("nan"))),
                           final_val_acc=float(last.get("final_val_acc", float("nan"))),
                           hint_layers=str(last.get("hint_layer_names", "")))
