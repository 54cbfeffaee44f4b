"""Statistics of the confirmation stage: mean ± sd over seeds, paired gains over a baseline, and the verdicts.

A confirmed configuration and its baselines are trained with the same seeds, so the gain is computed on
per-seed differences (a paired comparison): seed-to-seed noise shared by both runs cancels. :func:`decide`
turns those differences into one of four verdicts (better, worse, equivalent within ±δ, undecided) from one
Student's t CI whose level holds the error rates across the table's comparisons (Holm, :func:`decide_table`)
and across the looks of a race (a fixed α-spending split over the looks min_seeds..max_seeds, half of α at
the last; Bonferroni over the looks); docs/method.md has the formulas. Pure numpy/scipy: no Ray, MLflow or torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, Mapping, Optional, Sequence

import numpy as np
from scipy import stats as _scipy_stats

from ..baselines import BASELINE_LABELS
from ..errors import StatsError

Direction = Literal["better", "worse", "none"]
Verdict = Literal["better", "worse", "equivalent", "undecided"]
MAX_PROJECTED_SEEDS = 1000  # a projection beyond this is reported as "more than 1000"


@dataclass(frozen=True)
class Summary:
    """Mean and sample sd (ddof=1; nan when n < 2) of one configuration's scores over its seeds."""

    mean: float
    sd: float
    n: int

    def as_dict(self) -> dict[str, float | int | None]:
        """JSON-ready fields; an undefined sd (n < 2) becomes None, since JSON has no nan."""
        return {"mean": self.mean, "sd": None if math.isnan(self.sd) else self.sd, "n": self.n}


@dataclass(frozen=True)
class Gain:
    """Paired difference config − baseline over the seeds both have: mean, sd, n, the t CI at ``level``.

    ``seeds`` are the paired seeds in ascending order. When all differences are equal (sd 0) the CI
    collapses to the point ``mean``.
    """

    mean: float
    sd: float
    n: int
    low: float
    high: float
    level: float
    seeds: tuple[int, ...]

    @property
    def direction(self) -> Direction:
        """"better" when the CI lies entirely above 0, "worse" when entirely below, else "none"."""
        if self.low > 0:
            return "better"
        if self.high < 0:
            return "worse"
        return "none"

    def as_dict(self) -> dict[str, object]:
        """JSON-ready fields, with ``direction`` and the seeds as a list."""
        d = asdict(self)
        d["seeds"] = list(self.seeds)
        d["direction"] = self.direction
        return d


def summarise(values: Sequence[float]) -> Summary:
    """Mean and sample sd (ddof=1) of ``values``; sd is nan for a single value, since it is undefined."""
    x = _finite(values, "a")
    if x.size == 0:
        raise StatsError("summarise needs at least one score, got none")
    sd = float(np.std(x, ddof=1)) if x.size >= 2 else math.nan
    return Summary(mean=float(np.mean(x)), sd=sd, n=int(x.size))


def paired_gain(config_scores: Mapping[int, float], baseline_scores: Mapping[int, float],
                level: float = 0.95) -> Gain:
    """Gain of a configuration over a baseline, paired by seed: mean ± t_{(1+level)/2, n−1} · sd/√n.

    Only seeds present in both mappings are paired; fewer than 2 common seeds is a StatsError,
    because a CI needs at least two differences.
    """
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise StatsError(f"confidence level must lie strictly between 0 and 1, got {level!r}")
    seeds = tuple(sorted(set(config_scores) & set(baseline_scores)))
    if len(seeds) < 2:
        raise StatsError(
            f"a paired gain needs at least 2 seeds scored for both the configuration and the baseline, "
            f"but they have {len(seeds)} in common"
        )
    a = _finite([config_scores[s] for s in seeds], "the configuration's", seeds)
    b = _finite([baseline_scores[s] for s in seeds], "the baseline's", seeds)
    d = a - b
    n = len(seeds)
    mean, sd = float(np.mean(d)), float(np.std(d, ddof=1))
    half = float(_scipy_stats.t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
    return Gain(mean=mean, sd=sd, n=n, low=mean - half, high=mean + half, level=float(level), seeds=seeds)


def label_of(baseline: str) -> str:
    """The words for a baseline name ("default" → "default hints"); any other string is used as given."""
    return BASELINE_LABELS.get(baseline, baseline)


def verdict(gain: Gain, baseline_label: str) -> str:
    """The gain in words: "better than {label}", "worse than {label}" or "no difference shown with {n} seeds".

    ``baseline_label`` is a baseline name from BASELINE_LABELS (turned into its words) or the words themselves.
    """
    label = label_of(baseline_label)
    if gain.direction == "better":
        return f"better than {label}"
    if gain.direction == "worse":
        return f"worse than {label}"
    return f"no difference shown with {gain.n} seeds"


def _finite(values: Sequence[float], what: str, seeds: Sequence[int] | None = None) -> np.ndarray:
    """``values`` as a float array, or a StatsError naming the first non-finite score (and its seed)."""
    try:
        x = np.asarray(list(values), dtype=float)
    except (TypeError, ValueError):
        raise StatsError(f"{what} scores must be numbers, got {list(values)!r}") from None
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        where = f" for seed {seeds[bad[0]]}" if seeds is not None else ""
        raise StatsError(f"{what} score{where} is {x[bad[0]]}, but scores must be finite numbers")
    return x


# ---------------------------------------------------------------- decisions


@dataclass(frozen=True)
class Decision:
    """One paired comparison's verdict at one look, read off one two-sided t CI at level 1 − α*.

    ``alpha_star`` = α / (comparisons × looks). ``better``: the CI lies above 0; ``worse``: below 0;
    ``equivalent``: inside (−margin, +margin); else ``undecided``. ``within_margin`` says a better or worse
    CI also lies inside the margin ("better, by less than δ"). ``p_value`` is the smallest α* that would
    decide it (Holm orders comparisons by it). ``seeds_needed`` projects the total seeds that would decide an
    undecided comparison at the spread seen so far (None: not projectable, e.g. a mean exactly at ±margin).
    """

    verdict: Verdict
    mean: float
    sd: float
    n: int
    low: float
    high: float
    alpha_star: float
    margin: float
    p_value: float
    within_margin: bool = False
    seeds_needed: Optional[int] = None

    @property
    def decided(self) -> bool:
        return self.verdict != "undecided"

    def words(self) -> str:
        """The verdict as a phrase: "better by 1.2 [0.4, 2.0]", "equivalent within ±1.0 point", ..."""
        ci = f"[{self.low:+.2f}, {self.high:+.2f}]"
        # a decision on differences that never varied rests on a CI of zero width: say so, since identical
        # differences often mean students that did not learn (at chance, alike on every seed)
        flat = f"; all {self.n} seeds gave the same difference, so check that both arms learned" if self.sd == 0 else ""
        if self.verdict in ("better", "worse"):
            by = f"{self.verdict} by {abs(self.mean):.2f} {ci}"
            return by + (f", less than the ±{self.margin:g}-point margin" if self.within_margin else "") + flat
        if self.verdict == "equivalent":
            return (f"equivalent within ±{self.margin:g} point{'s' if self.margin != 1 else ''} ({self.mean:+.2f} "
                    f"{ci}){flat}")
        more = ("" if self.seeds_needed is None else
                f"; about {self.seeds_needed} seeds would decide it at this spread" if self.seeds_needed
                <= MAX_PROJECTED_SEEDS else f"; more than {MAX_PROJECTED_SEEDS} seeds would be needed at this spread")
        return f"undecided after {self.n} seeds ({self.mean:+.2f} {ci}{more})"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields, with the phrase as ``words``."""
        return {**asdict(self), "words": self.words()}


def looks_of(max_seeds: Optional[int], min_seeds: int) -> int:
    """How many looks a race makes: one per seed count from ``min_seeds`` to ``max_seeds`` (1: a fixed design)."""
    return 1 if max_seeds is None else max(1, int(max_seeds) - int(min_seeds) + 1)


def alpha_at_look(alpha: float, look: int, looks: int) -> float:
    """The share of α spent at look ``look`` (1-based) of ``looks``: half at the last look (where a race that
    needs every seed decides), the other half split evenly over the earlier ones; all of it with one look.
    The shares sum to α, so by Bonferroni the error rate over all looks stays at most α."""
    if looks <= 1:
        return float(alpha)
    return float(alpha) / 2 if look >= looks else float(alpha) / (2 * (looks - 1))


def decide(differences: Sequence[float], *, alpha: float = 0.05, margin: float = 1.0,
           max_seeds: Optional[int] = None, comparisons: int = 1, min_seeds: int = 2,
           look: Optional[int] = None) -> Decision:
    """The verdict on paired differences (configuration − baseline, in accuracy points), one per seed.

    The CI is mean ± t_{1−α*/2, n−1} · sd/√n with α* = α_look / comparisons: α_look is :func:`alpha_at_look`
    over the looks min_seeds..max_seeds of a race (all of α when ``max_seeds`` is None), ``look`` defaults to
    n − min_seeds + 1, and ``comparisons`` is the Holm divisor :func:`decide_table` passes. Equivalence is the
    TOST at α*/2 per side.
    """
    _check_args(alpha, margin, comparisons)
    d = _finite(differences, "the paired")
    n = int(d.size)
    if n < 2:
        raise StatsError(f"a decision needs at least 2 paired differences, got {n}")
    looks = looks_of(max_seeds, min_seeds)
    look = n - int(min_seeds) + 1 if look is None else int(look)
    a_star = alpha_at_look(alpha, look, looks) / int(comparisons)
    mean, sd = float(np.mean(d)), float(np.std(d, ddof=1))
    half = _t_quantile(a_star, n) * sd / math.sqrt(n)
    code = int(verdict_codes(np.array([mean]), np.array([sd]), n, a_star, float(margin))[0])
    verdict_ = _CODES[code]
    low, high = mean - half, mean + half
    return Decision(verdict_, mean, sd, n, low, high, a_star, float(margin), _p_value(mean, sd, n, float(margin)),
                    within_margin=bool(-margin < low and high < margin),
                    seeds_needed=_seeds_needed(mean, sd, n, a_star, float(margin)) if code == UNDECIDED else None)


BETTER, WORSE, EQUIVALENT, UNDECIDED = 1, -1, 0, 2
_CODES: dict[int, Verdict] = {BETTER: "better", WORSE: "worse", EQUIVALENT: "equivalent", UNDECIDED: "undecided"}


def verdict_codes(mean: np.ndarray, sd: np.ndarray, n: int, alpha_star: float, margin: float) -> np.ndarray:
    """:func:`decide`'s rule on arrays of means and sds of n differences each (for simulations): BETTER when
    the (1 − α*) t CI lies above 0, WORSE below, EQUIVALENT inside (−margin, margin), else UNDECIDED."""
    half = _t_quantile(alpha_star, n) * np.asarray(sd, dtype=float) / math.sqrt(n)
    low, high = mean - half, mean + half
    return np.where(low > 0, BETTER, np.where(high < 0, WORSE,
                    np.where((low > -margin) & (high < margin), EQUIVALENT, UNDECIDED)))


def decide_table(differences: Mapping[Any, Sequence[float]], *, alpha: float = 0.05, margin: float = 1.0,
                 max_seeds: Optional[int] = None, min_seeds: int = 2, look: Optional[int] = None) -> dict[Any, Decision]:
    """Holm's step-down over a table of comparisons at one look: ordered by p-value, the i-th (from 0) of m is
    decided at α_look / (m − i); at the first that is not, it and every later one stay undecided at that
    step's level. Keys with fewer than 2 differences are left out."""
    usable = {k: v for k, v in differences.items() if len(v) >= 2}
    order = sorted(usable, key=lambda k: decide(usable[k], alpha=alpha, margin=margin, max_seeds=max_seeds,
                                                  min_seeds=min_seeds, look=look).p_value)
    out: dict[Any, Decision] = {}
    m, stopped_at = len(order), None
    for i, key in enumerate(order):
        divisor = m - i if stopped_at is None else stopped_at
        dec = decide(usable[key], alpha=alpha, margin=margin, max_seeds=max_seeds, comparisons=divisor,
                     min_seeds=min_seeds, look=look)
        if not dec.decided and stopped_at is None:
            stopped_at = divisor
        out[key] = dec
    return out


def _check_args(alpha: float, margin: float, comparisons: int) -> None:
    if not 0 < float(alpha) < 1:
        raise StatsError(f"alpha must lie strictly between 0 and 1, got {alpha!r}")
    if not float(margin) > 0:
        raise StatsError(f"the equivalence margin must be > 0 accuracy points, got {margin!r}")
    if int(comparisons) < 1:
        raise StatsError(f"comparisons must be at least 1, got {comparisons!r}")


def _t_quantile(a_star: float, n: int) -> float:
    return float(_scipy_stats.t.ppf(1 - a_star / 2, n - 1))


def _p_value(mean: float, sd: float, n: int, margin: float) -> float:
    """The smallest α* at which the two-sided (1 − α*) CI decides: min of the t test's two-sided p and twice
    the TOST p (its larger one-sided p), so that "decided at α*" is exactly "p < α*"."""
    if sd == 0:  # the CI is the point mean: some verdict at any level
        return 0.0
    se = sd / math.sqrt(n)
    p_dir = 2 * float(_scipy_stats.t.sf(abs(mean) / se, n - 1))
    p_eq = 2 * max(float(_scipy_stats.t.sf((margin - mean) / se, n - 1)),
                   float(_scipy_stats.t.sf((margin + mean) / se, n - 1)))
    return min(p_dir, p_eq, 1.0)


def _seeds_needed(mean: float, sd: float, n: int, a_star: float, margin: float) -> Optional[int]:
    """The smallest total seed count at which the same mean and sd would be decided at α* (None: never, e.g. a
    mean exactly at ±margin; MAX_PROJECTED_SEEDS + 1: not within MAX_PROJECTED_SEEDS)."""
    if sd == 0:
        return None
    m = np.arange(n + 1, MAX_PROJECTED_SEEDS + 2)
    half = _scipy_stats.t.ppf(1 - a_star / 2, m - 1) * sd / np.sqrt(m)
    ok = np.flatnonzero((abs(mean) > half) | (abs(mean) + half < margin))
    if ok.size:
        return int(m[ok[0]])
    return None if abs(mean) == margin else MAX_PROJECTED_SEEDS + 1
