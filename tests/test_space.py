"""Search spaces whose leaves depend on the sampled method (``by_method``): Optuna samples only the chosen
method's branch, every branch and every method is validated, baselines take their method's branch."""

from __future__ import annotations

import math

import pytest

from pursuhint.config import config_from_text
from pursuhint.preflight import check_names
from pursuhint.errors import ConfigError
from pursuhint.search.searcher import make_searcher
from pursuhint.search.space import baseline_configs, plain_values
from pursuhint.search.trial_keys import BASELINE_KEY

SPACE = """
seed: 3
distill:
  method: {choice: [at, fitnet, vid]}
  hint_ratio: {by_method: {at: {loguniform: [0.3, 3]}, fitnet: {loguniform: [0.03, 0.1]}, default: 2.0}}
  kd_weight: {by_method: {fitnet: {uniform: [0.5, 0.9]}, default: 0.0}}
train: {lr: {by_method: {at: {choice: [0.1, 0.2]}, default: 0.05}}}
search: {num_samples: 40, searcher: random}
"""
RANGES = {"at": (0.3, 3.0), "fitnet": (0.03, 0.1)}


def test_only_the_chosen_methods_branch_is_sampled():
    cfg = config_from_text(SPACE)
    searcher = make_searcher(cfg)
    seen = set()
    for i in range(len(baseline_configs(cfg)) + 40):
        sampled = searcher.suggest(f"t{i}")
        if sampled[BASELINE_KEY]:
            continue
        method = sampled["distill.method"]
        seen.add(method)
        # Optuna's own names: one per branch, and only the chosen method's
        branches = {k for k in sampled if "@" in k}
        assert branches == {f"distill.hint_ratio@{method}", f"distill.kd_weight@{method}", f"train.lr@{method}"}
        values = {k: v for k, v in plain_values(sampled).items() if k != BASELINE_KEY}
        assert not any("@" in k for k in values)
        ratio = values["distill.hint_ratio"]
        assert ratio == sampled[f"distill.hint_ratio@{method}"]
        if method in RANGES:
            low, high = RANGES[method]
            assert low <= ratio <= high, (method, ratio)
        else:
            assert ratio == 2.0  # vid: the default branch
        assert (0.5 <= values["distill.kd_weight"] <= 0.9) if method == "fitnet" else values["distill.kd_weight"] == 0
        assert values["train.lr"] in ((0.1, 0.2) if method == "at" else (0.05,))
        trial_cfg = cfg.with_values(values)  # what the trial trains with
        assert trial_cfg.distill.hint_ratio == ratio and trial_cfg.distill.method == method
    assert seen == {"at", "fitnet", "vid"}


def test_defaults_and_baselines_take_their_methods_branch():
    cfg = config_from_text(SPACE)
    # non-sweep commands: the default method (paper default absent, so the first choice, at)
    assert cfg.searched_defaults["distill.hint_ratio"] == pytest.approx(math.sqrt(0.3 * 3))
    assert cfg.distill.hint_ratio == pytest.approx(math.sqrt(0.9)) and cfg.train.lr == 0.1
    by = {(b[BASELINE_KEY], b["distill.method"]): b for b in baseline_configs(cfg)}
    assert by[("default", "fitnet")]["distill.hint_ratio"] == pytest.approx(math.sqrt(0.003))
    assert by[("default", "fitnet")]["distill.kd_weight"] == pytest.approx(0.7)
    assert by[("default", "vid")]["distill.hint_ratio"] == 2.0 and by[("default", "vid")]["train.lr"] == 0.05
    assert by[("kd_only", "kd_only")]["distill.kd_weight"] == 0.0  # kd_only: the default branch


def test_to_yaml_round_trips_a_by_method_space():
    cfg = config_from_text(SPACE)
    again = config_from_text(cfg.to_yaml())
    assert again.space == cfg.space and again.searched_defaults == cfg.searched_defaults


@pytest.mark.parametrize("leaf, fragment", [
    ("{by_method: {at: {loguniform: [0.3, 3]}}}", "may train 'fitnet'"),  # fitnet has no branch, no default
    ("{by_method: {at: {loguniform: [-1, 3]}, default: 1.0}}", "loguniform bounds must be > 0"),
    ("{by_method: {at: -2.0, default: 1.0}}", "distill.hint_ratio = -2.0 is invalid"),
    ("{by_method: {at: {by_method: {fitnet: 1.0}}, default: 1.0}}", "cannot hold another by_method"),
    ("{by_method: {}}", "by_method needs a mapping"),
    ("{by_method: {at: [1, 2], default: 1.0}}", "must be a search-space spec or a plain value"),
])
def test_bad_by_method_leaves_are_refused(leaf, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace("]", r"\]").replace("[", r"\[")):
        config_from_text(f"distill: {{method: {{choice: [at, fitnet]}}, hint_ratio: {leaf}}}")


def test_unknown_method_names_in_a_branch_are_refused():
    cfg = config_from_text("distill: {method: at, hint_ratio: {by_method: {at: 1.0, fitnett: 0.1}}}")
    with pytest.raises(ConfigError, match=r"distill.hint_ratio.by_method: unknown value 'fitnett' \(did you mean "
                                          r"'fitnet'\?\)"):
        check_names(cfg)


def test_the_method_itself_cannot_depend_on_the_method():
    with pytest.raises(ConfigError, match="distill.method cannot itself be by_method"):
        config_from_text("distill: {method: {by_method: {at: fitnet}}}")


@pytest.mark.parametrize("values, fragment", [
    ("{distill.hint_weight: -1}", "search.baseline_values: config: distill.hint_weight = -1 is invalid"),
    ("{distill.hint_wieght: null}", "unknown key 'distill.hint_wieght' (did you mean 'distill.hint_weight'?)"),
    ("{search.num_samples: 2}", "must set a plain value of another section"),
    ("{train.lr: {loguniform: [0.01, 0.1]}}", "must set a plain value of another section"),
])
def test_bad_baseline_values_are_refused(values, fragment):
    with pytest.raises(ConfigError) as info:
        config_from_text(f"search: {{baseline_values: {values}}}")
    assert fragment in str(info.value)


def test_baseline_values_reach_the_search_stages_baselines_only():
    cfg = config_from_text(SPACE.replace("search: {", "search: {baseline_values: {distill.hint_weight: 100}, "))
    for b in baseline_configs(cfg):
        assert b["distill.hint_weight"] == 100
    assert cfg.distill.hint_weight == "auto"  # what searched trials train with
    assert "distill.hint_weight" not in cfg.space
