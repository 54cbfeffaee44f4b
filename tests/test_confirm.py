"""The confirmation stage's plan and table, without Ray: which configurations, which trials, which numbers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from pursuhint.config import config_from_text
from pursuhint.errors import ConfigError
from pursuhint.search.confirm import (CONFIRMS_KEY, ROLE_KEY, SEARCHED, ConfirmedResult, confirm_seeds,
                                      confirmation_table, format_table, headline, pick_top, plan)
from pursuhint.search.results import row_from_result
from pursuhint.search.space import BASELINE_KEY

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
        low, high = t.confidence_interval(0.95)
        g = c["gains"][kind]
        assert g["mean"] == pytest.approx((ours - theirs).mean())
        assert (g["low"], g["high"]) == (pytest.approx(low), pytest.approx(high))
    assert c["gains"]["random"]["verdict"] == "better than random hints"
    assert c["gains"]["default"]["verdict"].startswith(("better than default hints", "no difference shown with 4"))
    kinds = {b["kind"] for b in table["baselines"]}
    assert kinds == {"default", "uniform", "random", "kd_only"}
    text = format_table(table)
    assert text.startswith("Confirmation stage: 4 seeds each, test split")
    assert "vs default hints" in text and "[" in text and "Baselines:" in text
    h = headline(table)
    assert h["confirmed_test_acc"] == pytest.approx(ours.mean())
    assert h["confirmed_gain_vs_default_ci_low"] == pytest.approx(c["gains"]["default"]["low"])


def test_confirm_settings_are_validated():
    for text, match in (("search: {confirm: {top_k: -1}}", r"search.confirm.top_k = -1 is invalid"),
                        ("search: {confirm: {seeds: -2, top_k: 0}}", r"search.confirm.seeds = -2 is invalid"),
                        ("search: {confirm: {top_k: 2, seeds: 1}}", r"cannot give a confidence interval"),
                        ("search: {baselines: [default, sorted]}", r"search.baselines.1 = 'sorted' is invalid"),
                        ("search: {confirm: {baselines: [even]}}", r"search.confirm.baselines.0 = 'even' is invalid")):
        with pytest.raises(ConfigError, match=match):
            config_from_text(text)
    ok = config_from_text("search: {confirm: {top_k: 0, seeds: 1}, metric: best, baselines: [uniform, random]}")
    assert ok.search.confirm.top_k == 0 and ok.search.metric == "best"
    assert config_from_text("").search.confirm.baselines == ["default", "kd_only", "uniform", "random"]
