"""Statistics of the confirmation stage: mean ± sd over seeds, and paired gains over a baseline with a t CI.

A confirmed configuration and its baselines are trained with the same seeds, so the gain is computed on
per-seed differences (a paired comparison): seed-to-seed noise shared by both runs cancels. The CI is
Student's t with n − 1 degrees of freedom, and the verdict only claims a direction when the CI excludes 0.
Pure numpy/scipy: no Ray, MLflow or torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal, Mapping, Sequence

import numpy as np
from scipy import stats as _scipy_stats

from ..baselines import BASELINE_LABELS
from ..errors import StatsError

Direction = Literal["better", "worse", "none"]


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
