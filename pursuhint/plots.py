"""Pictures of a result: the layer atlas (similarity heatmap, clusters and hint points along depth)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import HintSetError, PursuhintError

if TYPE_CHECKING:
    from matplotlib.figure import Figure  # matplotlib: loaded only when a picture is drawn

    from .search.results import TrialRow

ATLAS_SIZE = (7.0, 8.0)  # inches; with ATLAS_DPI this fixes the PNG's pixel size
ATLAS_DPI = 120
MAX_NAMED_TICKS = 30
HINT_STYLE = dict(c="red", edgecolors="black", marker="*", zorder=4)
DEFAULT_STYLE = dict(facecolors="none", edgecolors="orange", linewidths=2, marker="s", zorder=3)


ATLAS_KINDS = {"default": "default hints (last block of each stage)", "uniform": "uniform hints (evenly spaced)",
               "random": "random hints"}


def _atlas_subtitle(hint_set: Any, hints: list[int]) -> str:
    """What chose the hint points: "pursuhint on r2_cca: 3 hints at ...", or the baseline placement's name."""
    where = f"{hint_set.n_hints} hints at layers {[i + 1 for i in hints]} (from 1)"
    if hint_set.similarity is None or hint_set.algorithm in ATLAS_KINDS:
        return f"{ATLAS_KINDS.get(hint_set.algorithm, hint_set.algorithm)}: {where}"
    return f"{hint_set.algorithm} on {hint_set.similarity}: {where}"


def layer_atlas(S: Any, hint_set: Any, path: str | Path | None = None, default: Any = None) -> Figure:
    """The L × L similarity heatmap with cluster boxes and hint points, over a depth ribbon of clusters.

    ``S`` has ``.values`` (L × L), ``.metric`` and ``.names``; ``hint_set`` has ``.indices``,
    ``.membership`` (cluster id per layer, or None), ``.algorithm``, ``.similarity``, ``.n_hints``;
    ``default`` (optional) has ``.indices`` of the default hints, drawn with another marker.
    Returns a matplotlib Figure (Agg, no pyplot state) and writes a PNG to ``path`` when given.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib: loaded only when a picture is drawn
    from matplotlib.figure import Figure  # matplotlib: loaded only when a picture is drawn
    from matplotlib.patches import Rectangle  # matplotlib: loaded only when a picture is drawn
    from mpl_toolkits.axes_grid1 import make_axes_locatable  # matplotlib: loaded only when a picture is drawn

    values, names = _matrix(S)
    size = len(names)
    hints = _indices(hint_set.indices, size, "hint")
    defaults = _indices(default.indices, size, "default hint") if default is not None else []
    membership = _membership(getattr(hint_set, "membership", None), size)

    fig = Figure(figsize=ATLAS_SIZE, dpi=ATLAS_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    low, high = (0.0, 1.0) if values.min() >= 0 and values.max() <= 1 else (values.min(), values.max())
    image = ax.imshow(values, cmap="viridis", vmin=low, vmax=high, interpolation="nearest")
    divider = make_axes_locatable(ax)
    fig.colorbar(image, cax=divider.append_axes("right", size="4%", pad=0.1), label=f"similarity ({S.metric})")
    ribbon = divider.append_axes("bottom", size="7%", pad=0.1, sharex=ax)

    runs = _runs(membership) if membership is not None else []
    for start, stop in runs:  # one box per depth-contiguous run of a cluster
        corner, side = (start - 0.5, start - 0.5), stop - start
        ax.add_patch(Rectangle(corner, side, side, fill=False, edgecolor="white", lw=1.5))
    marks = []
    if defaults:
        marks.append(ax.scatter(defaults, defaults, label="default hints", **DEFAULT_STYLE, s=90))
    marks.append(ax.scatter(hints, hints, label="hint points", **HINT_STYLE, s=140))
    ax.legend(handles=marks, loc="upper right", fontsize=8, framealpha=0.8)
    ax.set_title(f"{S.metric} similarity of {size} candidate layers\n{_atlas_subtitle(hint_set, hints)}", fontsize=10)

    _draw_ribbon(ribbon, membership, runs, hints, defaults, size)

    ticks = _ticks(size)
    ax.set_yticks(ticks, [names[i] for i in ticks], fontsize=7)
    ax.tick_params(axis="x", labelbottom=False)
    ribbon.set_xticks(ticks, [names[i] for i in ticks], fontsize=7, rotation=90)
    ribbon.set_xlabel("candidate layer (depth →)")

    if path is not None:
        _save(fig, Path(path))
    return fig


def _draw_ribbon(ribbon: Any, membership: Any, runs: list[tuple[int, int]], hints: list[int], defaults: list[int],
                 size: int) -> None:
    """The strip under the heatmap: each layer's cluster colour (grey without clusters), run borders, hints."""
    if membership is not None:
        strip = np.asarray(membership, dtype=float)[None, :]
        ribbon.imshow(strip, aspect="auto", cmap="tab20", vmin=0, vmax=max(19.0, strip.max()), interpolation="nearest")
    else:
        ribbon.imshow(np.zeros((1, size)), aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
    for start, _ in runs[1:]:
        ribbon.axvline(start - 0.5, color="white", lw=1.5)
    if defaults:
        ribbon.scatter(defaults, [0] * len(defaults), **DEFAULT_STYLE, s=60)
    ribbon.scatter(hints, [0] * len(hints), **HINT_STYLE, s=100)
    ribbon.set_yticks([0], ["cluster" if membership is not None else "depth"])


def _save(fig: Any, target: Path) -> None:
    """Write the atlas PNG; a PursuhintError when its folder does not exist."""
    if not target.parent.is_dir():
        raise PursuhintError(
            f"cannot write the layer atlas to {str(target)!r}: folder {str(target.parent)!r} does not exist"
        )
    fig.savefig(target, dpi=ATLAS_DPI)


def _matrix(S: Any) -> tuple[np.ndarray, list[str]]:
    """S.values as a finite square float array and S.names of matching length, or a PursuhintError."""
    values = np.asarray(S.values, dtype=float)
    names = [str(name) for name in S.names]
    if values.ndim != 2 or values.shape[0] != values.shape[1] or values.shape[0] == 0:
        raise PursuhintError(f"similarity values of shape {values.shape} are not a non-empty L × L matrix")
    if len(names) != values.shape[0]:
        raise PursuhintError(
            f"{len(names)} layer names do not match the {len(values)} × {len(values)} similarity matrix"
        )
    if not np.isfinite(values).all():
        raise PursuhintError("the similarity matrix has NaN or infinite entries; recompute it")
    return values, names


def _indices(indices: Any, size: int, what: str) -> list[int]:
    """0-based layer indices, each within [0, size), or a HintSetError naming the first bad one."""
    out = [int(i) for i in indices]
    bad = [i for i in out if not 0 <= i < size]
    if bad:
        raise HintSetError(f"{what} index {bad[0]} is outside the {size} candidate layers (valid: 0 to {size - 1})")
    return sorted(out)


def _membership(membership: Any, size: int) -> list[int] | None:
    """Cluster id per layer (length L), or None when the hint set has none."""
    if membership is None:
        return None
    out = [int(m) for m in membership]
    if len(out) != size:
        raise HintSetError(f"membership has {len(out)} entries but there are {size} candidate layers")
    return out


def _runs(membership: list[int]) -> list[tuple[int, int]]:
    """[start, stop) of each maximal run of equal cluster ids along depth."""
    runs, start = [], 0
    for i in range(1, len(membership) + 1):
        if i == len(membership) or membership[i] != membership[start]:
            runs.append((start, i))
            start = i
    return runs


def _ticks(size: int) -> list[int]:
    """Every layer when L ≤ 30, else about 15 evenly stepped ones (plus the deepest if it has room)."""
    if size <= MAX_NAMED_TICKS:
        return list(range(size))
    step = math.ceil(size / 15)
    ticks = list(range(0, size, step))
    return ticks + [size - 1] if size - 1 - ticks[-1] >= step / 2 else ticks


def sweep_comparison(rows: list[TrialRow], path: str | Path | None = None, n_candidates: int | None = None) -> Figure:
    """Each trial's accuracy by the sweep's ranking metric (``search.metric``: the last or the best epoch's)
    against the baselines (left) and its hint positions over the teacher's depth (right), one row per trial,
    in leaderboard order. ``rows`` are leaderboard rows (``pursuhint report``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib: loaded only when a picture is drawn
    from matplotlib.figure import Figure  # matplotlib: loaded only when a picture is drawn

    rows = [r for r in rows if math.isfinite(r.score)]
    if not rows:
        raise PursuhintError("no finished trial to plot yet")
    depth = n_candidates or max((r.n_candidates for r in rows), default=0) or max(
        (max(r.positions) for r in rows if r.positions), default=1)
    height = max(3.0, 0.28 * len(rows) + 1.5)
    fig = Figure(figsize=(11.0, height), dpi=110)
    FigureCanvasAgg(fig)
    ax_acc, ax_pos = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [1.2, 1.0]})
    y = np.arange(len(rows))
    colours = ["#888888" if _is_baseline(r) else "#1f77b4" for r in rows]
    ax_acc.barh(y, [r.score for r in rows], color=colours)
    lo = min(r.score for r in rows)
    hi = max(r.score for r in rows)
    ax_acc.set_xlim(max(0.0, lo - 0.1 * (hi - lo + 1) - 1), min(100.0, hi + 0.1 * (hi - lo + 1) + 1))
    styles = iter(["--", "-.", ":", (0, (5, 1))])
    for r in rows:
        if r.baseline == "default":
            ax_acc.axvline(r.score, color="orange", linestyle=next(styles, "--"),
                           label=f"default hints, {r.method}")
        elif r.baseline == "kd_only":
            ax_acc.axvline(r.score, color="black", linestyle=":", label="KD only")
    labels = [f"#{r.rank} {r.method}" + (f" [{r.baseline}]" if _is_baseline(r) else f" {r.similarity}/{r.algorithm}")
              for r in rows]
    ax_acc.set_yticks(y, labels, fontsize=7)
    ax_acc.invert_yaxis()
    ax_acc.set_xlabel(f"{'best' if rows[0].metric == 'best' else 'last'} epoch's val accuracy (%)")
    if ax_acc.get_legend_handles_labels()[1]:  # a sweep without search-stage baselines has no lines to name
        ax_acc.legend(fontsize=7, loc="lower right")
    ax_acc.set_title("trials against the baselines")
    for i, r in enumerate(rows):
        pos = r.positions
        if pos:
            ax_pos.scatter(pos, [i] * len(pos), marker="s" if _is_baseline(r) else "*",
                           c=colours[i], s=40, zorder=3)
    ax_pos.set_xlim(0.5, depth + 0.5)
    ax_pos.set_xlabel(f"hint position (1 = shallowest of {depth} candidates)")
    ax_pos.grid(axis="x", alpha=0.3)
    ax_pos.set_title("hint points")
    fig.tight_layout()
    if path is not None:
        fig.savefig(Path(path))
    return fig


def _is_baseline(row: TrialRow) -> bool:
    return row.baseline not in ("", "none")


def confirmation_plot(table: dict[str, Any], path: str | Path | None = None) -> Figure:
    """Every confirmed configuration and baseline: its per-seed test accuracies (dots), mean and 95 % CI of
    the mean (bar), best first; ``table`` is the confirmation table (``confirmation.json``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # matplotlib: loaded only when a picture is drawn
    from matplotlib.figure import Figure  # matplotlib: loaded only when a picture is drawn
    from scipy import stats  # scipy: only the confirmation plot needs it

    entries = [(f"{c['method']} K={c['n_hints']} [{c['hint_layers']}]", c["seeds"], "#1f77b4")
               for c in table.get("configurations", [])]
    entries += [(f"{b['label']} ({b['method']}" + (f" K={b['n_hints']})" if b.get("n_hints") else ")"), b["seeds"],
                 "#888888") for b in table.get("baselines", [])]
    entries = [e for e in entries if e[1]]
    if not entries:
        raise PursuhintError("the confirmation table has no finished run to plot yet")
    fig = Figure(figsize=(9.0, max(3.0, 0.4 * len(entries) + 1.5)), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, (label, seeds, colour) in enumerate(entries):
        values = np.array(list(seeds.values()), dtype=float)
        mean = values.mean()
        if len(values) > 1:
            half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
            ax.errorbar(mean, i, xerr=half, fmt="o", color=colour, capsize=4, zorder=3)
        ax.scatter(values, [i] * len(values), s=14, color=colour, alpha=0.5, zorder=2)
    ax.set_yticks(range(len(entries)), [e[0][:60] for e in entries], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"test accuracy (%): seeds (dots), mean with 95 % CI (up to {table.get('n_seeds')} seeds)")
    ax.set_title("confirmation stage")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    if path is not None:
        fig.savefig(Path(path))
    return fig
