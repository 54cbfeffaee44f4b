"""The confirmation stage: the search's top-K distinct configurations, and the baselines of each confirmed
method, trained again over fresh seeds with the full budget, scored on the test split; each paired comparison
ends better, worse, equivalent within ±margin, or undecided (``stats.decide``).

The search ranks on one seed and the selection split; this stage is what makes a winner citable. It plans
the trials (plain dicts a Tune grid runs), races seeds (:class:`Race`: after ``min`` seeds, one more per round
only for arms with an undecided comparison), and turns the results into the confirmation table and the
sweep's answer in one sentence (:func:`answer`).

.. code-block:: yaml

    search: {confirm: {top_k: 3, seeds: {min: 3, max: 10}, margin: 1.0,
                       baselines: [default, kd_only, ce_only, uniform, random]}}
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

from ..baselines import BASELINE_LABELS, NO_TEACHER, WITHOUT_HINTS
from ..config import COHORT_SECTIONS, Config
from .layout import CONFIRMATION_FILE
from .results import TrialRow
from .trial_keys import BASELINE_KEY, COHORT_KEY, CONFIRMS_KEY, MEMBERS_KEY, ROLE_KEY
from .stats import Decision, decide_table, label_of, summarise

SEED_KEY = "train.seed"
FILE = CONFIRMATION_FILE  # the table, in the sweep's folder and on the parent run
SEARCHED = "searched"  # the kind of a confirmed (searched) configuration
ANSWER_TAG = "pursuhint.answer"  # the parent run's tag holding the sweep's answer in one sentence


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
         baselines: Sequence[str], arms: Optional[set[tuple]] = None) -> list[dict[str, Any]]:
    """Every confirmation trial's config: each candidate × seed, and for each confirmed method its
    baselines × seed (``default``; ``uniform`` and ``random`` at each confirmed K; ``kd_only`` and ``ce_only``
    once). Identical trials are planned once; ``arms`` (arm keys, see :func:`arm_of`) keeps only those arms."""
    common = {k: v for k, v in cfg.searched_defaults.items()}
    trials: list[dict[str, Any]] = []
    for cand in candidates:
        for seed in seeds:
            trials.append({**cand.sampled, BASELINE_KEY: "", ROLE_KEY: "confirm", CONFIRMS_KEY: cand.trial_id,
                           SEED_KEY: seed})
    for cand in candidates:
        for kind in baselines:
            if kind in PUBLISHED_RECIPES:  # a published method with its published recipe
                values = {**common, **PUBLISHED_RECIPES[kind]}
            elif kind in WITHOUT_HINTS:
                values = {**common, "distill.method": "kd_only"}
            else:
                values = {**common, **_recipe(cand.sampled), "distill.method": cand.method}
                if kind in ("uniform", "random"):
                    values["selection.n_hints"] = cand.n_hints
            for seed in seeds:
                trials.append({**values, BASELINE_KEY: kind, ROLE_KEY: "confirm", CONFIRMS_KEY: kind, SEED_KEY: seed})
    unique: dict[str, dict[str, Any]] = {}
    for t in trials:
        if arms is None or arm_of(t) in arms:
            unique.setdefault(json.dumps(t, sort_keys=True, default=str), t)
    return list(unique.values())


# Planned keys that must be equal for arms to share a cohort.
COHORT_PREFIXES = tuple(f"{section}." for section in COHORT_SECTIONS)


def cohorts(trials: Sequence[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    """The round's Tune trials: the planned arms grouped by what they must share (data, teacher, student
    architecture, recipe, seed), each group split into near-equal cohorts of at most ``size``; a cohort of one
    stays a plain spec, a larger one is ``{COHORT_KEY: [specs]}``."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for t in trials:
        shared = {k: v for k, v in t.items() if k.startswith(COHORT_PREFIXES)}
        groups.setdefault(json.dumps(shared, sort_keys=True, default=str), []).append(t)
    out: list[dict[str, Any]] = []
    for group in groups.values():
        parts = -(-len(group) // max(1, size))
        for i in range(parts):
            members = group[i::parts]
            out.append(members[0] if len(members) == 1 else {COHORT_KEY: members})
    return out


def planned_arms(trial: dict[str, Any]) -> list[dict[str, Any]]:
    """The planned specs a Tune trial of the confirmation stage trains: its cohort's, or its own."""
    return list(trial[COHORT_KEY]) if COHORT_KEY in trial else [trial]


# The published methods' recipes as confirmation baselines: DKD replaces KD (no classic KD term beside it);
# ReviewKD trains beside CE alone (mdistiller's); SemCKD beside KD (its repository's -r 1 -a 1 -b 400); each with its
# published weight (hint_weight null: the method's default_weight).
PUBLISHED_RECIPES: dict[str, dict[str, Any]] = {
    "dkd": {"distill.method": "dkd", "distill.kd_weight": 0.0, "distill.ce_weight": 1.0},
    "reviewkd": {"distill.method": "reviewkd", "distill.kd_weight": 0.0, "distill.ce_weight": 1.0,
                 "distill.hint_weight": None},
    "semckd": {"distill.method": "semckd", "distill.kd_weight": 1.0, "distill.ce_weight": 1.0,
               "distill.hint_weight": None},
}


def arm_of(spec: dict[str, Any]) -> tuple:
    """The arm a planned trial belongs to: what its seeds are grouped and paired by."""
    kind = spec.get(BASELINE_KEY) or SEARCHED
    if kind == SEARCHED:
        return (SEARCHED, str(spec.get(CONFIRMS_KEY, "")))
    return baseline_arm(kind, str(spec.get("distill.method", "")), spec.get("selection.n_hints"))


def baseline_arm(kind: str, method: str, n_hints: Any) -> tuple:
    """A baseline's arm: KD only and the CE-only student are one arm each; the default hints one per method;
    uniform and random hints one per method and K."""
    if kind in WITHOUT_HINTS:
        return (kind,)
    if kind == "default":
        return ("default", method)
    return (kind, method, int(n_hints or 0))


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


def group_results(results: Sequence[ConfirmedResult]) -> dict[tuple, dict[int, float]]:
    """Finished results' test accuracies by arm, then by seed (failed runs left out)."""
    out: dict[tuple, dict[int, float]] = {}
    for r in results:
        if not _finite(r.test_acc):
            continue
        key = (SEARCHED, r.confirms) if r.kind == SEARCHED else baseline_arm(r.kind, r.method, r.n_hints)
        out.setdefault(key, {})[r.seed] = r.test_acc
    return out


COMPARED = ("default", "uniform", "random", "kd_only", NO_TEACHER, "dkd", "reviewkd", "semckd")  # gains' order
ALPHA = 0.05  # the family-wise error rate of the verdicts, across the table's comparisons and the race's looks


@dataclass(frozen=True)
class Comparison:
    """One configuration against one baseline, paired by seed."""

    config: str  # the confirmed configuration's search trial id
    baseline: str  # the baseline kind
    config_arm: tuple
    baseline_arm: tuple


def comparisons_of(candidates: Sequence[Candidate], baselines: Sequence[str]) -> list[Comparison]:
    """Every configuration against each planned baseline of its method (and KD only, the CE-only student)."""
    return [Comparison(c.trial_id, kind, (SEARCHED, c.trial_id), baseline_arm(kind, c.method, c.n_hints))
            for c in candidates for kind in COMPARED if kind in baselines]


@dataclass
class Race:
    """The racing rule, pure: after each round :meth:`look` decides what it can (Holm over the open comparisons,
    Bonferroni over the looks ``min_seeds``..``max_seeds``); a decided comparison keeps the verdict of the look
    that decided it; :meth:`open_arms` are the arms that get the next seed. A fixed design is min = max."""

    comparisons: list[Comparison]
    min_seeds: int
    max_seeds: int
    margin: float = 1.0
    alpha: float = ALPHA
    decided: dict[tuple[str, str], Decision] = field(default_factory=dict)
    latest: dict[tuple[str, str], Decision] = field(default_factory=dict)

    def look(self, groups: dict[tuple, dict[int, float]], n: int) -> dict[tuple[str, str], Decision]:
        """Decide the open comparisons after the round that brought open arms to ``n`` seeds, on the seeds both
        arms have; return every comparison's current decision."""
        diffs = {}
        for c in self.comparisons:
            key = (c.config, c.baseline)
            if key in self.decided:
                continue
            a, b = groups.get(c.config_arm, {}), groups.get(c.baseline_arm, {})
            diffs[key] = [a[s] - b[s] for s in sorted(set(a) & set(b))]
        now = decide_table(diffs, alpha=self.alpha, margin=self.margin, max_seeds=self.max_seeds,
                           min_seeds=self.min_seeds, look=n - self.min_seeds + 1)
        for key, dec in now.items():
            self.latest[key] = dec
            if dec.decided:
                self.decided[key] = dec
        return self.decisions

    @property
    def decisions(self) -> dict[tuple[str, str], Decision]:
        """Every comparison's decision: the one that decided it, else the latest look's."""
        return {**self.latest, **self.decided}

    @property
    def open(self) -> list[Comparison]:
        return [c for c in self.comparisons if (c.config, c.baseline) not in self.decided]

    def open_arms(self) -> set[tuple]:
        return {arm for c in self.open for arm in (c.config_arm, c.baseline_arm)}


def replay(race: Race, groups: dict[tuple, dict[int, float]], seeds: Sequence[int]) -> dict[str, Any]:
    """Run ``race`` over results already trained with every seed: at look n each arm sees only the seeds the race
    would have given it (its first ``min`` seeds, then one per round while it was open), so the replay makes
    exactly the decisions a live race would. Returns the decisions, arm-seeds trained, looks and stop reason."""
    have = {arm: min(race.min_seeds, len(seeds)) for arm in {a for c in race.comparisons
                                                              for a in (c.config_arm, c.baseline_arm)}}
    n = race.min_seeds
    while True:
        seen = {arm: {s: v for s, v in groups.get(arm, {}).items() if s in seeds[:k]} for arm, k in have.items()}
        decisions = race.look(seen, n)
        reason = stop_reason(race, n)
        if reason:
            return {"decisions": decisions, "arm_seeds": sum(have.values()), "per_arm": dict(have), "seeds": n,
                    "stopped": reason}
        n += 1
        for arm in race.open_arms():
            have[arm] = n


def stop_reason(race: Race, n: int, hours: float = 0.0, budget_hours: Optional[float] = None) -> Optional[str]:
    """Why a race stops after its look at ``n`` seeds, or None to go on."""
    if not race.open:
        return f"every comparison decided after {n} seeds"
    if n >= race.max_seeds:
        return f"the most seeds ({race.max_seeds}) reached with {len(race.open)} comparison(s) undecided"
    if budget_hours is not None and hours >= budget_hours:
        return (f"the budget of {budget_hours:g} trial-hours spent ({hours:.2f} h) with {len(race.open)} "
                f"comparison(s) undecided")
    return None


def confirmation_table(candidates: Sequence[Candidate], results: Sequence[ConfirmedResult],
                       n_seeds: int, race: Optional[Race] = None) -> dict[str, Any]:
    """The confirmation table: each confirmed configuration's mean ± sd test accuracy over its seeds, and its
    verdict against each baseline paired by seed (the race's decisions; without ``race``, one fixed-design
    look); baselines' own summaries; ranked by mean test accuracy; and the answer in one sentence."""
    groups = group_results(results)
    if race is None:
        race = Race(comparisons_of(candidates, COMPARED), n_seeds, n_seeds)
        race.look(groups, n_seeds)
    decisions = race.decisions
    layers = {r.confirms: r.hint_layers for r in results if r.kind == SEARCHED and r.hint_layers}
    configs = []
    for cand in candidates:
        scores = groups.get((SEARCHED, cand.trial_id), {})
        if not scores:
            continue
        gains = {c.baseline: _gain(decisions[(c.config, c.baseline)], c.baseline)
                 for c in race.comparisons if c.config == cand.trial_id and (c.config, c.baseline) in decisions}
        configs.append({"trial_id": cand.trial_id, "method": cand.method, "n_hints": cand.n_hints,
                        "hint_layers": layers.get(cand.trial_id, cand.hint_layers), "search_score": cand.score,
                        "sampled": cand.sampled, "test_acc": summarise(list(scores.values())).as_dict(),
                        "seeds": {str(k): v for k, v in sorted(scores.items())}, "gains": gains})
    configs.sort(key=lambda c: -c["test_acc"]["mean"])
    baselines = []
    for key, scores in sorted(groups.items(), key=lambda kv: str(kv[0])):
        if key[0] == SEARCHED:
            continue
        baselines.append({"kind": key[0], "label": label_of(key[0]),
                          "method": key[1] if len(key) > 1 else key[0], "n_hints": key[2] if len(key) > 2 else None,
                          "test_acc": summarise(list(scores.values())).as_dict(),
                          "seeds": {str(k): v for k, v in sorted(scores.items())}})
    baselines.sort(key=lambda b: -b["test_acc"]["mean"])
    table = {"n_seeds": max((len(s) for s in groups.values()), default=0), "min_seeds": race.min_seeds,
             "max_seeds": race.max_seeds, "margin": race.margin, "alpha": race.alpha,
             "configurations": configs, "baselines": baselines,
             "protocol": "top-K distinct configurations of the search stage (one seed, selection split) retrained "
                         "with fresh seeds and the full budget; test split; each comparison paired by seed and "
                         f"decided from a Student's t CI at level 1 - alpha*, alpha* = alpha_look / Holm's divisor, "
                         f"alpha = {race.alpha:g} spent over {race.max_seeds - race.min_seeds + 1} look(s) (half "
                         f"at the last): better, worse, equivalent within +/-{race.margin:g} points (TOST), or "
                         f"undecided"}
    return table | {"answer": answer(table)}


def _gain(dec: Decision, kind: str) -> dict[str, Any]:
    """A comparison's row in the table: the decision's figures, its phrase as ``verdict``, and its CI level."""
    return {**dec.as_dict(), "decision": dec.verdict, "verdict": dec.words(), "level": 1 - dec.alpha_star,
            "baseline": kind}


def arm_name(c: dict[str, Any]) -> str:
    """A confirmed configuration in words: "fitnet K=3 [layer1.5, layer2.8, layer3.7]"."""
    return f"{c['method']} K={c['n_hints']} [{', '.join(str(c['hint_layers']).split(','))}]"


def _acc(t: dict[str, Any]) -> str:
    return f"{t['mean']:.1f} ± {t['sd']:.1f} %" if t.get("sd") is not None else f"{t['mean']:.1f} %"


def answer(table: dict[str, Any]) -> str:
    """The sweep's answer in one sentence, generated from the verdicts: the best arm (a baseline when one scored
    highest), the best configuration's verdict against each baseline, and what that means for placement."""
    configs, baselines = table.get("configurations") or [], table.get("baselines") or []
    if not configs:
        return "No confirmed configuration finished, so there is no answer yet."
    best = configs[0]
    top = max(baselines, key=lambda b: b["test_acc"]["mean"], default=None)
    parts = []
    if top is not None and top["test_acc"]["mean"] > best["test_acc"]["mean"]:
        parts.append(f"Best: {top['label']} (a baseline), {_acc(top['test_acc'])} ({top['test_acc']['n']} seeds); "
                     f"the best searched configuration, {arm_name(best)}, scores {_acc(best['test_acc'])} "
                     f"({best['test_acc']['n']} seeds).")
    else:
        parts.append(f"Best: {arm_name(best)}, {_acc(best['test_acc'])} ({best['test_acc']['n']} seeds).")
    said = [f"against {label_of(kind)} it is {g['verdict']}" for kind, g in best["gains"].items()]
    if said:
        parts.append(said[0][0].upper() + said[0][1:] + "".join(f"; {x}" for x in said[1:]) + ".")
    parts.append(_reading(best, top, table.get("margin", 1.0)))
    return " ".join(p for p in parts if p)


def _reading(best: dict[str, Any], top: Optional[dict[str, Any]], margin: float) -> str:
    """What the verdicts mean for the user: whether placement matters, and whether a baseline is the one to use."""
    placement = {kind: g for kind, g in best["gains"].items() if kind in ("default", "uniform", "random")}
    small = {k for k, g in placement.items() if g["decision"] == "equivalent" or g.get("within_margin")}
    out = []
    if placement and small == set(placement):
        out.append(f"Hint placement matters by less than {margin:g} point{'s' if margin != 1 else ''} here: "
                   f"keep the default hints.")
    elif any(g["decision"] == "better" and k not in small for k, g in placement.items()):
        beaten = [label_of(k) for k, g in placement.items() if g["decision"] == "better" and k not in small]
        out.append(f"The chosen hint placement beats {' and '.join(beaten)} by more than {margin:g} "
                   f"point{'s' if margin != 1 else ''}.")
    elif placement and all(g["decision"] == "undecided" for g in placement.values()):
        out.append("Whether hint placement matters is not decided yet: more seeds would tell.")
    kd = best["gains"].get("kd_only")
    if top is not None and top["test_acc"]["mean"] > best["test_acc"]["mean"]:
        beaten = kd is not None and top["kind"] == "kd_only" and kd["decision"] == "worse"
        out.append(f"The strongest configuration here is {top['label']}" + ("." if beaten else
                                                                           ", though not decidedly so."))
    return " ".join(out)


def format_table(table: dict[str, Any]) -> str:
    """The confirmation table as text: the answer, ranked configurations with ± sd, each verdict with its CI."""
    n = table.get("n_seeds")
    lo, hi = table.get("min_seeds", n), table.get("max_seeds", n)
    seeds = f"{n} seeds each" if lo == hi else f"racing {lo}-{hi} seeds, up to {n} used"
    lines = [f"Answer: {table['answer']}"] if table.get("answer") else []
    lines.append(f"Confirmation stage: {seeds}, test split, full budget (ranked by mean test accuracy)")
    lines.append(f"{'#':>2}  {'configuration':<44} {'test acc':>14}  verdicts against baselines (paired by seed; "
                 f"margin ±{table.get('margin', 1.0):g})")
    for i, c in enumerate(table.get("configurations", []), 1):
        t = c["test_acc"]
        acc = f"{t['mean']:.2f} ± {t['sd']:.2f}" if t.get("sd") is not None else f"{t['mean']:.2f}"
        lines.append(f"{i:>2}  {arm_name(c)[:44]:<44} {acc:>14}  (trial {c['trial_id']}, {t['n']} seeds)")
        for kind, g in c["gains"].items():
            lines.append(f"{'':>4}vs {BASELINE_LABELS.get(kind, kind):<20} {g['verdict']}")
    if table.get("baselines"):
        lines.append("Baselines:")
        for b in table["baselines"]:
            t = b["test_acc"]
            k = f" K={b['n_hints']}" if b.get("n_hints") else ""
            acc = f"{t['mean']:.2f} ± {t['sd']:.2f}" if t.get("sd") is not None else f"{t['mean']:.2f}"
            lines.append(f"    {b['label'] + ' (' + b['method'] + k + ')':<48} {acc:>14}  ({t['n']} seeds)")
    if table.get("stopped"):
        lines.append(f"The race stopped: {table['stopped']}.")
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


def confirmed_results(trial: dict[str, Any], last: dict[str, Any]) -> list[ConfirmedResult]:
    """The outcomes of one Tune trial of the confirmation stage from its planned spec (a cohort's: one per member)
    and its last report (a cohort's holds each member's final result under ``MEMBERS_KEY``)."""
    if COHORT_KEY not in trial:
        return [confirmed_result(trial, last)]
    members = json.loads(last[MEMBERS_KEY]) if isinstance(last.get(MEMBERS_KEY), str) else {}
    return [confirmed_result(spec, (members.get(str(i)) or [{}])[-1]) for i, spec in enumerate(trial[COHORT_KEY])]


def confirmed_result(spec: dict[str, Any], last: dict[str, Any]) -> ConfirmedResult:
    """A confirmation trial's outcome from its planned spec and last report (test_acc is NaN if it failed)."""
    kind = spec.get(BASELINE_KEY) or SEARCHED
    return ConfirmedResult(kind=kind, confirms=str(spec.get(CONFIRMS_KEY, "")),
                           method=str(last.get("method_name", spec.get("distill.method", ""))),
                           n_hints=int(last.get("n_hints_used", spec.get("selection.n_hints") or 0) or 0),
                           seed=int(spec[SEED_KEY]), test_acc=float(last.get("test_acc", float("nan"))),
                           final_val_acc=float(last.get("final_val_acc", float("nan"))),
                           hint_layers=str(last.get("hint_layer_names", "")))
