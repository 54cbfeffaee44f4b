"""`search.results`: the leaderboard is ranked by ``search.metric`` (final or best epoch), from either reader."""

from __future__ import annotations

import json
import math

from pursuhint.search.columns import format_leaderboard
from pursuhint.search.layout import MARKER
from pursuhint.search.results import TrialRow, rank, rows_from_tune


def rows():
    return [TrialRow("a", method="at", final_val_acc=90.0, best_val_acc=97.0),
            TrialRow("b", method="at", final_val_acc=93.0, best_val_acc=94.0),
            TrialRow("d", method="at", baseline="default", final_val_acc=91.0, best_val_acc=92.0),
            TrialRow("k", method="kd_only", baseline="kd_only", final_val_acc=89.5, best_val_acc=95.0)]


def test_rank_follows_the_metric_and_so_do_the_gains():
    final = rank(rows(), "final")
    assert [r.trial_id for r in final] == ["b", "d", "a", "k"]
    assert final[0].gain_default == 2.0 and final[0].gain_kd == 3.5  # 93 − 91, 93 − 89.5
    best = rank(rows(), "best")
    assert [r.trial_id for r in best] == ["a", "k", "b", "d"]
    assert best[0].gain_default == 5.0 and best[0].gain_kd == 2.0  # 97 − 92, 97 − 95
    assert all(r.metric == "best" for r in best)


def test_a_row_without_a_score_ranks_last():
    ranked = rank(rows() + [TrialRow("z", method="at")], "final")
    assert ranked[-1].trial_id == "z" and math.isnan(ranked[-1].gain_default)


def test_the_table_shows_both_accuracies_in_ranking_order():
    text = format_leaderboard(rank(rows(), "final"))
    head, first = text.splitlines()[:2]
    assert head.split()[:3] == ["rank", "val_acc", "best"]
    assert first.split()[:3] == ["1", "93.00", "94.00"]


def _trial(exp_dir, tid, accs, final=None):
    folder = exp_dir / f"run_trial_{tid}"
    folder.mkdir(parents=True)
    (folder / "params.json").write_text("{}")
    lines = [{"trial_id": tid, "epoch": e, "epochs_total": len(accs), "val_acc": a, "status": "running"}
             for e, a in enumerate(accs, 1)]
    if final is not None:
        lines[-1] |= {"final_val_acc": final, "status": "completed"}
    (folder / "result.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")


def test_rows_from_tune_rank_by_the_sweeps_own_metric(tmp_path):
    for metric, order in (("final", ["p", "q"]), ("best", ["q", "p"])):
        exp_dir = tmp_path / metric
        exp_dir.mkdir()
        (exp_dir / MARKER).write_text(json.dumps({"name": "t", "tracking_uri": "", "parent_run_id": "",
                                                  "finished": True,
                                                  "config_yaml": f"search: {{metric: {metric}}}\n"}))
        _trial(exp_dir, "p", [50.0, 60.0, 70.0], final=70.0)
        _trial(exp_dir, "q", [50.0, 80.0, 65.0])  # still running: its newest epoch stands for final
        got = rows_from_tune(exp_dir)
        assert [r.trial_id for r in got] == order, metric
        assert {r.trial_id: r.final_val_acc for r in got} == {"p": 70.0, "q": 65.0}
        assert {r.trial_id: r.best_val_acc for r in got} == {"p": 70.0, "q": 80.0}
    assert [r.trial_id for r in rows_from_tune(tmp_path / "best", metric="final")] == ["p", "q"]  # overridden


def test_the_kind_column_marks_trials_asha_stopped_early():
    stopped = TrialRow("s", status="stopped", method="at", final_val_acc=35.0, best_val_acc=35.0)
    done = TrialRow("c", status="completed", method="at", final_val_acc=95.0, best_val_acc=95.0)
    base = TrialRow("d", baseline="default", status="stopped", method="at", final_val_acc=90.0, best_val_acc=90.0)
    lines = format_leaderboard(rank([stopped, done, base], "final")).splitlines()[1:]
    kinds = {line.split()[0]: line.split()[-1] for line in lines}
    assert kinds == {"1": "searched", "2": "default", "3": "stopped"}


def test_a_cohort_trial_reads_as_one_record_per_member(tmp_path):
    """Each report of a cohort trial carries its members' new results; the readers see each member alone."""
    from pursuhint.search.results import read_trials
    from pursuhint.search.trial_keys import MEMBERS_KEY

    folder = tmp_path / "run_trial_c1"
    folder.mkdir()
    (folder / "params.json").write_text("{}")
    record = json.dumps({"run_name": "m", "params": {}, "tags": {}})

    def line(epoch, members):
        return {"trial_id": "c1", "epoch": epoch, "status": "running", MEMBERS_KEY: json.dumps(members)}

    lines = [line(1, {"0": [{"epoch": 1, "val_acc": 50.0, "train_loss": 2.0, "epochs_total": 2,
                             "status": "running", "pursuhint_mlflow": record}],
                      "1": [{"epoch": 0, "val_acc": 0.0, "status": "invalid", "pursuhint_mlflow": record}]}),
             line(2, {"0": [{"epoch": 2, "val_acc": 60.0, "train_loss": 1.5, "epochs_total": 2, "status": "running"},
                            {"epoch": 2, "val_acc": 60.0, "train_loss": 1.5, "test_acc": 59.0,
                             "status": "completed"}],
                      "1": [{"epoch": 0, "val_acc": 0.0, "status": "invalid"}]})]
    (folder / "result.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    first, second = read_trials(tmp_path)
    assert (first.trial_id, second.trial_id) == ("c1-m0", "c1-m1")
    assert [r["epoch"] for r in first.epochs] == [1, 2] and first.epochs[-1]["test_acc"] == 59.0
    assert first.status(False) == "completed" and second.status(False) == "invalid"
    assert first.record == {"run_name": "m", "params": {}, "tags": {}} and first.artifacts == "m0/artifacts"
    assert all(r["trial_id"] == "c1-m0" for r in first.results) and second.epochs == []


def test_a_trial_that_never_reported_in_a_by_method_space_gets_its_row():
    """Optuna's by_method branch keys (``distill.kd_weight@at``) are not config keys: the row of a trial that never
    reported is made from the plain keys (it failed with "unknown key 'distill.kd_weight@at'")."""
    from pursuhint.search.results import _unreported

    yaml = ("data: {dataset: digits, image_size: 8}\ndistill: {method: {choice: [at, fitnet]}, "
            "kd_weight: {by_method: {at: {uniform: [0, 1]}, fitnet: {uniform: [0, 1]}}}}\n")
    known = {"sampled": {"distill.method": "at", "distill.kd_weight": 0.3, "distill.kd_weight@at": 0.3}}
    row = _unreported("t", dict(known["sampled"]), yaml, known)
    assert (row.method, row.kd_weight) == ("at", 0.3)
