"""One table of trial columns (``search/columns.py``): the trial's MLflow params, ``TrialRow``, the readers,
``leaderboard.json`` and both leaderboards derive from it and agree."""

from __future__ import annotations

import dataclasses
import json
import math
import re

from pursuhint.config import config_from_text
from pursuhint.hints.hintset import HintSet
from pursuhint.search import columns
from pursuhint.search.columns import COLUMNS, format_leaderboard
from pursuhint.search.report import _leaderboard_section
from pursuhint.search.results import TrialRow, rank, row_from_record, table
from pursuhint.search.space import short_name
from pursuhint.search.trial import trial_params
from pursuhint import tracking


def _params(sampled=None, baseline=""):
    cfg = config_from_text("data: {dataset: digits, image_size: 8}\n"
                           "distill: {method: fitnet, hint_weight: auto, hint_ratio: 2.5, kd_weight: 0.25, "
                           "ce_weight: 0.75}\ntrain: {lr: 0.02}\n")
    hs = HintSet(layers=["layer1.0", "layer2.0"], indices=[0, 2], n_hints=2,
                 candidates=["layer1.0", "layer1.1", "layer2.0"], membership=[0, 0, 1], similarity="cka",
                 algorithm="pursuhint", center="mean_index")
    return trial_params(cfg, baseline, hs, ["s1", "s2"], sampled or {})


def test_the_trial_logs_every_recorded_column_under_its_param():
    params = _params()
    assert {c.param for c in COLUMNS if c.param} <= set(params)
    assert (params["hint_indices"], params["hint_layers"], params["student_layers"]) == ("1,3", "layer1.0,layer2.0", "s1,s2")
    assert (params["hint_ratio"], params["ce_weight"], params["kd_weight"], params["lr"]) == (2.5, 0.75, 0.25, 0.02)


def test_a_searched_key_is_logged_once_under_its_short_name():
    assert {key: short_name(key) for key in ("distill.hint_ratio", "distill.ce_weight", "train.lr")} == {
        "distill.hint_ratio": "hint_ratio", "distill.ce_weight": "ce_weight", "train.lr": "lr"}
    params = _params({"distill.hint_ratio": 2.5, "distill.ce_weight": 0.75, "distill.temperature": 4.0})
    assert [k for k in params if "." in k] == ["distill.temperature"]  # a key without a column keeps its dotted path


def test_trial_row_has_a_field_per_recorded_column_with_its_default():
    fields = {f.name: f for f in dataclasses.fields(TrialRow)}
    for c in COLUMNS:
        if c.field in columns.DERIVED:
            assert c.field not in fields and hasattr(TrialRow("x"), c.field)
            continue
        assert c.field in fields, c.field
        if c.field == "trial_id":
            continue
        default = getattr(TrialRow("x"), c.field)
        assert default == c.default or (math.isnan(default) and math.isnan(c.default)), c.field
    assert [f.name for f in dataclasses.fields(TrialRow)][0] == "trial_id"  # TrialRow("a") names the trial


def test_a_row_read_back_from_the_params_holds_what_the_trial_logged():
    params = {k: tracking.scalar(v) for k, v in _params().items()}  # MLflow keeps strings
    params = {k: str(v) for k, v in params.items()}
    tags = {tracking.STATUS_TAG: "completed", tracking.BASELINE_TAG: "none", tracking.DUPLICATE_TAG: "t0"}
    row = row_from_record("t1", {**params, "hint_weight_resolved": "123.5"}, tags)
    assert (row.trial_id, row.status, row.duplicate_of, row.baseline) == ("t1", "completed", "t0", "none")
    assert (row.similarity, row.algorithm, row.center, row.n_hints, row.method) == ("r2_cca", "pursuhint", "mean_index", 2,
                                                                                    "fitnet")
    assert (row.hint_weight, row.hint_ratio, row.kd_weight, row.ce_weight, row.lr) == (123.5, 2.5, 0.25, 0.75, 0.02)
    assert (row.hint_indices, row.n_candidates, row.student_layers) == ("1,3", 3, "s1,s2")
    given = row_from_record("t2", {**params, "hint_weight": "50.0"}, tags)  # β given: r did not matter
    assert given.hint_weight == 50.0 and math.isnan(given.hint_ratio)


def _ranked():
    return rank([TrialRow("a", method="at", final_val_acc=93.0, best_val_acc=94.0, hint_indices="2,5", hint_ratio=2.5,
                          ce_weight=0.75, kd_weight=0.0, hint_weight=812.0, lr=0.05),
                 TrialRow("b", method="at", final_val_acc=92.0, duplicate_of="a", status="completed"),
                 TrialRow("c", method="at", final_val_acc=30.0, status="stopped"),
                 TrialRow("d", method="at", baseline="default", final_val_acc=91.0, best_val_acc=92.0),
                 TrialRow("k", method="kd_only", baseline="kd_only", final_val_acc=89.5)], "final")


def test_leaderboard_json_holds_every_column_including_ratio_ce_weight_and_kind():
    got = json.loads(json.dumps(table(_ranked()), default=str))
    assert list(got) == [c.field for c in COLUMNS]
    assert {"hint_ratio", "ce_weight", "kind", "rank", "gain_default"} <= set(got)
    assert got["kind"] == ["searched", "duplicate", "default", "kd_only", "stopped"]
    assert got["ce_weight"][0] == 0.75 and got["hint_ratio"][0] == 2.5


def test_both_leaderboards_show_the_same_columns_and_cells():
    rows = _ranked()
    text = format_leaderboard(rows).splitlines()
    assert text[0].split() == [c.head for c in COLUMNS if c.head and c.text]
    html = _leaderboard_section(rows, len(rows))
    heads = re.findall(r"<th[^>]*>([^<]*)</th>", html)
    assert heads == [c.head for c in COLUMNS if c.head]
    assert set(text[0].split()) == set(heads) - {"trial", "status"}  # the terminal leaves out trial and status
    first_html = re.findall(r"<td[^>]*>([^<]*)</td>", html.split("<tbody>")[1].split("</tr>")[0])
    by_head = dict(zip(heads, first_html))
    assert text[1].split() == [by_head[h] for h in text[0].split()]  # the same cells in both
    assert by_head["ratio"] == "2.5" and by_head["ce_w"] == "0.75" and by_head["vs_default"] == "+2.00"
    kinds = [line.split()[-1] for line in text[1:]]
    assert kinds == ["searched", "duplicate", "default", "kd_only", "stopped"]
    body = html.split("<tbody>")[1].split("</tbody>")[0]
    html_rows = [re.findall(r"<td[^>]*>([^<]*)</td>", tr) for tr in body.split("</tr>") if "<td" in tr]
    assert [cells[heads.index("kind")] for cells in html_rows] == kinds
