"""Teacher hint points → student layers: which student layer learns from which teacher hint.

Paper mode (``stage_ends``): the k-th teacher hint (in depth order) goes to the last block of the
student's k-th stage, e.g. ResNet-20 blocks 3, 6, 9. When K differs from the number of student
stages, ``relative_depth`` (an extension) pairs hints with distinct student layers, keeping depth
order and minimising Σ |relative_depth_t − relative_depth_s|; among equally good assignments the
shallower student layers win.
"""

from __future__ import annotations

from typing import Sequence

from ..errors import PursuhintError
from ..hints.layers import CandidateLayer

RULES = ("auto", "stage_ends", "relative_depth")
_TIE = 1e-12


def map_hints(
    teacher_hints: Sequence[CandidateLayer],
    student_layers: Sequence[CandidateLayer],
    rule: str = "auto",
) -> list[tuple[CandidateLayer, CandidateLayer]]:
    """(teacher hint, student layer) pairs in depth order; ``auto`` = stage_ends if K == #stages else relative_depth."""
    if rule not in RULES:
        raise PursuhintError(f"unknown hint mapping rule {rule!r}; valid: {', '.join(RULES)}.")
    teacher = sorted(teacher_hints, key=lambda layer: layer.index)
    student = sorted(student_layers, key=lambda layer: layer.index)
    if len(teacher) > len(student):
        raise PursuhintError(
            f"{len(teacher)} teacher hints cannot be paired with distinct student layers: the student has only "
            f"{len(student)} candidate layers; use at most {len(student)} hints."
        )
    if not teacher:
        return []
    ends = stage_ends(student)
    if rule == "auto":
        rule = "stage_ends" if len(teacher) == len(ends) else "relative_depth"
    if rule == "stage_ends":
        if len(teacher) != len(ends):
            raise PursuhintError(
                f"the stage_ends mapping needs one teacher hint per student stage, but there are {len(teacher)} "
                f"hints and {len(ends)} student stages; use rule 'relative_depth' or 'auto'."
            )
        chosen = ends
    else:
        picks = nearest_depth_assignment(
            [layer.relative_depth for layer in teacher], [layer.relative_depth for layer in student]
        )
        chosen = [student[j] for j in picks]
    return list(zip(teacher, chosen))


def stage_ends(layers: Sequence[CandidateLayer]) -> list[CandidateLayer]:
    """The deepest candidate of each stage, in stage order."""
    last: dict[int, CandidateLayer] = {}
    for layer in layers:
        if layer.stage not in last or layer.index > last[layer.stage].index:
            last[layer.stage] = layer
    return [last[stage] for stage in sorted(last)]


def nearest_depth_assignment(targets: Sequence[float], depths: Sequence[float]) -> list[int]:
    """Strictly increasing positions j_0 < … < j_{K−1} into ``depths`` minimising Σ_i |targets_i − depths_{j_i}|.

    Both inputs sorted ascending. Dynamic programme over (hint, position); ties go to the
    lexicographically smallest positions (the shallower layers). O(K·L).
    """
    k_count, l_count = len(targets), len(depths)
    if k_count > l_count:
        raise PursuhintError(f"{k_count} hints cannot take distinct places among {l_count} layers.")
    inf = float("inf")
    # best[i][j]: least cost of placing hints i..K-1 with hint i at position j.
    best = [[inf] * l_count for _ in range(k_count)]
    for i in range(k_count - 1, -1, -1):
        suffix = inf  # min over j' > j of best[i+1][j'] (0 for the last hint)
        for j in range(l_count - 1, -1, -1):
            follow = 0.0 if i == k_count - 1 else suffix
            if j <= l_count - (k_count - i):
                best[i][j] = abs(targets[i] - depths[j]) + follow
            if i < k_count - 1:
                suffix = min(suffix, best[i + 1][j])
    picks: list[int] = []
    remaining = min(best[0])
    start = 0
    for i in range(k_count):
        for j in range(start, l_count):
            if best[i][j] <= remaining + _TIE:
                picks.append(j)
                remaining = best[i][j] - abs(targets[i] - depths[j])
                start = j + 1
                break
    return picks
