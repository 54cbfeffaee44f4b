"""Paper-mode clustering rule by rule on hand-made matrices, and every algorithm on block-structured ones."""

from __future__ import annotations

import numpy as np
import pytest

from pursuhint.errors import HintSetError, PursuhintError
from pursuhint.hints.cluster import (
    CENTERS,
    CLUSTERINGS,
    assign,
    check_similarity,
    cluster,
    initial_centers,
    mean_index,
    medoid,
)


def sym(upper: dict[tuple[int, int], float], n: int, fill: float = 0.0) -> np.ndarray:
    """A symmetric matrix with unit diagonal from its upper-triangle entries."""
    s = np.full((n, n), fill)
    for (i, j), v in upper.items():
        s[i, j] = s[j, i] = v
    np.fill_diagonal(s, 1.0)
    return s


def blocks(sizes: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """In-block similarity ≈ 0.9, between blocks ≈ 0.1, ±0.05 symmetric noise; and the true labels."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(len(sizes)), sizes)
    s = np.where(truth[:, None] == truth[None, :], 0.9, 0.1) + rng.uniform(-0.05, 0.05, (len(truth),) * 2)
    s = (s + s.T) / 2
    np.fill_diagonal(s, 1.0)
    return s, truth


# ---------------------------------------------------------------- §4 rule 1: initial centers


@pytest.mark.parametrize(
    "L, K, want",
    [
        (54, 3, [0, 26, 53]),
        (27, 3, [0, 13, 26]),
        (18, 3, [0, 8, 17]),
        (16, 4, [0, 5, 10, 15]),
        (10, 4, [0, 3, 6, 9]),
        (8, 3, [0, 3, 7]),
        (7, 4, [0, 2, 4, 6]),
        (5, 5, [0, 1, 2, 3, 4]),
        (7, 1, [3]),
        (8, 1, [3]),
        (1, 1, [0]),
    ],
)
def test_initial_centers(L, K, want):
    assert initial_centers(L, K) == want


def test_one_cluster_starts_at_the_middle_and_takes_every_layer():
    r = cluster(np.eye(6) * 0.5 + 0.5, 1)
    assert r.labels == [0] * 6 and r.centers == [2] and r.iterations == 1 and r.converged


# ---------------------------------------------------------------- rule 2: assignment ties


def test_assignment_tie_goes_to_the_lower_cluster_number():
    tie = sym({(0, 1): 0.5, (1, 2): 0.5, (0, 2): 0.0}, 3)
    assert assign(1.0 - tie, [0, 2]).tolist() == [0, 0, 1]
    assert cluster(tie, 2).labels == [0, 0, 1]
    leaning = sym({(0, 1): 0.5, (1, 2): 0.51, (0, 2): 0.0}, 3)
    assert cluster(leaning, 2).labels == [0, 1, 1]
    # the tie rule uses cluster numbers, not depth: centers [2, 0] send the tied layer to cluster 0 (center 2)
    assert assign(1.0 - tie, [2, 0]).tolist() == [1, 0, 0]


# ---------------------------------------------------------------- rule 3: center moves


def test_center_move_goes_to_the_member_nearest_the_floored_mean():
    s = np.eye(10)
    assert mean_index(s, np.array([0, 1, 2, 3])) == 1  # ⌊1.5⌋ = 1
    assert mean_index(s, np.array([1, 2, 5, 6])) == 2  # ⌊3.5⌋ = 3 is not a member; 2 is nearer than 5
    assert mean_index(s, np.array([2, 3, 9])) == 3  # ⌊14/3⌋ = 4 → 3


def test_center_move_tie_goes_to_the_shallower_layer():
    s = np.eye(10)
    assert mean_index(s, np.array([0, 4])) == 0  # ⌊2⌋: 0 and 4 both 2 away
    assert mean_index(s, np.array([1, 3, 8])) == 3  # ⌊4⌋: 3 is 1 away, 8 is 4
    assert mean_index(s, np.array([2, 3, 5, 6])) == 3  # ⌊4⌋: 3 and 5 both 1 away → 3


def test_other_center_rules():
    s = sym({(0, 1): 0.2, (0, 2): 0.2, (1, 2): 0.9, (2, 3): 0.9, (1, 3): 0.3}, 4)
    assert medoid(s, np.array([0, 1, 2, 3])) == 2  # totals 1.4, 2.4, 3.0, 2.2
    assert medoid(np.ones((3, 3)), np.array([0, 1, 2])) == 0  # all equal → shallower
    assert CENTERS.get("last")(s, np.array([0, 2, 3])) == 3


def test_hand_traced_run_with_empty_cluster_tie_and_renumbering():
    # L=5, K=3 → centers [0, 2, 4]. Layers 0 and 2 are "identical" (S = 1), so step 1 gives layer 2 to
    # cluster 0 (assignment tie), cluster 1 is empty and its center stays at 2. Step 2: cluster 1 = {0, 2},
    # ⌊mean⌋ = 1 is equidistant from 0 and 2 → shallower 0, so centers cross to [1, 0, 3]. Step 3: no move.
    s = sym(
        {(0, 1): 0.9, (0, 2): 1.0, (0, 3): 0.1, (0, 4): 0.1, (1, 2): 0.5, (1, 3): 0.2, (1, 4): 0.1,
         (2, 3): 0.5, (2, 4): 0.3, (3, 4): 0.9},
        5,
    )
    r = cluster(s, 3)
    assert r.trace == [[0, 2, 4], [1, 2, 3], [1, 0, 3], [1, 0, 3]]
    assert r.iterations == 3 and r.converged
    assert r.centers == [0, 1, 3]
    assert r.labels == [0, 1, 0, 2, 2]  # renumbered by center depth: old cluster 1 (center 0) is now 0
    assert r.warnings == []


def test_block_matrix_converges_in_two_steps():
    s, truth = blocks([4, 5, 3])
    r = cluster(s, 3)
    # start [0, 5, 11]; step 1 moves to ⌊1.5⌋=1, ⌊6⌋=6, ⌊10⌋=10; step 2 moves nothing
    assert r.trace == [[0, 5, 11], [1, 6, 10], [1, 6, 10]]
    assert r.iterations == 2 and r.converged and r.centers == [1, 6, 10]
    assert r.labels == truth.tolist()


# ---------------------------------------------------------------- collisions


def test_collision_is_reported_and_leaves_distinct_centers():
    # centers [0, 1, 3]; layers 0 and 1 identical, so cluster 1 is empty and cluster 0 = {0, 1, 2} moves onto it
    s = sym({(0, 1): 1.0, (0, 2): 0.8, (1, 2): 0.8, (0, 3): 0.1, (1, 3): 0.1, (2, 3): 0.2}, 4)
    r = cluster(s, 3)
    assert r.trace == [[0, 1, 3], [1, 1, 3], [1, 1, 3]]
    assert r.centers == [1, 3] and r.labels == [0, 0, 0, 1]
    assert r.warnings == [
        "pursuhint clusters 0 and 1 collided at layer 1 (0-based), so only 2 distinct hint points remain of the 3 asked"
    ]


# ---------------------------------------------------------------- every algorithm


@pytest.mark.parametrize("algorithm", ["pursuhint", "agglomerative", "spectral", "kmedoids"])
@pytest.mark.parametrize("center", ["mean_index", "medoid", "last"])
def test_every_algorithm_recovers_blocks(algorithm, center):
    for sizes, seed in (([4, 5, 3], 0), ([3, 3, 6, 2], 1)):
        s, truth = blocks(sizes, seed)
        r = cluster(s, len(sizes), algorithm, center, seed=seed)
        assert r.labels == truth.tolist(), (sizes, r)
        assert r.centers == sorted(r.centers) and len(r.centers) == len(sizes)
        for k, c in enumerate(r.centers):
            assert truth[c] == k  # every center is a member of its own cluster
        if center == "last":
            assert r.centers == (np.cumsum(sizes) - 1).tolist()


@pytest.mark.parametrize("algorithm", ["pursuhint", "agglomerative", "spectral", "kmedoids"])
def test_same_seed_same_result_and_trivial_k(algorithm):
    s, _ = blocks([4, 5, 3], seed=3)
    s += np.random.default_rng(9).uniform(-0.3, 0.3, s.shape) * (1 - np.eye(12))
    s = np.clip((s + s.T) / 2, -1.0, 0.99)
    np.fill_diagonal(s, 1.0)
    assert cluster(s, 4, algorithm, seed=5) == cluster(s, 4, algorithm, seed=5)
    every = cluster(s, 12, algorithm)
    assert every.labels == list(range(12)) and every.centers == list(range(12))
    one = cluster(s, 1, algorithm)
    assert one.labels == [0] * 12 and len(one.centers) == 1


def test_agglomerative_uses_true_average_linkage_on_contiguous_segments():
    # 0-1 are the most distant neighbours, but the mean distance of {0} to {1, 2} is lower than {0,1,2} to {3}
    s = sym({(0, 1): 0.5, (0, 2): 0.9, (1, 2): 0.9, (0, 3): 0.0, (1, 3): 0.0, (2, 3): 0.6}, 4)
    r = cluster(s, 2, "agglomerative")
    assert r.labels == [0, 0, 0, 1]
    # single-link cutting at the biggest neighbour gap (what sklearn's connectivity "average" does) gives [0,1,1,1]


def test_kmedoids_medoid_centers_minimise_within_cluster_distance():
    s, truth = blocks([5, 4], seed=4)
    r = cluster(s, 2, "kmedoids", "medoid")
    d = 1 - s
    for k, c in enumerate(r.centers):
        members = np.flatnonzero(truth == k)
        assert d[c, members].sum() == pytest.approx(d[np.ix_(members, members)].sum(1).min())


# ---------------------------------------------------------------- validation


def test_validation_errors():
    s = np.eye(3) * 0.5 + 0.5
    with pytest.raises(HintSetError, match="n_clusters 5 is larger than the 3 candidate layers of this teacher; use 1..3"):
        cluster(s, 5)
    with pytest.raises(HintSetError, match="n_clusters 0 is too small; use 1..3"):
        cluster(s, 0)
    with pytest.raises(PursuhintError, match="not symmetric"):
        cluster(s + np.triu(np.full((3, 3), 0.1), 1), 2)
    with pytest.raises(PursuhintError, match="square"):
        cluster(np.ones((2, 3)), 1)
    bad = s.copy()
    bad[0, 1] = bad[1, 0] = np.nan
    with pytest.raises(PursuhintError, match="NaN"):
        cluster(bad, 1)
    with pytest.raises(PursuhintError, match=r"must lie in \[-1, 1\], but S\[0, 1\] = 1.5"):
        cluster(np.array([[1.0, 1.5], [1.5, 1.0]]), 1)
    with pytest.raises(PursuhintError, match="diagonal must be 1"):
        cluster(np.full((3, 3), 0.5), 1)
    with pytest.raises(PursuhintError, match="unknown clustering 'kmeans'.*valid: pursuhint, agglomerative"):
        cluster(s, 1, "kmeans")
    with pytest.raises(PursuhintError,
                       match="unknown center rule 'medoids'.*did you mean 'medoid'.*valid: mean_index, medoid, last"):
        cluster(s, 1, center="medoids")
    assert check_similarity(s, 3, what="n_hints").dtype == np.float64
    assert set(CLUSTERINGS.names()) == {"pursuhint", "agglomerative", "spectral", "kmedoids"}
