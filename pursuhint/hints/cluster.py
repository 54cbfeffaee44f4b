"""Clustering candidate layers by similarity, and the rules that pick each cluster's center layer.

Paper mode is ``pursuhint`` with the ``mean_index`` center rule (docs/method.md §4): a k-means over
depth whose centers are real layers. ``agglomerative``, ``spectral`` and ``kmedoids`` are
extensions that partition the layers first; the center rule is then applied once per cluster.
"""

from __future__ import annotations

import math
import warnings as pywarnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import HintSetError, PursuhintError
from ..infra.registry import Registry

CenterRule = Callable[[np.ndarray, np.ndarray], int]
Clustering = Callable[..., "ClusterResult"]

CLUSTERINGS: Registry[Clustering] = Registry("clustering", error=PursuhintError)
CENTERS: Registry[CenterRule] = Registry("center rule", error=PursuhintError)
PAPER_MAX_ITERATIONS = 80


@dataclass
class ClusterResult:
    """A clustering of L layers: ``labels[i]`` is layer i's cluster, numbered 0..K−1 in depth order of
    the ``centers`` (sorted, distinct layer positions); ``trace`` lists the centers after each step
    (paper mode only, in the clusters' initial numbering, starting with the initial centers)."""

    labels: list[int]
    centers: list[int]
    iterations: int
    warnings: list[str] = field(default_factory=list)
    converged: bool = True
    trace: list[list[int]] = field(default_factory=list)


def check_similarity(S: np.ndarray, n_clusters: int, what: str = "n_clusters") -> np.ndarray:
    """``S`` as a float64 array after checking it is square, finite, symmetric, within [−1, 1], with unit
    diagonal, and that 1 ≤ n_clusters ≤ L; a PursuhintError naming the problem otherwise."""
    try:
        S = np.array(S, dtype=np.float64)
    except (TypeError, ValueError):
        raise PursuhintError("the similarity matrix must be a square array of numbers") from None
    if S.ndim != 2 or S.shape[0] != S.shape[1] or S.shape[0] == 0:
        raise PursuhintError(f"the similarity matrix must be square and non-empty, got shape {S.shape}")
    if not np.isfinite(S).all():
        raise PursuhintError("the similarity matrix contains NaN or infinite values")
    if not np.allclose(S, S.T, rtol=0.0, atol=1e-8):
        i, j = np.unravel_index(np.argmax(np.abs(S - S.T)), S.shape)
        raise PursuhintError(f"the similarity matrix is not symmetric: S[{i}, {j}] = {S[i, j]} but S[{j}, {i}] = {S[j, i]}")
    if np.abs(S).max() > 1.0 + 1e-9:
        i, j = np.unravel_index(np.argmax(np.abs(S)), S.shape)
        raise PursuhintError(f"similarities must lie in [-1, 1], but S[{i}, {j}] = {S[i, j]}")
    diag = np.diagonal(S)
    if not np.allclose(diag, 1.0, rtol=0.0, atol=1e-6):
        i = int(np.argmax(np.abs(diag - 1.0)))
        raise PursuhintError(f"the similarity matrix diagonal must be 1, but S[{i}, {i}] = {diag[i]}")
    L = S.shape[0]
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)):
        raise HintSetError(f"{what} must be an integer in 1..{L}, got {n_clusters!r}")
    if n_clusters < 1:
        raise HintSetError(f"{what} {n_clusters} is too small; use 1..{L}")
    if n_clusters > L:
        raise HintSetError(
            f"{what} {n_clusters} is larger than the {L} candidate layers of this teacher; use 1..{L}"
        )
    return S


def cluster(
    S: np.ndarray, n_clusters: int, algorithm: str = "pursuhint", center: str = "mean_index", seed: int = 0
) -> ClusterResult:
    """Cluster the layers of similarity matrix ``S`` into ``n_clusters`` with a registered algorithm."""
    fn = CLUSTERINGS.get(algorithm)
    CENTERS.get(center)
    return fn(S, n_clusters, seed, center=center)


# ----------------------------------------------------------------------------------------------
# center rules: (S, sorted member positions) -> the center layer's position


@CENTERS.register("mean_index")
def mean_index(S: np.ndarray, members: np.ndarray) -> int:
    """Paper rule: the member nearest ⌊mean of the members' positions⌋; ties go to the shallower layer."""
    target = int(np.sum(members)) // len(members)  # integer floor, no float rounding
    return int(members[np.argmin(np.abs(members - target))])  # members ascending → first = shallower


@CENTERS.register("medoid")
def medoid(S: np.ndarray, members: np.ndarray) -> int:
    """Extension: the member with the highest total similarity to its cluster; ties go to the shallower."""
    totals = [math.fsum(S[m, members]) for m in members]  # exactly rounded, so ties don't depend on order
    return int(members[int(np.argmax(totals))])


@CENTERS.register("last")
def last(S: np.ndarray, members: np.ndarray) -> int:
    """Extension: the deepest member (the usual "end of a stage" convention, applied to clusters)."""
    return int(members[-1])


# ----------------------------------------------------------------------------------------------
# paper mode


def initial_centers(n_layers: int, n_clusters: int) -> list[int]:
    """Evenly spaced initial centers c_t = ⌊t·(L−1)/(K−1)⌋; ⌊(L−1)/2⌋ for K = 1 (distinct when K ≤ L)."""
    if n_clusters == 1:
        return [(n_layers - 1) // 2]
    return [t * (n_layers - 1) // (n_clusters - 1) for t in range(n_clusters)]


def assign(D: np.ndarray, centers: list[int]) -> np.ndarray:
    """Each layer's cluster number: argmin over centers of D[i, c]; ties go to the lower cluster number."""
    return np.argmin(D[:, centers], axis=1)  # argmin returns the first minimum


def move_centers(S: np.ndarray, labels: np.ndarray, centers: list[int], rule: CenterRule) -> list[int]:
    """New center of every cluster by ``rule`` applied to its members; a cluster without members stays."""
    new = list(centers)
    for t in range(len(centers)):
        members = np.flatnonzero(labels == t)
        if len(members):
            new[t] = rule(S, members)
    return new


@CLUSTERINGS.register("pursuhint")
def pursuhint(S: np.ndarray, n_clusters: int, seed: int = 0, center: str = "mean_index") -> ClusterResult:
    """Paper mode (docs/method.md §4): k-means over depth with real-layer centers, deterministic (seed unused).

    Steps 2–3 (assign, move) repeat until no center moves, at most 80 times. Centers that meet are
    merged in the result and reported in ``warnings``, so ``centers`` may hold fewer than K layers.
    ``center`` other than ``mean_index`` replaces the move rule inside the loop (an extension).
    """
    S = check_similarity(S, n_clusters)
    rule = CENTERS.get(center)
    D = 1.0 - S
    centers = initial_centers(len(S), n_clusters)
    trace = [list(centers)]
    converged = False
    iterations = 0
    while iterations < PAPER_MAX_ITERATIONS:
        iterations += 1
        new = move_centers(S, assign(D, centers), centers, rule)
        trace.append(new)
        if new == centers:
            converged = True
            break
        centers = new
    raw = assign(D, centers)
    notes = [] if converged else [f"pursuhint did not converge in {PAPER_MAX_ITERATIONS} iterations; using the last centers"]
    return _paper_result(raw, centers, iterations, converged, trace, notes)


def _paper_result(raw, centers, iterations, converged, trace, notes) -> ClusterResult:
    """Merge collided centers, renumber clusters in depth order, and explain collisions and empty clusters."""
    distinct = sorted(set(centers))
    for c in distinct:
        same = [t for t, ct in enumerate(centers) if ct == c]
        if len(same) > 1:
            notes.append(
                f"pursuhint clusters {_join(same)} collided at layer {c} (0-based), so only {len(distinct)} "
                f"distinct hint points remain of the {len(centers)} asked"
            )
    used = set(raw.tolist())
    for t, c in enumerate(centers):
        if t not in used and centers.count(c) == 1:
            notes.append(f"pursuhint cluster {t} ended with no members; its center stayed at layer {c} (0-based)")
    rank = {c: k for k, c in enumerate(distinct)}
    labels = [rank[centers[t]] for t in raw.tolist()]
    return ClusterResult(labels, distinct, iterations, notes, converged, trace)


def _join(items: list[int]) -> str:
    return ", ".join(str(i) for i in items[:-1]) + f" and {items[-1]}"


# ----------------------------------------------------------------------------------------------
# extensions: a partition first, then the center rule once per cluster


def _from_partition(
    S: np.ndarray, raw: np.ndarray, center: str, iterations: int = 1, notes: list[str] | None = None,
    converged: bool = True, centers: dict[int, int] | None = None,
) -> ClusterResult:
    """Apply the center rule to each non-empty cluster of ``raw`` and renumber clusters by center depth."""
    rule = CENTERS.get(center)
    notes = list(notes or [])
    ids = sorted(set(raw.tolist()))
    found = {}
    for c in ids:
        members = np.flatnonzero(raw == c)
        found[c] = centers[c] if centers is not None else rule(S, members)
    order = sorted(ids, key=lambda c: found[c])
    rank = {c: k for k, c in enumerate(order)}
    return ClusterResult([rank[c] for c in raw.tolist()], [found[c] for c in order], iterations, notes, converged)


def _trivial(S: np.ndarray, n_clusters: int, center: str) -> ClusterResult | None:
    """K = 1 (one cluster) and K = L (every layer alone) need no algorithm."""
    L = len(S)
    if n_clusters == 1:
        return _from_partition(S, np.zeros(L, dtype=int), center)
    if n_clusters == L:
        return _from_partition(S, np.arange(L), center)
    return None


@CLUSTERINGS.register("agglomerative")
def agglomerative(S: np.ndarray, n_clusters: int, seed: int = 0, center: str = "mean_index") -> ClusterResult:
    """Extension: average-linkage agglomerative clustering on 1 − S with depth-contiguous clusters.

    Only neighbouring segments may merge, and their distance is the mean of all pairwise distances
    between them (true UPGMA; sklearn's connectivity-constrained "average" only averages along the
    connectivity edges, which on a depth chain degenerates to cutting the largest neighbour gaps).
    Ties go to the shallower pair; deterministic (seed unused).
    """
    S = check_similarity(S, n_clusters)
    trivial = _trivial(S, n_clusters, center)
    if trivial is not None:
        return trivial
    D = 1.0 - S
    segments = [[i] for i in range(len(S))]
    while len(segments) > n_clusters:
        gaps = [D[np.ix_(a, b)].mean() for a, b in zip(segments[:-1], segments[1:])]
        k = int(np.argmin(gaps))
        segments[k : k + 2] = [segments[k] + segments[k + 1]]
    raw = np.empty(len(S), dtype=int)
    for c, seg in enumerate(segments):
        raw[seg] = c
    return _from_partition(S, raw, center, iterations=len(S) - n_clusters)


@CLUSTERINGS.register("spectral")
def spectral(S: np.ndarray, n_clusters: int, seed: int = 0, center: str = "mean_index") -> ClusterResult:
    """Extension: sklearn SpectralClustering with S clipped at 0 as the affinity (clusters need not be contiguous)."""
    from sklearn.cluster import SpectralClustering  # sklearn: deferred, heavy and only for this clustering

    S = check_similarity(S, n_clusters)
    trivial = _trivial(S, n_clusters, center)
    if trivial is not None:
        return trivial
    model = SpectralClustering(n_clusters=n_clusters, affinity="precomputed", random_state=seed)
    with pywarnings.catch_warnings(record=True) as caught:
        pywarnings.simplefilter("always")
        raw = model.fit_predict(np.clip(S, 0.0, None))
    notes = [f"spectral: {w.message}" for w in caught]
    found = len(set(raw.tolist()))
    if found < n_clusters:
        notes.append(f"spectral produced only {found} non-empty clusters of the {n_clusters} asked")
    return _from_partition(S, np.asarray(raw), center, notes=notes)


@CLUSTERINGS.register("kmedoids")
def kmedoids(S: np.ndarray, n_clusters: int, seed: int = 0, center: str = "medoid") -> ClusterResult:
    """Extension: PAM (BUILD + SWAP) k-medoids on 1 − S; ``seed`` orders the candidates, deciding exact ties.

    With ``center="medoid"`` the centers are PAM's medoids; any other rule is applied to the final partition.
    """
    S = check_similarity(S, n_clusters)
    trivial = _trivial(S, n_clusters, center)
    if trivial is not None:
        return trivial
    D = 1.0 - S
    L = len(S)
    order = np.random.default_rng(seed).permutation(L)
    tol = 1e-12
    medoids: list[int] = []
    nearest = np.full(L, np.inf)
    for _ in range(n_clusters):  # BUILD: greedily add the medoid that lowers the total cost most
        best, best_cost = -1, np.inf
        for c in order:
            if c not in medoids:
                cost = np.minimum(nearest, D[:, c]).sum()
                if cost < best_cost - tol:
                    best, best_cost = int(c), cost
        medoids.append(best)
        nearest = np.minimum(nearest, D[:, best])
    cost = nearest.sum()
    iterations, converged = 0, False
    while iterations < 100:  # SWAP: take the best (medoid, non-medoid) exchange while it lowers the cost
        iterations += 1
        best_swap, best_cost = None, cost - tol
        for m in range(n_clusters):
            for o in order:
                if o in medoids:
                    continue
                trial = medoids[:m] + [int(o)] + medoids[m + 1 :]
                c = D[:, trial].min(axis=1).sum()
                if c < best_cost:
                    best_swap, best_cost = (m, int(o)), c
        if best_swap is None:
            converged = True
            break
        medoids[best_swap[0]] = best_swap[1]
        cost = best_cost
    medoids.sort()
    raw = np.argmin(D[:, medoids], axis=1)  # ties → the shallower medoid
    notes = [] if converged else ["kmedoids did not converge in 100 swap rounds; using the last medoids"]
    natives = {k: m for k, m in enumerate(medoids)} if center == "medoid" else None
    return _from_partition(S, raw, center, iterations, notes, converged, natives)
