"""The layer atlas: a PNG of the expected pixel size, with clusters and hints drawn where they belong."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib.image
import numpy as np
import pytest

from pursuhint.errors import HintSetError, PursuhintError
from pursuhint.plots import ATLAS_DPI, ATLAS_SIZE, _runs, _ticks, layer_atlas


def block_similarity(size: int, cuts: list[int]) -> np.ndarray:
    """Similarity 0.9 inside depth-contiguous blocks, 0.2 across; unit diagonal."""
    group = np.searchsorted(cuts, np.arange(size), side="right")
    values = np.where(group[:, None] == group[None, :], 0.9, 0.2)
    np.fill_diagonal(values, 1.0)
    return values


def stub(size: int = 9) -> tuple[SimpleNamespace, SimpleNamespace]:
    cuts = [3, 6]
    S = SimpleNamespace(values=block_similarity(size, cuts), metric="cka_linear", names=[f"b{i}" for i in range(size)])
    membership = list(np.searchsorted(cuts, np.arange(size), side="right"))
    hints = SimpleNamespace(
        indices=[1, 4, 7], membership=membership, algorithm="pursuhint", similarity="cka_linear", n_hints=3
    )
    return S, hints


def test_atlas_writes_a_png_of_the_expected_size(tmp_path) -> None:
    S, hints = stub()
    path = tmp_path / "atlas.png"
    fig = layer_atlas(S, hints, path=path, default=SimpleNamespace(indices=[2, 5, 8]))
    assert path.stat().st_size > 10_000
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (round(ATLAS_SIZE[1] * ATLAS_DPI), round(ATLAS_SIZE[0] * ATLAS_DPI))
    assert pixels[..., :3].std() > 0.05  # something was drawn, not a blank canvas

    heatmap = fig.axes[0]
    assert "cka_linear" in heatmap.get_title()
    boxes = [(p.get_x(), p.get_width()) for p in heatmap.patches]
    assert boxes == [(-0.5, 3), (2.5, 3), (5.5, 3)]  # one box per cluster along the diagonal
    offsets = [c.get_offsets().tolist() for c in heatmap.collections]
    assert [[2, 2], [5, 5], [8, 8]] in offsets and [[1, 1], [4, 4], [7, 7]] in offsets
    assert [t.get_text() for t in heatmap.get_legend().get_texts()] == ["default hints", "hint points"]
    assert [t.get_text() for t in fig.axes[2].get_xticklabels()] == S.names  # the ribbon names every layer


def test_the_default_hints_atlas_says_what_they_are_and_which_similarity_it_shows() -> None:
    from pursuhint.hints.hintset import default_hints
    from pursuhint.hints.layers import candidate_layers
    from pursuhint.models import create_model

    model = create_model("resnet8", 10, in_channels=1)
    hs = default_hints(candidate_layers(model, "block", input_shape=(1, 8, 8)))
    S = SimpleNamespace(values=block_similarity(3, [1, 2]), metric="r2_cca", names=hs.candidates)
    title = layer_atlas(S, hs).axes[0].get_title()
    assert title == ("r2_cca similarity of 3 candidate layers\n"
                     "default hints (last block of each stage): 3 hints at layers [1, 2, 3] (from 1)")
    assert "None" not in title


def test_atlas_without_membership_or_path_returns_a_figure(tmp_path) -> None:
    S, hints = stub()
    hints.membership = None
    fig = layer_atlas(S, hints)
    assert len(fig.axes[0].patches) == 0 and len(fig.axes) == 3
    assert list(tmp_path.iterdir()) == []


def test_long_depths_get_sparse_ticks() -> None:
    assert _ticks(30) == list(range(30))
    assert _ticks(54) == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52]  # 53 is too close to 52
    assert _ticks(31) == [0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30]
    assert _ticks(57) == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 52, 56]
    assert _ticks(47) == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44, 46]
    S, hints = stub(54)
    fig = layer_atlas(S, hints)
    assert [t.get_text() for t in fig.axes[2].get_xticklabels()] == [f"b{i}" for i in range(0, 54, 4)]


def test_runs_split_where_membership_changes() -> None:
    assert _runs([0, 0, 1, 1, 1, 0, 2]) == [(0, 2), (2, 5), (5, 6), (6, 7)]
    assert _runs([4]) == [(0, 1)]


def test_atlas_errors_name_the_bad_value(tmp_path) -> None:
    S, hints = stub()
    hints.indices = [1, 9]
    with pytest.raises(HintSetError, match="index 9 is outside the 9 candidate layers"):
        layer_atlas(S, hints)
    S, hints = stub()
    hints.membership = [0, 1]
    with pytest.raises(HintSetError, match="membership has 2 entries"):
        layer_atlas(S, hints)
    S, hints = stub()
    S.names = S.names[:-1]
    with pytest.raises(PursuhintError, match="8 layer names"):
        layer_atlas(S, hints)
    S, hints = stub()
    with pytest.raises(PursuhintError, match="does not exist"):
        layer_atlas(S, hints, path=tmp_path / "missing" / "atlas.png")


def test_the_comparison_plot_draws_the_ranking_metric_and_needs_no_baselines():
    import warnings

    from pursuhint.plots import sweep_comparison
    from pursuhint.search.results import TrialRow, rank

    rows = rank([TrialRow("a", method="at", final_val_acc=90.0, best_val_acc=97.0, hint_indices="1,3", n_candidates=9),
                 TrialRow("b", method="at", final_val_acc=93.0, best_val_acc=94.0, hint_indices="2,5", n_candidates=9)],
                "final")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "no artists with labels" legend warning without baselines
        fig = sweep_comparison(rows)
    ax_acc = fig.axes[0]
    assert sorted(p.get_width() for p in ax_acc.patches) == [90.0, 93.0]  # the last epoch's, as ranked
    assert ax_acc.get_xlabel() == "last epoch's val accuracy (%)" and ax_acc.get_legend() is None
    fig = sweep_comparison(rank(rows, "best"))
    assert sorted(p.get_width() for p in fig.axes[0].patches) == [94.0, 97.0]
