"""Confirmation-stage statistics against scipy: summaries, paired gains by seed, t CIs, verdicts, refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from pursuhint.baselines import BASELINE_KINDS, BASELINE_LABELS
from pursuhint.errors import PursuhintError, StatsError
from pursuhint.search.stats import Gain, Summary, label_of, paired_gain, summarise, verdict


def by_seed(values, seeds=None) -> dict[int, float]:
    seeds = range(len(values)) if seeds is None else seeds
    return {int(s): float(v) for s, v in zip(seeds, values)}


def assert_matches_scipy(a: np.ndarray, b: np.ndarray, level: float) -> Gain:
    """paired_gain on a, b (seeds 0..n-1) equals scipy's paired t figures."""
    g = paired_gain(by_seed(a), by_seed(b), level=level)
    d = a - b
    n = len(d)
    ref = stats.ttest_rel(a, b)
    ci = ref.confidence_interval(confidence_level=level)
    low, high = stats.t.interval(level, n - 1, loc=np.mean(d), scale=stats.sem(d))
    assert g.n == n and g.seeds == tuple(range(n)) and g.level == level
    assert g.mean == pytest.approx(np.mean(d), rel=1e-12, abs=1e-12)
    assert g.sd == pytest.approx(np.std(d, ddof=1), rel=1e-12)
    assert g.mean / (g.sd / math.sqrt(n)) == pytest.approx(ref.statistic, rel=1e-9)
    assert (g.low, g.high) == pytest.approx((ci.low, ci.high), rel=1e-9, abs=1e-12)
    assert (g.low, g.high) == pytest.approx((low, high), rel=1e-9, abs=1e-12)
    # the CI excludes 0 exactly when the two-sided paired t test rejects at 1 - level
    assert (g.direction != "none") == (ref.pvalue < 1 - level)
    return g


# ---------------------------------------------------------------- summaries


@pytest.mark.parametrize("values", [[93.1], [93.1, 94.4], [92.0, 93.5, 94.1, 91.7, 93.3], list(range(10))])
def test_summary_is_mean_and_sample_sd(values):
    s = summarise(values)
    assert s.n == len(values)
    assert s.mean == pytest.approx(np.mean(values))
    if len(values) >= 2:
        assert s.sd == pytest.approx(np.std(values, ddof=1))
        assert s.sd == pytest.approx(math.sqrt(stats.describe(values).variance))
        assert s.sd / math.sqrt(s.n) == pytest.approx(stats.sem(values))
    else:
        assert math.isnan(s.sd)


def test_summary_as_dict_is_json_without_nan():
    one = summarise([93.1]).as_dict()
    assert one == {"mean": 93.1, "sd": None, "n": 1}
    assert json.loads(json.dumps(summarise([1.0, 3.0]).as_dict(), allow_nan=False)) == {
        "mean": 2.0, "sd": pytest.approx(math.sqrt(2)), "n": 2}
    assert isinstance(summarise([1.0, 2.0]), Summary)


@pytest.mark.parametrize("values, message", [([], "at least one"), ([93.0, float("nan")], "nan"),
                                              ([93.0, float("inf")], "inf")])
def test_summary_refusals(values, message):
    with pytest.raises(StatsError, match=message):
        summarise(values)


# ---------------------------------------------------------------- paired gains


def test_hand_made_five_seeds():
    config = np.array([93.0, 94.5, 92.8, 93.9, 94.1])
    base = np.array([92.5, 93.6, 92.9, 93.0, 93.2])
    g = assert_matches_scipy(config, base, 0.95)
    assert g.mean == pytest.approx(0.62)
    assert g.direction == "better"
    assert verdict(g, "default") == "better than default hints"


def test_hand_made_two_seeds_uses_one_degree_of_freedom():
    config, base = np.array([94.0, 93.0]), np.array([93.0, 92.5])
    g = assert_matches_scipy(config, base, 0.95)
    # mean 0.75, sd of (1.0, 0.5) is sqrt(0.125); t_{0.975, 1} = 12.706...
    half = stats.t.ppf(0.975, 1) * math.sqrt(0.125) / math.sqrt(2)
    assert (g.low, g.high) == pytest.approx((0.75 - half, 0.75 + half))
    assert stats.t.ppf(0.975, 1) == pytest.approx(12.7062, abs=1e-4)
    assert verdict(g, "default") == "no difference shown with 2 seeds"


def test_negative_gain_is_worse():
    config = np.array([91.0, 91.5, 90.8, 91.2, 91.1])
    base = np.array([93.0, 93.1, 92.9, 93.4, 92.8])
    g = assert_matches_scipy(config, base, 0.95)
    assert g.mean < 0 and g.high < 0
    assert verdict(g, "uniform") == "worse than uniform hints"


def test_positive_mean_with_a_ci_spanning_zero_shows_no_difference():
    config = np.array([93.1, 95.0, 92.0, 94.9, 92.6])
    base = np.array([93.0, 93.0, 93.0, 93.0, 93.0])
    g = assert_matches_scipy(config, base, 0.95)
    assert g.mean > 0 and g.low < 0 < g.high
    assert verdict(g, "default") == "no difference shown with 5 seeds"


@pytest.mark.parametrize("trial", range(30))
def test_random_cases_match_scipy(trial):
    rng = np.random.default_rng(1000 + trial)
    n = int(rng.integers(2, 11))
    level = [0.8, 0.9, 0.95, 0.99][trial % 4]
    base = rng.normal(93.0, 1.0, n)
    config = base + rng.normal(rng.normal(0.0, 1.0), rng.uniform(0.1, 2.0), n)
    assert_matches_scipy(config, base, level)


def test_level_widens_the_ci():
    config, base = by_seed([93.0, 94.5, 92.8, 93.9]), by_seed([92.5, 93.6, 92.9, 93.0])
    g90, g95, g99 = (paired_gain(config, base, level) for level in (0.9, 0.95, 0.99))
    assert g90.mean == g95.mean == g99.mean
    assert g99.low < g95.low < g90.low < g90.high < g95.high < g99.high
    assert paired_gain(config, base).level == 0.95  # the default


# zero-variance differences: scipy's t test is undefined (sd 0); pursuhint collapses the CI to the mean,
# so the verdict follows the sign of the (identical) differences, and a zero point shows no difference.
@pytest.mark.parametrize("delta, words", [(0.5, "better than default hints"), (-0.25, "worse than default hints"),
                                           (0.0, "no difference shown with 3 seeds")])
def test_equal_differences_collapse_the_ci_to_a_point(delta, words):
    base = [92.5, 93.75, 94.0]  # exactly representable, so the differences are exactly equal
    g = paired_gain(by_seed([b + delta for b in base]), by_seed(base))
    assert g.sd == 0.0
    assert g.low == g.high == g.mean == delta
    assert verdict(g, "default") == words


def test_pairs_only_seeds_present_in_both():
    config = {3: 94.0, 0: 93.0, 1: 95.0, 2: 92.0}
    base = {4: 10.0, 1: 94.0, 2: 91.5, 3: 92.0}  # seed 0 only in config, seed 4 only in the baseline
    g = paired_gain(config, base)
    assert g.seeds == (1, 2, 3) and g.n == 3
    d = np.array([95.0 - 94.0, 92.0 - 91.5, 94.0 - 92.0])
    ci = stats.ttest_rel([95.0, 92.0, 94.0], [94.0, 91.5, 92.0]).confidence_interval(0.95)
    assert g.mean == pytest.approx(d.mean()) and g.sd == pytest.approx(d.std(ddof=1))
    assert (g.low, g.high) == pytest.approx((ci.low, ci.high))
    # pairing is by seed, not by position or insertion order
    assert paired_gain(dict(reversed(list(config.items()))), base) == g


@pytest.mark.parametrize("config, base, count", [({0: 93.0}, {0: 92.0}, 1), ({0: 93.0, 1: 94.0}, {1: 92.0, 2: 91.0}, 1),
                                                  ({0: 93.0, 1: 94.0}, {2: 92.0, 3: 91.0}, 0), ({}, {}, 0)])
def test_fewer_than_two_common_seeds_is_refused(config, base, count):
    with pytest.raises(StatsError, match=rf"but they have {count} in common") as info:
        paired_gain(config, base)
    assert isinstance(info.value, PursuhintError)
    assert str(info.value).count(". ") == 0  # one sentence


@pytest.mark.parametrize("level", [0, 1, 1.5, -0.1, True, "0.95"])
def test_bad_level_is_refused(level):
    with pytest.raises(StatsError, match="strictly between 0 and 1"):
        paired_gain({0: 1.0, 1: 2.0}, {0: 0.0, 1: 0.5}, level=level)


def test_non_finite_score_is_refused_naming_its_seed():
    with pytest.raises(StatsError, match="baseline's score for seed 7 is nan"):
        paired_gain({3: 93.0, 7: 94.0}, {3: 92.0, 7: float("nan")})


def test_gain_as_dict_is_json():
    g = paired_gain({0: 93.0, 1: 94.5, 2: 92.8}, {0: 92.5, 1: 93.6, 2: 92.9})
    d = json.loads(json.dumps(g.as_dict(), allow_nan=False))
    assert d == {"mean": pytest.approx(g.mean), "sd": pytest.approx(g.sd), "n": 3, "low": pytest.approx(g.low),
                 "high": pytest.approx(g.high), "level": 0.95, "seeds": [0, 1, 2], "direction": g.direction}


# ---------------------------------------------------------------- verdicts


def point(value: float, n: int = 4) -> Gain:
    return Gain(mean=value, sd=0.0, n=n, low=value, high=value, level=0.95, seeds=tuple(range(n)))


def test_the_three_verdicts():
    assert verdict(Gain(0.5, 0.2, 3, 0.1, 0.9, 0.95, (0, 1, 2)), "default") == "better than default hints"
    assert verdict(Gain(-0.5, 0.2, 3, -0.9, -0.1, 0.95, (0, 1, 2)), "default") == "worse than default hints"
    assert verdict(Gain(0.3, 0.9, 3, -0.2, 0.8, 0.95, (0, 1, 2)), "default") == "no difference shown with 3 seeds"
    # a CI touching 0 does not lie entirely on one side
    five = tuple(range(5))
    assert verdict(Gain(0.4, 0.2, 5, 0.0, 0.8, 0.95, five), "default") == "no difference shown with 5 seeds"
    assert verdict(Gain(-0.4, 0.2, 5, -0.8, 0.0, 0.95, five), "default") == "no difference shown with 5 seeds"


@pytest.mark.parametrize("name, words", [("default", "default hints"), ("kd_only", "KD only"),
                                          ("uniform", "uniform hints"), ("random", "random hints")])
def test_every_baseline_has_its_words(name, words):
    assert BASELINE_LABELS[name] == words == label_of(name)
    assert verdict(point(1.0), name) == f"better than {words}"
    assert verdict(point(-1.0), name) == f"worse than {words}"
    assert verdict(point(0.0, n=3), name) == "no difference shown with 3 seeds"


def test_labels_cover_the_baseline_kinds_and_words_pass_through():
    assert set(BASELINE_LABELS) == set(BASELINE_KINDS) == {"default", "kd_only", "uniform", "random", "ce_only", "dkd",
                                                           "reviewkd", "semckd"}
    assert verdict(point(1.0), "default hints") == "better than default hints"
    assert verdict(point(-1.0), "the paper's set") == "worse than the paper's set"
