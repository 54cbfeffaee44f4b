"""The confirmation stage's plan and table, without Ray: which configurations, which trials, which numbers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from pursuhint.config import config_from_text
from pursuhint.errors import ConfigError
from pursuhint.search.confirm import (CONFIRMS_KEY, ROLE_KEY, SEARCHED, ConfirmedResult, Race, arm_of,
                                      comparisons_of, confirm_seeds, confirmation_table, format_table, headline,
                                      pick_top, plan, replay, stop_reason)
from pursuhint.search.results import row_from_result
from pursuhint.search.trial_keys import BASELINE_KEY

CFG = config_from_text("""
seed: 5
selection: {similarity: {choice: [r2_cca, cka_linear]}, n_hints: {randint: [2, 3]}}
distill: {method: {choice: [at, fitnet]}, hint_weight: {loguniform: [10, 1000]}}
search: {confirm: {top_k: 2, seeds: 3}}
""")


def _row(tid, final, best, method="at", k=3, layers="a,b,c", hw=100.0, lr=0.05, status="completed", baseline=""):
    cfg = {"selection.similarity": "r2_cca", "selection.n_hints": k, "distill.method": method,
           "distill.hint_weight": hw, "train.lr": lr, BASELINE_KEY: baseline}
    last = {"val_acc": final, "final_val_acc": final, "best_val_acc": best, "method_name": method,
            "n_hints_used": k, "hint_layer_names": layers, "hint_weight_resolved": hw}
    return row_from_result(cfg, last, status, tid)


def test_seeds_derive_from_the_config_seed_and_are_fresh():
    assert confirm_seeds(5, 3) == [6, 7, 8]
    assert 5 not in confirm_seeds(5, 10)


def test_pick_top_ranks_distinct_configurations_by_the_chosen_metric():
    rows = [_row("t1", 90.0, 95.0), _row("t2", 92.0, 92.5),
            _row("t3", 91.0, 93.0, layers="a,b,c"),  # same hints, method, weights, lr as t1 and t2: not distinct
            _row("t4", 89.0, 96.0, layers="b,c,d"), _row("t5", 99.0, 99.0, baseline="default"),
            _row("t6", 98.0, 98.0, layers="x,y,z", status="diverged"), _row("t7", 88.0, 88.0, layers="a,b,c", hw=10.0)]
    final = pick_top(rows, 3, "final")
    assert [c.trial_id for c in final] == ["t2", "t4", "t7"]  # t1/t3 repeat t2's configuration
    best = pick_top(rows, 2, "best")
    assert [c.trial_id for c in best] == ["t4", "t1"]
    assert best[0].score == 96.0
    assert pick_top(rows, 0) == []


def test_plan_has_every_configuration_and_baseline_once_per_seed():
    cands = pick_top([_row("t1", 90.0, 90.0, k=3, layers="a,b,c"),
                      _row("t2", 89.0, 89.0, k=2, layers="a,c", method="fitnet", hw=50.0)], 2)
    seeds = [6, 7, 8]
    trials = plan(CFG, cands, seeds, ["default", "kd_only", "uniform", "random"])
    by = {}
    for t in trials:
        assert t[ROLE_KEY] == "confirm" and t["train.seed"] in seeds
        by.setdefault((t[BASELINE_KEY] or SEARCHED, t[CONFIRMS_KEY], t["distill.method"]), []).append(t)
    assert sorted(len(v) for v in by.values()) == [3] * len(by)
    kinds = sorted(by)
    assert kinds == sorted([(SEARCHED, "t1", "at"), (SEARCHED, "t2", "fitnet"), ("default", "default", "at"),
                            ("default", "default", "fitnet"), ("kd_only", "kd_only", "kd_only"),
                            ("uniform", "uniform", "at"), ("uniform", "uniform", "fitnet"),
                            ("random", "random", "at"), ("random", "random", "fitnet")])
    assert {t["selection.n_hints"] for t in by[("uniform", "uniform", "fitnet")]} == {2}
    assert {t["distill.hint_weight"] for t in by[("default", "default", "fitnet")]} == {50.0}  # its recipe
    assert len(trials) == 9 * 3  # kd_only planned once although two configurations ask for it


def _results(cands):
    rng = np.random.default_rng(0)
    out, truth = [], {}
    for seed in (6, 7, 8, 9):
        base = 80 + rng.normal()
        vals = {"t1": base + 2 + rng.normal() * 0.5, "default": base, "uniform": base + 1 + rng.normal(),
                "random": base - 3 + rng.normal(), "kd_only": base + rng.normal() * 3}
        truth[seed] = vals
        out.append(ConfirmedResult(SEARCHED, "t1", "at", 3, seed, vals["t1"], 0.0, "a,b,c"))
        for kind in ("default", "uniform", "random", "kd_only"):
            out.append(ConfirmedResult(kind, kind, "kd_only" if kind == "kd_only" else "at", 3, seed, vals[kind], 0.0))
    return out, truth


def test_table_figures_equal_scipys():
    cands = pick_top([_row("t1", 90.0, 90.0)], 1)
    results, truth = _results(cands)
    table = confirmation_table(cands, results, 4)
    c = table["configurations"][0]
    ours = np.array([truth[s]["t1"] for s in (6, 7, 8, 9)])
    assert c["test_acc"]["mean"] == pytest.approx(ours.mean()) and c["test_acc"]["sd"] == pytest.approx(ours.std(ddof=1))
    for kind in ("default", "uniform", "random", "kd_only"):
        theirs = np.array([truth[s][kind] for s in (6, 7, 8, 9)])
        t = stats.ttest_rel(ours, theirs)
        g = c["gains"][kind]
        assert g["level"] == pytest.approx(1 - g["alpha_star"])
        assert g["alpha_star"] in [pytest.approx(0.05 / m) for m in (1, 2, 3, 4)]  # Holm over 4 comparisons
        low, high = t.confidence_interval(g["level"])
        assert g["mean"] == pytest.approx((ours - theirs).mean())
        assert (g["low"], g["high"]) == (pytest.approx(low), pytest.approx(high))
        assert (g["decision"] in ("better", "worse")) == (t.pvalue < g["alpha_star"])
    assert c["gains"]["random"]["decision"] == "better"
    assert c["gains"]["random"]["verdict"].startswith("better by ")
    kinds = {b["kind"] for b in table["baselines"]}
    assert kinds == {"default", "uniform", "random", "kd_only"}
    text = format_table(table)
    assert text.startswith("Answer: Best: at K=3 [a, b, c], ")
    assert text.splitlines()[1].startswith("Confirmation stage: 4 seeds each, test split")
    assert "vs default hints" in text and "[" in text and "Baselines:" in text
    h = headline(table)
    assert h["confirmed_test_acc"] == pytest.approx(ours.mean())
    assert h["confirmed_gain_vs_default_ci_low"] == pytest.approx(c["gains"]["default"]["low"])


def test_confirm_settings_are_validated():
    for text, match in (("search: {confirm: {top_k: -1}}", r"search.confirm.top_k = -1 is invalid"),
                        ("search: {confirm: {seeds: -2, top_k: 0}}", r"search.confirm.seeds = -2 is invalid"),
                        ("search: {confirm: {top_k: 2, seeds: 1}}", r"cannot give a confidence interval"),
                        ("search: {baselines: [default, sorted]}", r"search.baselines.1 = 'sorted' is invalid"),
                        ("search: {confirm: {baselines: [even]}}", r"search.confirm.baselines.0 = 'even' is invalid"),
                        ("search: {confirm: {seeds: {min: 1, max: 5}}}", r"seeds.min: 1 cannot give a confidence"),
                        ("search: {confirm: {seeds: {min: 4, max: 3}}}", r"seeds.max: 3 is below seeds.min: 4"),
                        ("search: {confirm: {seeds: {min: 3, most: 5}}}", r"unknown key 'most' under seeds"),
                        ("search: {confirm: {seeds: {min: 3.5}}}", r"seeds.min must be a whole number"),
                        ("search: {confirm: {seeds: many}}", r"expected a number of seeds"),
                        ("search: {confirm: {margin: 0}}", r"search.confirm.margin = 0 is invalid: the equivalence"),
                        ("search: {confirm: {margin: -1}}", r"margin must be > 0"),
                        ("search: {confirm: {budget_hours: 0}}", r"search.confirm.budget_hours = 0 is invalid"),
                        ("search: {confirm: {budget_hours: -2}}", r"budget must be > 0 trial-hours")):
        with pytest.raises(ConfigError, match=match):
            config_from_text(text)
    ok = config_from_text("search: {confirm: {top_k: 0, seeds: 1}, metric: best, baselines: [uniform, random]}")
    assert ok.search.confirm.top_k == 0 and ok.search.metric == "best"
    default = config_from_text("").search.confirm
    assert default.baselines == ["default", "kd_only", "ce_only", "uniform", "random"]
    assert (default.min_seeds, default.max_seeds, default.margin, default.budget_hours) == (3, 3, 1.0, None)
    race = config_from_text("search: {confirm: {seeds: {min: 3, max: 10}, margin: 0.5, budget_hours: 2}}")
    assert (race.search.confirm.min_seeds, race.search.confirm.max_seeds) == (3, 10)
    again = race.with_values({"train.epochs": 2})  # a dumped and re-read range stays a range
    assert (again.search.confirm.min_seeds, again.search.confirm.max_seeds, again.search.confirm.margin) == (3, 10, 0.5)
    assert config_from_text("search: {confirm: {seeds: {max: 4}}}").search.confirm.min_seeds == 3


# ---------------------------------------------------------------- the race and the answer


def _race_groups(gain: float, sd: float, seeds=range(1, 11), seed: int = 0) -> dict[tuple, dict[int, float]]:
    """One configuration t1 (AT, K=3) and its default-hints and KD-only arms, with a true gain over the default
    hints of ``gain`` (the default hints' runs have noise ``sd``) and KD only 20 points below."""
    rng = np.random.default_rng(seed)
    out: dict[tuple, dict[int, float]] = {}
    for s in seeds:
        base = 80 + rng.normal()
        out.setdefault((SEARCHED, "t1"), {})[s] = base + rng.normal() * 0.1
        out.setdefault(("default", "at"), {})[s] = base - gain + rng.normal() * sd
        out.setdefault(("kd_only",), {})[s] = base - 20 + rng.normal() * 0.2
    return out


def _race(lo: int, hi: int) -> Race:
    cands = pick_top([_row("t1", 90.0, 90.0)], 1)
    return Race(comparisons_of(cands, ["default", "kd_only"]), lo, hi, margin=1.0)


def test_a_race_stops_early_on_a_clear_difference():
    race = _race(3, 10)
    got = replay(race, _race_groups(gain=4.0, sd=0.3), list(range(1, 11)))
    assert got["stopped"] == "every comparison decided after 3 seeds" and got["seeds"] == 3
    assert got["arm_seeds"] == 3 * 3  # three arms, min seeds each, nothing more
    assert {k: d.verdict for k, d in got["decisions"].items()} == {("t1", "default"): "better",
                                                                   ("t1", "kd_only"): "better"}


def test_a_race_runs_to_max_and_gives_seeds_only_to_open_arms():
    race = _race(3, 6)
    got = replay(race, _race_groups(gain=1.0, sd=3.0), list(range(1, 11)))
    assert got["stopped"] == "the most seeds (6) reached with 1 comparison(s) undecided" and got["seeds"] == 6
    assert race.decided[("t1", "kd_only")].verdict == "better"  # decided at the first look, frozen since
    assert race.decided[("t1", "kd_only")].n == 3
    assert got["decisions"][("t1", "default")].verdict == "undecided"
    assert got["decisions"][("t1", "default")].n == 6
    assert got["arm_seeds"] == 3 + 6 + 6  # KD only stopped at 3; t1 and the default hints went on to 6
    assert race.open_arms() == {(SEARCHED, "t1"), ("default", "at")}


def test_the_replay_makes_a_live_races_decisions():
    """A race fed round by round (only the seeds it asked for) decides exactly what its replay decides."""
    groups = _race_groups(gain=0.2, sd=0.4, seed=3)
    seeds = list(range(1, 11))
    replayed = replay(_race(3, 10), groups, seeds)
    live, have, n = _race(3, 10), {}, 3
    for arm in groups:
        have[arm] = {s: groups[arm][s] for s in seeds[:3]}
    while True:
        live.look(have, n)
        if stop_reason(live, n):
            break
        n += 1
        for arm in live.open_arms():
            have[arm][seeds[n - 1]] = groups[arm][seeds[n - 1]]
    assert n == replayed["seeds"] and sum(len(v) for v in have.values()) == replayed["arm_seeds"]
    assert {k: (d.verdict, d.n) for k, d in live.decided.items()} == \
        {k: (d.verdict, d.n) for k, d in replayed["decisions"].items() if d.decided}
    assert replayed["decisions"][("t1", "default")].verdict == "equivalent"


def test_the_budget_ends_a_race():
    race = _race(3, 10)
    race.look(_race_groups(gain=1.0, sd=3.0, seeds=range(1, 4)), 3)
    assert stop_reason(race, 3, hours=0.4, budget_hours=1.0) is None
    assert stop_reason(race, 3, hours=1.2, budget_hours=1.0) == \
        "the budget of 1 trial-hours spent (1.20 h) with 1 comparison(s) undecided"


def test_plan_keeps_only_the_open_arms_and_plans_the_ce_only_student():
    cands = pick_top([_row("t1", 90.0, 90.0, k=3, layers="a,b,c")], 1)
    every = plan(CFG, cands, [9], ["default", "kd_only", "ce_only", "random"])
    assert {arm_of(t) for t in every} == {(SEARCHED, "t1"), ("default", "at"), ("kd_only",), ("ce_only",),
                                          ("random", "at", 3)}
    some = plan(CFG, cands, [9], ["default", "kd_only", "ce_only", "random"], arms={(SEARCHED, "t1"), ("ce_only",)})
    assert sorted(t[BASELINE_KEY] for t in some) == ["", "ce_only"] and {t["train.seed"] for t in some} == {9}


def _table_with(best_is_kd: bool) -> dict:
    """Five seeds by hand: the configuration within ±0.2 of the default hints every seed, KD only 3 points
    above (or below) it."""
    cands = pick_top([_row("t1", 90.0, 90.0, layers="layer1.2,layer2.1,layer3.0")], 1)
    base = [90.1, 89.4, 90.8, 90.0, 89.7]
    wobble = [0.1, -0.2, 0.15, -0.05, 0.0]
    kd = [3.1, 2.9, 3.0, 3.2, 2.8]
    out = []
    for seed, b, w, k in zip(range(6, 11), base, wobble, kd):
        out.append(ConfirmedResult(SEARCHED, "t1", "at", 3, seed, b, 0.0, "layer1.2,layer2.1,layer3.0"))
        out.append(ConfirmedResult("default", "default", "at", 3, seed, b + w, 0.0))
        out.append(ConfirmedResult("kd_only", "kd_only", "kd_only", 0, seed, b + (k if best_is_kd else -k), 0.0))
    return confirmation_table(cands, out, 5)


def test_the_answer_names_a_baseline_when_it_is_best():
    table = _table_with(best_is_kd=True)
    a = table["answer"]
    assert a.startswith("Best: KD only (a baseline), 93.")
    assert "the best searched configuration, at K=3 [layer1.2, layer2.1, layer3.0], scores 90." in a
    assert "Against default hints it is equivalent within ±1 point" in a
    assert "; against KD only it is worse by 3." in a
    assert a.endswith("Hint placement matters by less than 1 point here: keep the default hints. The strongest "
                      "configuration here is KD only.")


def test_the_answer_names_the_configuration_when_it_is_best():
    a = _table_with(best_is_kd=False)["answer"]
    assert a.startswith("Best: at K=3 [layer1.2, layer2.1, layer3.0], 90.") and "(5 seeds)." in a
    assert "against KD only it is better by 3." in a and "strongest" not in a


def test_cohorts_group_the_arms_of_a_seed_by_what_they_must_share_and_split_them_evenly():
    from pursuhint.search.confirm import COHORT_KEY, cohorts, planned_arms

    cands = pick_top([_row("t1", 90.0, 90.0, k=3, layers="a,b,c", lr=0.05),
                      _row("t2", 89.0, 89.0, k=2, layers="a,c", method="fitnet", hw=50.0, lr=0.1)], 2)
    trials = plan(CFG, cands, [6, 7], ["default", "kd_only", "uniform"])
    assert len(trials) == 14  # 2 configurations, 2 default, 2 uniform and KD only, × 2 seeds
    groups = cohorts(trials, 8)
    arms = [planned_arms(g) for g in groups]
    assert sorted(a for g in arms for a in map(repr, g)) == sorted(map(repr, trials))  # each arm once
    for g in arms:  # one seed and one recipe per cohort: the lr is searched, so t2's arms train apart
        assert len({(a["train.seed"], a.get("train.lr")) for a in g}) == 1
    assert sorted(len(g) for g in arms) == [1, 1, 3, 3, 3, 3]  # KD only has no lr of its own: with neither
    assert all(COHORT_KEY not in g for g in groups if len(planned_arms(g)) == 1)  # a cohort of one is plain
    halves = [len(planned_arms(g)) for g in cohorts(trials, 2)]
    assert max(halves) == 2 and sum(halves) == 14
    five = [{"train.seed": 6, "distill.method": m} for m in ("at", "fitnet", "sp", "vid", "kd_only")]
    assert [len(planned_arms(g)) for g in cohorts(five, 4)] == [3, 2]  # near-equal parts, not 4 + 1
    assert all(len(planned_arms(g)) == 1 for g in cohorts(trials, 1))  # cohort: off


def test_a_cohort_trials_last_report_gives_each_members_result():
    import json

    from pursuhint.search.confirm import COHORT_KEY, confirmed_results
    from pursuhint.search.trial_keys import MEMBERS_KEY

    specs = [{BASELINE_KEY: "", CONFIRMS_KEY: "t1", "train.seed": 6, "distill.method": "at"},
             {BASELINE_KEY: "kd_only", CONFIRMS_KEY: "kd_only", "train.seed": 6, "distill.method": "kd_only"},
             {BASELINE_KEY: "default", CONFIRMS_KEY: "default", "train.seed": 6, "distill.method": "at"}]
    members = {"0": [{"test_acc": 91.5, "final_val_acc": 90.0, "method_name": "at", "n_hints_used": 3,
                      "hint_layer_names": "a,b,c", "status": "completed"}],
               "1": [{"test_acc": 88.0, "method_name": "kd_only", "status": "completed"}]}  # member 2 never ended
    got = confirmed_results({COHORT_KEY: specs}, {MEMBERS_KEY: json.dumps(members)})
    assert [(r.kind, r.confirms, r.seed, r.test_acc) for r in got[:2]] == [(SEARCHED, "t1", 6, 91.5),
                                                                         ("kd_only", "kd_only", 6, 88.0)]
    assert got[0].hint_layers == "a,b,c" and got[0].n_hints == 3
    assert got[2].kind == "default" and np.isnan(got[2].test_acc)  # left out of the comparisons
