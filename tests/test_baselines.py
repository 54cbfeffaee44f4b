"""Baseline placements at the same K as a configuration: exact uniform positions, seeded random draws, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from pursuhint.baselines import BASELINE_KINDS
from pursuhint.errors import HintSetError
from pursuhint.hints import random_hints, uniform_hints
from pursuhint.hints.hintset import HintSet, default_hints, random_positions, uniform_positions
from pursuhint.hints.layers import CandidateLayer
from pursuhint.hints.pipeline import SelectionInputs


def candidates(L: int, stages: int = 3) -> list[CandidateLayer]:
    """L block candidates named like a CIFAR ResNet, split into equal stages."""
    per = -(-L // stages)
    return [CandidateLayer(name=f"layer{1 + i // per}.{i % per}", index=i, relative_depth=(i + 1) / L,
                           stage=i // per, channels=16, spatial=(32, 32)) for i in range(L)]


def inputs(L: int) -> SelectionInputs:
    return SelectionInputs(layers=candidates(L), matrices={}, teacher_arch="resnet56", teacher_sha256="ab" * 32,
                           granularity="block", probe_size=512, probe_key="0" * 16)


def test_baseline_kinds():
    assert BASELINE_KINDS == ("default", "kd_only", "uniform", "random", "ce_only", "dkd", "reviewkd", "semckd")


# ---------------------------------------------------------------- uniform


@pytest.mark.parametrize("L, k, expected", [
    (1, 1, [0]),
    (5, 1, [2]),
    (27, 1, [13]),
    (4, 4, [0, 1, 2, 3]),
    (3, 2, [0, 2]),
    (5, 4, [0, 1, 3, 4]),
    (10, 4, [1, 3, 6, 8]),
    (27, 3, [4, 13, 22]),   # ResNet-56: the middle block of each 9-block stage
    (54, 3, [9, 27, 45]),   # ResNet-110
    (54, 4, [6, 20, 33, 47]),
])
def test_uniform_positions(L, k, expected):
    assert uniform_positions(L, k) == expected
    hs = uniform_hints(candidates(L), k)
    assert hs.indices == expected
    assert hs.layers == [candidates(L)[i].name for i in expected]


def test_uniform_with_k_equal_to_l_takes_every_candidate():
    for L in (1, 2, 3, 7, 27, 54):
        assert uniform_positions(L, L) == list(range(L))


def test_uniform_is_k_distinct_sorted_evenly_spaced_positions_for_every_k():
    for L in range(1, 61):
        for k in range(1, L + 1):
            pos = uniform_positions(L, k)
            assert len(pos) == k and pos == sorted(set(pos)), (L, k)
            assert 0 <= pos[0] and pos[-1] <= L - 1, (L, k)
            gaps = set(np.diff(pos).tolist())
            assert gaps <= {L // k, -(-L // k)}, (L, k, pos)  # spacing L/K, rounded down or up
            assert pos == uniform_positions(L, k)  # deterministic


def test_uniform_differs_from_the_default_stage_ends():
    cands = candidates(27)
    assert default_hints(cands).indices == [8, 17, 26]
    assert uniform_hints(cands, 3).indices == [4, 13, 22]


def test_uniform_hint_set_fields():
    hs = uniform_hints(list(reversed(candidates(27))), 3)  # input order does not matter
    assert (hs.algorithm, hs.center, hs.similarity, hs.membership, hs.paper_mode, hs.seed) == (
        "uniform", None, None, None, False, 0)
    assert hs.n_hints == 3 and hs.candidates == [c.name for c in candidates(27)]
    assert HintSet.from_dict(hs.to_dict()) == hs


# ---------------------------------------------------------------- random


@pytest.mark.parametrize("L, k", [(1, 1), (5, 2), (27, 3), (27, 27), (54, 3), (54, 10)])
def test_random_gives_k_distinct_sorted_positions(L, k):
    for seed in range(20):
        pos = random_positions(L, k, seed)
        assert len(pos) == k and pos == sorted(set(pos))
        assert all(isinstance(i, int) and 0 <= i < L for i in pos)


def test_random_is_numpy_default_rng_seeded_by_the_seed():
    for seed in (0, 1, 7, 2**40):
        drawn = np.random.default_rng(seed).choice(27, size=3, replace=False)
        assert random_positions(27, 3, seed) == sorted(int(i) for i in drawn)


def test_random_is_repeatable_per_seed_and_differs_across_seeds():
    draws = [random_positions(27, 3, seed) for seed in range(10)]
    assert draws == [random_positions(27, 3, seed) for seed in range(10)]
    assert len({tuple(d) for d in draws}) == 10
    # over many seeds every candidate gets drawn: not stuck on a few positions
    assert {i for seed in range(200) for i in random_positions(27, 3, seed)} == set(range(27))


def test_random_hint_set_fields():
    hs = random_hints(candidates(54), 3, seed=5)
    assert hs.indices == random_positions(54, 3, 5)
    assert (hs.algorithm, hs.center, hs.similarity, hs.membership, hs.paper_mode, hs.seed) == (
        "random", None, None, None, False, 5)
    assert HintSet.from_dict(hs.to_dict()) == hs
    assert random_hints(candidates(54), 3, seed=np.int64(5)).indices == hs.indices


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("k", [0, -1, 28, 100])
@pytest.mark.parametrize("make", [lambda c, k: uniform_hints(c, k), lambda c, k: random_hints(c, k, 0)])
def test_k_outside_1_to_l_is_refused_naming_k_and_l(make, k):
    with pytest.raises(HintSetError, match=rf"between 1 and L = 27 candidate layers, got K = {k}$") as info:
        make(candidates(27), k)
    assert str(info.value).count(". ") == 0  # one sentence


@pytest.mark.parametrize("k", [True, 2.0, "3", None])
def test_k_must_be_an_integer(k):
    with pytest.raises(HintSetError, match="got K = "):
        uniform_positions(27, k)
    with pytest.raises(HintSetError, match="got K = "):
        random_positions(27, k, 0)


@pytest.mark.parametrize("seed", [-1, 1.5, True, None, "0"])
def test_random_needs_a_non_negative_integer_seed(seed):
    with pytest.raises(HintSetError, match="non-negative integer seed"):
        random_hints(candidates(27), 3, seed)


def test_candidates_must_be_candidate_layers():
    for make in (lambda c: uniform_hints(c, 1), lambda c: random_hints(c, 1, 0)):
        with pytest.raises(HintSetError, match="non-empty list of CandidateLayer"):
            make([])
        with pytest.raises(HintSetError, match="non-empty list of CandidateLayer"):
            make(["layer1.0"])


# ---------------------------------------------------------------- SelectionInputs


def test_selection_inputs_stamp_baselines_like_the_default():
    sel = inputs(27)
    default, uniform, rand = sel.default(), sel.uniform(3), sel.random(3, seed=4)
    assert uniform.indices == [4, 13, 22]
    assert rand.indices == random_positions(27, 3, 4) and rand.seed == 4
    for hs in (default, uniform, rand):
        assert (hs.teacher_arch, hs.teacher_sha256, hs.granularity, hs.probe_size) == (
            "resnet56", "ab" * 32, "block", 512)
        assert HintSet.from_dict(hs.to_dict()) == hs  # the stamped set still validates
    assert sel.random(3, seed=4) == rand
    with pytest.raises(HintSetError, match="L = 27"):
        sel.uniform(28)
