"""Teacher hint → student layer mapping: paper stage ends, relative depth, errors."""

from __future__ import annotations

import pytest

from pursuhint.distill.mapping import map_hints, nearest_depth_assignment, stage_ends
from pursuhint.errors import PursuhintError
from pursuhint.hints.layers import CandidateLayer


def make_layers(stage_sizes: list[int], prefix: str = "layer") -> list[CandidateLayer]:
    """Candidate blocks of a net with the given number of blocks per stage, named layer{stage+1}.{block}."""
    total = sum(stage_sizes)
    layers, index = [], 0
    for stage, size in enumerate(stage_sizes):
        for block in range(size):
            layers.append(CandidateLayer(
                name=f"{prefix}{stage + 1}.{block}", index=index, relative_depth=(index + 1) / total,
                stage=stage, channels=16 * 2**stage, spatial=(32 // 2**stage, 32 // 2**stage),
            ))
            index += 1
    return layers


def positions(pairs) -> list[int]:
    """1-based student positions of the pairs."""
    return [s.index + 1 for _, s in pairs]


RESNET110 = make_layers([18, 18, 18])


@pytest.mark.parametrize("hints", [[17, 35, 53], [0, 1, 2], [5, 30, 50], [51, 52, 53]])
@pytest.mark.parametrize(("student", "expected"), [
    ([3, 3, 3], [3, 6, 9]),      # ResNet-20
    ([2, 2, 2], [2, 4, 6]),      # WRN-16-2
    ([1, 1, 1], [1, 2, 3]),      # ResNet-8x4
])
def test_stage_ends_for_any_three_hints(hints, student, expected):
    pairs = map_hints([RESNET110[i] for i in hints], make_layers(student))
    assert positions(pairs) == expected
    assert [t.index for t, _ in pairs] == hints


def test_resnet18_four_stages_of_two():
    teacher = make_layers([3, 4, 6, 3])  # ResNet-34
    pairs = map_hints([teacher[i] for i in (2, 6, 12, 15)], make_layers([2, 2, 2, 2]))
    assert positions(pairs) == [2, 4, 6, 8]
    assert [s.name for _, s in pairs] == ["layer1.1", "layer2.1", "layer3.1", "layer4.1"]


def test_teacher_hints_are_sorted_by_depth_before_pairing():
    pairs = map_hints([RESNET110[40], RESNET110[3], RESNET110[20]], make_layers([3, 3, 3]))
    assert [t.index for t, _ in pairs] == [3, 20, 40]
    assert positions(pairs) == [3, 6, 9]


def test_relative_depth_when_k_differs_from_stage_count():
    # teacher depths 10/54, 20/54, 40/54, 54/54 → nearest of k/9: 2/9, 3/9, 7/9, 9/9
    hints = [RESNET110[i - 1] for i in (10, 20, 40, 54)]
    pairs = map_hints(hints, make_layers([3, 3, 3]))
    assert positions(pairs) == [2, 3, 7, 9]


def test_relative_depth_keeps_student_layers_distinct_and_minimises_total_gap():
    # 30/54 and 31/54 are both nearest to 5/9; (5, 6) costs 0 + 0.0926, (4, 5) costs 0.111 + 0.0185.
    hints = [RESNET110[29], RESNET110[30]]
    assert positions(map_hints(hints, make_layers([3, 3, 3]))) == [5, 6]
    # Five hints all at the very end of the teacher must still get five distinct, ordered layers.
    hints = [RESNET110[i] for i in range(49, 54)]
    assert positions(map_hints(hints, make_layers([3, 3, 3]))) == [5, 6, 7, 8, 9]


def test_relative_depth_ties_go_to_the_shallower_layer():
    teacher = make_layers([4, 4])  # hint at 5/8 = 0.625 lies exactly between 2/4 and 3/4
    pairs = map_hints([teacher[4]], make_layers([2, 2]))
    assert positions(pairs) == [2]
    assert nearest_depth_assignment([0.5], [0.25, 0.75]) == [0]


def test_explicit_relative_depth_rule_overrides_stage_ends():
    hints = [RESNET110[i - 1] for i in (10, 30, 50)]  # depths 0.185, 0.556, 0.926
    assert positions(map_hints(hints, make_layers([3, 3, 3]), rule="relative_depth")) == [2, 5, 8]
    assert positions(map_hints(hints, make_layers([3, 3, 3]), rule="stage_ends")) == [3, 6, 9]


def test_dp_matches_brute_force_on_small_cases():
    from itertools import combinations

    depths = [(j + 1) / 7 for j in range(7)]
    for targets in ([0.1, 0.12, 0.9], [0.5, 0.55, 0.6, 0.65], [0.95, 0.97, 0.99], [0.3]):
        best = min(combinations(range(7), len(targets)),
                   key=lambda c: (round(sum(abs(t - depths[j]) for t, j in zip(targets, c)), 12), c))
        assert nearest_depth_assignment(targets, depths) == list(best)


def test_stage_ends_helper():
    assert [layer.index + 1 for layer in stage_ends(make_layers([2, 3, 1]))] == [2, 5, 6]


def test_too_many_hints_is_an_error():
    with pytest.raises(PursuhintError, match="4 teacher hints .* only 3 candidate layers"):
        map_hints(RESNET110[:4], make_layers([1, 1, 1]))


def test_stage_ends_rule_with_wrong_k_is_an_error():
    with pytest.raises(PursuhintError, match="2 hints and 3 student stages"):
        map_hints(RESNET110[:2], make_layers([3, 3, 3]), rule="stage_ends")


def test_unknown_rule_lists_valid_rules():
    with pytest.raises(PursuhintError, match="valid: auto, stage_ends, relative_depth"):
        map_hints(RESNET110[:3], make_layers([3, 3, 3]), rule="nearest")


def test_no_hints_give_no_pairs():
    assert map_hints([], make_layers([3, 3, 3])) == []
