"""The verdicts (``stats.decide``) against scipy, Holm over a table, and a Monte-Carlo check of the racing rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from pursuhint.errors import StatsError
from pursuhint.search.stats import (BETTER, EQUIVALENT, UNDECIDED, WORSE, alpha_at_look, decide, decide_table,
                                    looks_of, verdict_codes)


def tost_equivalent(d: np.ndarray, margin: float, level: float) -> bool:
    """scipy's two one-sided tests: both nulls (mean ≤ −margin, mean ≥ +margin) rejected at ``level``."""
    lower = stats.ttest_1samp(d, -margin, alternative="greater").pvalue
    upper = stats.ttest_1samp(d, margin, alternative="less").pvalue
    return max(lower, upper) < level


@pytest.mark.parametrize("seed", range(40))
def test_decide_matches_scipys_ci_t_test_and_tost(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 12))
    d = rng.normal(rng.uniform(-2, 2), rng.uniform(0.1, 2), n)
    comparisons, max_seeds, min_seeds = int(rng.integers(1, 5)), [None, 10, 6][seed % 3], 3
    dec = decide(d, alpha=0.05, margin=1.0, max_seeds=max_seeds, comparisons=comparisons, min_seeds=min_seeds)
    looks = 1 if max_seeds is None else max_seeds - min_seeds + 1
    share = 0.05 if looks == 1 else 0.05 / 2 if n - min_seeds + 1 >= looks else 0.05 / (2 * (looks - 1))
    a_star = share / comparisons
    assert dec.alpha_star == pytest.approx(a_star) and dec.n == n
    low, high = stats.t.interval(1 - a_star, n - 1, loc=np.mean(d), scale=stats.sem(d))
    assert (dec.low, dec.high) == pytest.approx((low, high), rel=1e-9)
    p_two_sided = stats.ttest_1samp(d, 0.0).pvalue
    directional = p_two_sided < a_star
    assert (dec.verdict in ("better", "worse")) == directional
    if directional:
        assert dec.verdict == ("better" if np.mean(d) > 0 else "worse")
    else:  # equivalence is the TOST at α*/2 per side (one CI at level 1 − α* decides all three verdicts)
        assert (dec.verdict == "equivalent") == tost_equivalent(d, 1.0, a_star / 2)
    assert dec.decided == (dec.p_value < a_star)  # Holm orders by this p: decided exactly when p < α*
    assert dec.p_value <= p_two_sided + 1e-12


def test_equivalent_better_within_margin_and_undecided_by_hand():
    # mean 0.1, sd 0.1, n 4: t_{0.975,3} = 3.182; half = 0.159 → CI [-0.059, 0.259] inside ±1
    eq = decide([0.0, 0.1, 0.2, 0.1])
    assert eq.verdict == "equivalent" and eq.within_margin
    assert eq.high == pytest.approx(0.1 + 3.182446 * np.std([0, .1, .2, .1], ddof=1) / 2, rel=1e-5)
    assert eq.words().startswith("equivalent within ±1 point (+0.10 [")
    small = decide([0.4, 0.5, 0.6, 0.5])  # CI [0.34, 0.66]: better, but by less than the margin
    assert small.verdict == "better" and small.within_margin and "less than the ±1-point margin" in small.words()
    big = decide([-3.0, -2.5, -3.5, -3.0])
    assert big.verdict == "worse" and not big.within_margin and big.words().startswith("worse by 3.00 [")
    assert "same difference" not in small.words() + big.words() + eq.words()
    # the lent H200's tiny run: two students at chance, 10.67 % and 10.00 % on both seeds (sd 0, a point CI)
    flat = decide([10.67 - 10.0, 10.67 - 10.0])
    assert (flat.verdict, flat.sd, flat.low, flat.high) == ("better", 0.0, flat.mean, flat.mean)
    assert flat.words() == ("better by 0.67 [+0.67, +0.67], less than the ±1-point margin; all 2 seeds gave the "
                            "same difference, so check that both arms learned")
    assert decide([0.0, 0.0, 0.0]).words() == ("equivalent within ±1 point (+0.00 [+0.00, +0.00]); all 3 seeds gave "
                                               "the same difference, so check that both arms learned")
    open_ = decide([1.0, -1.0, 2.0])
    assert open_.verdict == "undecided" and open_.seeds_needed is not None and open_.seeds_needed > 3
    assert open_.words().startswith("undecided after 3 seeds (+0.67 [") and "seeds would decide it" in open_.words()
    # the projection is right: at the projected count, the same mean and sd decide
    m = open_.seeds_needed
    half = stats.t.ppf(1 - 0.05 / 2, m - 1) * open_.sd / math.sqrt(m)
    assert abs(open_.mean) > half or abs(open_.mean) + half < 1.0
    half_before = stats.t.ppf(1 - 0.05 / 2, m - 2) * open_.sd / math.sqrt(m - 1)
    assert not (abs(open_.mean) > half_before or abs(open_.mean) + half_before < 1.0)


def test_decide_refuses_what_cannot_be_decided():
    with pytest.raises(StatsError, match="at least 2 paired differences"):
        decide([1.0])
    with pytest.raises(StatsError, match="margin must be > 0"):
        decide([1.0, 2.0], margin=0)
    with pytest.raises(StatsError, match="alpha must lie strictly between 0 and 1"):
        decide([1.0, 2.0], alpha=1.5)
    with pytest.raises(StatsError, match="finite"):
        decide([1.0, float("nan")])


def holm_rejections(p: dict[str, float], alpha: float) -> set[str]:
    """Holm's step-down by hand: the i-th smallest p (from 0) of m is rejected at α/(m − i), until one is not."""
    out, m = set(), len(p)
    for i, key in enumerate(sorted(p, key=p.get)):
        if p[key] >= alpha / (m - i):
            break
        out.add(key)
    return out


@pytest.mark.parametrize("seed", range(25))
def test_decide_table_is_holms_step_down(seed):
    rng = np.random.default_rng(100 + seed)
    table = {f"c{i}": rng.normal(rng.choice([0.0, 0.3, 2.0, -2.0]), rng.uniform(0.2, 1.5), int(rng.integers(3, 9)))
             for i in range(int(rng.integers(2, 7)))}
    max_seeds, look = [None, 10][seed % 2], int(rng.integers(1, 9))
    a_look = alpha_at_look(0.05, look, looks_of(max_seeds, 3))
    assert a_look == (0.05 if max_seeds is None else 0.025 if look == 8 else 0.05 / 14)
    got = decide_table(table, margin=1.0, max_seeds=max_seeds, min_seeds=3, look=look)
    p = {k: decide(v, margin=1.0, max_seeds=max_seeds, min_seeds=3, look=look).p_value for k, v in table.items()}
    assert {k for k, d in got.items() if d.decided} == holm_rejections(p, a_look)
    order = sorted(p, key=p.get)
    for i, key in enumerate(order):  # decided ones at their Holm level α_look/(m − i)
        if got[key].decided:
            assert got[key].alpha_star == pytest.approx(a_look / (len(order) - i))


def test_holm_on_a_hand_made_table():
    """Three comparisons: p ≈ 0.0001, 0.018, 0.6 at one look. Holm rejects the first at 0.05/3, the second at
    0.05/2, stops at the third; Bonferroni (0.05/3 each) would not decide the second."""
    a = np.array([1.0, 1.2, 0.9, 1.1, 1.3])  # clearly better
    b = np.array([0.9, -0.06, 1.74, 0.42, 1.14, 1.38])  # p 0.018: better at 0.025, not at 0.0167
    c = np.array([2.0, -2.5, 1.5, -1.0])  # undecided
    p = {k: stats.ttest_1samp(v, 0.0).pvalue for k, v in dict(a=a, b=b, c=c).items()}
    assert p["a"] < 0.05 / 3 and 0.05 / 3 < p["b"] < 0.05 / 2 and p["c"] > 0.05
    got = decide_table(dict(a=a, b=b, c=c), margin=0.1)
    assert got["a"].verdict == "better" and got["a"].alpha_star == pytest.approx(0.05 / 3)
    assert got["b"].verdict == "better" and got["b"].alpha_star == pytest.approx(0.05 / 2)
    assert got["c"].verdict == "undecided" and got["c"].alpha_star == pytest.approx(0.05 / 1)
    assert decide(b, margin=0.1, comparisons=3).verdict == "undecided"


# ---------------------------------------------------------------- the racing rule, simulated


def simulate_races(diffs: np.ndarray, min_seeds: int, max_seeds: int, margin: float, alpha: float) -> np.ndarray:
    """Each row of ``diffs`` is one race's paired differences for seeds 1..max; the race looks after min, min+1,
    ... seeds with decide's rule (verdict_codes, at each look's share of α) and keeps the first decided verdict."""
    races, looks = diffs.shape[0], looks_of(max_seeds, min_seeds)
    final = np.full(races, UNDECIDED)
    for n in range(min_seeds, max_seeds + 1):
        x = diffs[:, :n]
        a_star = alpha_at_look(alpha, n - min_seeds + 1, looks)
        codes = verdict_codes(x.mean(axis=1), x.std(axis=1, ddof=1), n, a_star, margin)
        fresh = (final == UNDECIDED) & (codes != UNDECIDED)
        final[fresh] = codes[fresh]
    return final


def test_the_vectorised_rule_is_decides_rule():
    rng = np.random.default_rng(7)
    x = rng.normal(0.5, 1.0, (300, 6))
    codes = verdict_codes(x.mean(1), x.std(1, ddof=1), 6, 0.05 / 6, 1.0)  # look 1 of 4: α / (2 · 3)
    names = {BETTER: "better", WORSE: "worse", EQUIVALENT: "equivalent", UNDECIDED: "undecided"}
    for row, code in zip(x, codes):
        assert decide(row, max_seeds=9, min_seeds=6).verdict == names[int(code)]


@pytest.mark.parametrize("noise", ["normal", "t3"])
def test_racing_keeps_the_error_rates_in_monte_carlo(noise):
    """20,000 races (3 to 10 seeds, sd 1.5, margin 1, α 0.05) per true difference: at 0 a false better/worse is
    at most α (plus Monte-Carlo error); at ±margin a false "equivalent" is at most α too."""
    races, lo, hi, margin, alpha, sd = 20_000, 3, 10, 1.0, 0.05, 1.5
    rng = np.random.default_rng(2026 if noise == "normal" else 3)

    def noise_draw() -> np.ndarray:
        if noise == "normal":
            return rng.normal(0, sd, (races, hi))
        return rng.standard_t(3, (races, hi)) * sd / math.sqrt(3)  # t with 3 df, scaled to sd 1.5

    slack = 3 * math.sqrt(alpha * (1 - alpha) / races)
    at_zero = simulate_races(noise_draw(), lo, hi, margin, alpha)
    assert np.mean((at_zero == BETTER) | (at_zero == WORSE)) <= alpha + slack
    for truth in (margin, -margin):
        at_margin = simulate_races(truth + noise_draw(), lo, hi, margin, alpha)
        assert np.mean(at_margin == EQUIVALENT) <= alpha + slack
    # the rule is not vacuous: a clear difference is found, and no difference at a third of the spread is
    # called equivalent almost always
    clear = simulate_races(2.0 + noise_draw(), lo, hi, margin, alpha)
    assert np.mean(clear == BETTER) > 0.8
    calm = simulate_races(noise_draw() / 3, lo, hi, margin, alpha)
    assert np.mean(calm == EQUIVALENT) > 0.9
