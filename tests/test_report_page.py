"""The report page is one self-contained HTML file: the confirmation table's figures, the search leaderboard, the
plots and atlases as embedded PNGs, the importances or their caveat; nothing fetched from the network, all text
escaped."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np

from pursuhint.search.report import write_report
from pursuhint.search.confirm import ConfirmedResult, SEARCHED, confirmation_table, pick_top
from pursuhint.search.importance import Importances
from pursuhint.search.results import TrialRow, rank

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png(path: Path, colour: str) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2), dpi=40)
    FigureCanvasAgg(fig)
    fig.add_subplot(1, 1, 1).imshow(np.eye(4), cmap=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path.read_bytes()


def _rows(tmp_path: Path) -> tuple[list[TrialRow], dict[str, bytes]]:
    """Three searched trials (one a duplicate without a checkpoint), the default hints and KD only."""
    atlases = {}
    for tid, colour in (("t_best", "viridis"), ("t_dflt", "magma")):
        atlases[tid] = _png(tmp_path / tid / "checkpoint_000002" / "artifacts" / "layer_atlas.png", colour)

    def hs(tid: str) -> str:
        return str(tmp_path / tid / "checkpoint_000002" / "artifacts" / "hint_set.json")

    common = dict(status="completed", similarity="r2_cca", algorithm="pursuhint", center="mean_index", method="at",
                  hint_weight=12.5, kd_weight=0.0, lr=0.05, n_candidates=12, n_hints=3)
    rows = [
        TrialRow("t_best", final_val_acc=91.25, best_val_acc=92.5, hint_indices="3,7,11",
                 hint_layers="layer1.2,<layer2.3>,layer3.3", hint_set_path=hs("t_best"), **common),
        TrialRow("t_dup", final_val_acc=91.25, best_val_acc=92.5, hint_indices="3,7,11", duplicate_of="t_best",
                 hint_layers="layer1.2,<layer2.3>,layer3.3", **common),
        TrialRow("t_low", final_val_acc=80.0, best_val_acc=81.0, hint_indices="1,2,3", hint_layers="a,b,c",
                 status="stopped", method="at", similarity="cka_linear", algorithm="pursuhint", center="medoid"),
        TrialRow("t_dflt", baseline="default", final_val_acc=88.75, best_val_acc=89.0, hint_indices="4,8,12",
                 hint_layers="layer1.3,layer2.3,layer3.3", hint_set_path=hs("t_dflt"), **{**common, "similarity": ""}),
        TrialRow("t_kd", baseline="kd_only", status="completed", final_val_acc=85.5, best_val_acc=86.0,
                 method="kd_only", kd_weight=0.9, lr=0.05),
    ]
    return rank(rows, "final"), atlases


def _table() -> dict:
    cand = pick_top(rank([TrialRow("t_best", status="completed", final_val_acc=91.25, best_val_acc=92.5,
                                   method="at", n_hints=3, hint_layers="layer1.2,<layer2.3>,layer3.3",
                                   sampled={"train.lr": 0.05})]), 1)
    results = []
    for seed, (ours, dflt, kd) in zip((1, 2, 3), ((90.0, 88.0, 85.0), (91.5, 88.5, 86.0), (89.0, 88.9, 84.0))):
        results += [ConfirmedResult(SEARCHED, "t_best", "at", 3, seed, ours, 0.0, "layer1.2,<layer2.3>,layer3.3"),
                    ConfirmedResult("default", "default", "at", 3, seed, dflt, 0.0),
                    ConfirmedResult("kd_only", "kd_only", "kd_only", 3, seed, kd, 0.0)]
    return confirmation_table(cand, results, 3)


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_the_page_holds_every_section_self_contained(tmp_path):
    rows, atlases = _rows(tmp_path)
    table = _table()
    values = Importances([("lr", 0.75), ("similarity", 0.2), ("kd_weight@at", 0.05)], n_trials=12)
    path = write_report(tmp_path / "out" / "report.html", "demo<sweep>", rows, confirmation=table, importances=values,
                        source="Tune results /tmp/x")
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # Self-contained: no address outside the page, no script, no external font or stylesheet.
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', page, re.I)
    assert "<script" not in page.lower() and "@import" not in page and "<link" not in page.lower()
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', page))
    # Pictures: the confirmation plot, the comparison plot, and both atlases, byte for byte.
    images = _images(page)
    assert len(images) == 4 and all(i.startswith(PNG_SIGNATURE) for i in images)
    assert atlases["t_best"] in images and atlases["t_dflt"] in images
    # Escaped text: the sweep name and a layer name with angle brackets never become markup.
    assert "<sweep>" not in page and "demo&lt;sweep&gt;" in page
    assert "<layer2.3>" not in page and "&lt;layer2.3&gt;" in page
    # Stage labels.
    assert "Search stage: one seed, selection split" in page and "3 seeds each, test split, full budget" in page
    # The leaderboard: every trial in rank order, with its accuracies.
    order = [page.index(f">{r.trial_id}<", page.index('id="leaderboard"')) for r in rows]
    assert order == sorted(order)
    for r in rows:
        assert f"<td class=\"num\">{r.final_val_acc:.2f}</td><td class=\"num\">{r.best_val_acc:.2f}</td>" in page
    assert ">+2.50</td>" in page  # t_best over the default hints (91.25 - 88.75)
    # The confirmation table: format_table's figures (mean ± sd, each gain with its CI and verdict, seeds).
    c = table["configurations"][0]
    assert f"{c['test_acc']['mean']:.2f} ± {c['test_acc']['sd']:.2f}" in page
    for g in c["gains"].values():
        assert f">{g['mean']:+.2f}</td>" in page and f"[{g['low']:+.2f}, {g['high']:+.2f}]" in page
        assert g["verdict"] in page
    assert set(c["gains"]) == {"default", "kd_only"}
    # Importances in their order, with their values.
    section = page[page.index('id="importance"'):]
    assert section.index(">lr<") < section.index(">similarity<") < section.index(">kd_weight@at<")
    assert ">0.750<" in section and "over 12 completed Optuna trials" in section


def test_without_confirmation_or_enough_trials_the_page_says_so(tmp_path):
    rows, atlases = _rows(tmp_path)
    caveat = "parameter importances: not shown, the Optuna study has 3 completed trials and needs at least 8"
    page = write_report(tmp_path / "r.html", "demo", [r for r in rows if r.baseline != "default"],
                        importances=caveat).read_text()
    assert caveat in page and "has no confirmation stage" in page
    images = _images(page)
    # The comparison plot and the best trial's atlas; without a default-hints row there is no second atlas.
    assert len(images) == 2 and atlases["t_best"] in images
    assert "Best hint set (the best searched trial, rank 1 of the search stage): trial t_best" in page


def test_a_duplicate_shows_its_owners_atlas_and_a_missing_one_is_said(tmp_path):
    rows, atlases = _rows(tmp_path)
    dup = next(r for r in rows if r.trial_id == "t_dup")
    best = next(r for r in rows if r.trial_id == "t_best")
    best.final_val_acc, best.best_val_acc = 90.0, 90.0
    rows = rank(rows)
    assert rows[0] is dup
    page = write_report(tmp_path / "r.html", "demo", rows).read_text()
    assert atlases["t_best"] in _images(page) and "trial t_dup" in page
    # A baseline ranked above every searched trial: the best searched hint set is still the one drawn.
    dflt = next(r for r in rows if r.baseline == "default")
    dflt.final_val_acc = 99.0
    page = write_report(tmp_path / "r.html", "demo", rank(rows)).read_text()
    assert "Best hint set (the best searched trial, rank 2 of the search stage): trial t_dup" in page
    assert atlases["t_best"] in _images(page) and atlases["t_dflt"] in _images(page)
    Path(best.hint_set_path).with_name("layer_atlas.png").unlink()
    page = write_report(tmp_path / "r.html", "demo", rows).read_text()
    assert "neither the trial&#x27;s Tune checkpoint nor its MLflow run has layer_atlas.png" in page
    assert "Not computed." in page
