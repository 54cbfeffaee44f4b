"""A distillation method that lives only here, outside the package: the whole of what adding a method
takes (one class and its registration). Named in a config as ``plugins: [toy_method]`` so that every
process reading the config, Ray workers included, imports it (tests/ must be on their PYTHONPATH)."""

from __future__ import annotations

from torch import Tensor

from pursuhint.distill.methods import METHODS, DistillMethod, pool_to_common

NAME = "toy_meanmatch"


@METHODS.register(NAME)
class MeanMatch(DistillMethod):
    """Match each pair's channel-mean maps: loss = mean((mean_c f_s − mean_c f_t)²), after pooling both
    maps to the smaller resolution. No learnable parts."""

    default_weight = 7.0  # deliberately unlike any benchmark β, so a test can tell it was read

    def pair_loss(self, f_s: Tensor, f_t: Tensor, k: int = 0) -> Tensor:
        f_s, f_t = pool_to_common(f_s, f_t)
        return (f_s.mean(1) - f_t.mean(1)).pow(2).mean()
