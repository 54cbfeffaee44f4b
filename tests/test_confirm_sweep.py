"""The confirmation stage on a real local Ray and MLflow store: runs, tags, test accuracy, the table, report
and export."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from pursuhint import tracking
from pursuhint.cli import main
from pursuhint.search.confirm import answer

from golden import NAME
from sweep_helpers import children

pytestmark = pytest.mark.slow


@pytest.fixture
def confirmed(golden_sweep):
    """The golden sweep (tests/golden.py): 2 searched trials, AT and the plugin method's default and uniform hints
    and KD only, then AT's configuration (calibrated β = r · CE₀ / H₀, r = 0.5) raced 2-3 seeds against every
    baseline, in cohorts."""
    g = golden_sweep
    return g.cfg, g.uri, g.result, g.folder


def test_confirmation_runs_are_children_with_role_seed_and_what_they_confirm(confirmed):
    cfg, uri, result, folder = confirmed
    parent, runs = children(uri, NAME)
    confirm = [r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "confirm"]
    search = [r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "search"]
    assert len(search) == 2 + 5  # 2 searched + default and uniform hints of AT and toy_meanmatch + KD only
    # 1 configuration + default, kd_only, ce_only, uniform, random, DKD, ReviewKD and SemCKD baselines, each with
    # seeds 1 and 2, and seed 3 for the arms the race kept going
    table = result.confirmation
    arms = [c["seeds"] for c in table["configurations"]] + [b["seeds"] for b in table["baselines"]]
    assert len(arms) == 9 and all({"1", "2"} <= set(seeds) <= {"1", "2", "3"} for seeds in arms)
    assert len(confirm) == sum(len(seeds) for seeds in arms)
    third = [seeds for seeds in arms if "3" in seeds]
    kept_going = [g for g in table["configurations"][0]["gains"].values() if g["n"] == 3]  # open after 2 seeds
    assert bool(third) == bool(kept_going) == (table["n_seeds"] == 3)
    rounds = sorted(p.name for p in folder.joinpath("ray_results").iterdir() if p.name.startswith(NAME + "-"))
    assert rounds == [NAME + "-confirm"] + ([NAME + "-confirm-round2"] if third else [])
    searched_ids = {r.data.tags[tracking.TRIAL_TAG] for r in search}
    keys = Counter((r.data.tags["pursuhint.confirms"], r.data.tags[tracking.BASELINE_TAG],
                    r.data.tags["pursuhint.seed"]) for r in confirm)
    assert set(keys.values()) == {1}  # exactly one run per (configuration, seed)
    assert {"1", "2"} <= {k[2] for k in keys}
    assert {k[1] for k in keys} == {"none", "default", "kd_only", "ce_only", "uniform", "random", "dkd", "reviewkd",
                                    "semckd"}
    ce = [r for r in confirm if r.data.tags[tracking.BASELINE_TAG] == "ce_only"]
    assert all(r.data.params["kd_weight"] == "0.0" and r.data.params["hint_layers"] == "" for r in ce)
    # the published methods' recipes and layers: test_modern_methods reads them from this sweep
    assert {k[0] for k in keys if k[1] == "none"} <= searched_ids
    cohorts = Counter(r.data.tags.get(tracking.COHORT_TAG) for r in confirm)  # cohort: auto, the default
    assert cohorts.pop(None, 0) < len(confirm) and cohorts and min(cohorts.values()) >= 2, cohorts
    for run in confirm:
        assert {"test_acc", "final_val_acc"} <= set(run.data.metrics), run.info.run_name
        assert 0 <= run.data.metrics["test_acc"] <= 100
        assert run.data.params["split_selection_size"] == "30" and run.data.params["split_test_size"] == "120"
    for run in search:
        assert "test_acc" not in run.data.metrics  # the search never sees the test split
    hinted = [r for r in runs if r.data.params.get("hint_layers") and r.data.params["method"] == "at"]
    assert hinted
    for run in hinted:  # the calibrated β, recorded so users can take it to other training code
        assert run.data.params["hint_weight"] == "auto" and run.data.params["hint_ratio"] == "0.5"
        assert float(run.data.params["hint_weight_resolved"]) > 0
        assert run.data.metrics["hint_weight_resolved"] == pytest.approx(float(run.data.params["hint_weight_resolved"]))


def test_the_table_is_on_the_parent_and_in_the_result(confirmed):
    cfg, uri, result, folder = confirmed
    table = result.confirmation
    n = table["n_seeds"]
    assert table["seeds"] == [1, 2, 3][:n] and (table["min_seeds"], table["max_seeds"]) == (2, 3)
    assert table["stopped"] == "every comparison decided after 2 seeds" or \
        table["stopped"].startswith("the most seeds (3) reached with")
    c = table["configurations"][0]
    assert c["test_acc"]["n"] in (2, 3) and set(c["seeds"]) <= {"1", "2", "3"}
    assert set(c["gains"]) == {"default", "uniform", "random", "kd_only", "ce_only", "dkd", "reviewkd", "semckd"}
    for g in c["gains"].values():
        assert g["low"] <= g["mean"] <= g["high"] and g["n"] in (2, 3)
        assert g["verdict"].startswith(("better by", "worse by", "equivalent within", "undecided after"))
    assert table["answer"].startswith("Best: ") and table["answer"] == answer(table)
    assert set(table["splits"]) == {"train", "selection", "test"}
    parent, _ = children(uri, NAME)
    files = {f.path for f in tracking.client(uri).list_artifacts(parent.info.run_id)}
    assert {"confirmation.json", "confirmation.png"} <= files
    assert parent.data.metrics["confirmed_test_acc"] == pytest.approx(c["test_acc"]["mean"])
    assert parent.data.metrics["confirmed_gain_vs_default_ci_low"] == pytest.approx(c["gains"]["default"]["low"])
    on_disk = json.loads((result.experiment_dir / "confirmation.json").read_text())
    assert on_disk["configurations"][0]["trial_id"] == c["trial_id"]
    assert on_disk["answer"] == table["answer"] == parent.data.tags["pursuhint.answer"]


def test_report_labels_both_stages_and_export_carries_the_ci(confirmed, capsys, tmp_path):
    cfg, uri, result, folder = confirmed
    common = ["--tracking-uri", uri, "--storage-path", str(folder / "ray_results")]
    assert main(["report", NAME, *common, "--plot", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Answer: " + result.confirmation["answer"])
    first, search = out.index("Confirmation stage: racing 2-3 seeds"), out.index("Search stage: one seed")
    assert first < search and "vs default hints" in out and "vs the CE-only student" in out
    assert f"sweep {NAME}: 7 trials" in out  # the search leaderboard holds the search stage only
    assert (tmp_path / "c.png").stat().st_size > 1000
    assert main(["export", NAME, *common, "--top", "3", "-o", str(tmp_path / "x")]) == 0
    err = capsys.readouterr().err
    assert ("pursuhint: writing 1 hint set(s), not 3: the confirmation stage confirmed 1 configuration(s) "
            "(search.confirm.top_k); `--stage search --top 3` ranks the search's trials instead") in err
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["hint_set_1.json"]
    assert f"ranked by the confirmation stage ({result.confirmation['n_seeds']} seeds, test split)" in err
    exported = json.loads((tmp_path / "x" / "hint_set_1.json").read_text())
    conf = exported["provenance"]
    c = result.confirmation["configurations"][0]
    assert exported["score"] == pytest.approx(c["test_acc"]["mean"]) and conf["stage"] == "confirmation"
    assert conf["gain_vs_default"] == pytest.approx(c["gains"]["default"]["mean"])
    assert conf["gain_vs_default_ci_low"] == pytest.approx(c["gains"]["default"]["low"])
    assert conf["gain_vs_default_ci_high"] == pytest.approx(c["gains"]["default"]["high"])
    assert conf["gain_vs_default_verdict"] == c["gains"]["default"]["verdict"]
    assert conf["test_acc_sd"] == pytest.approx(c["test_acc"]["sd"]) and conf["n_seeds"] == c["test_acc"]["n"]
    assert conf["answer"] == result.confirmation["answer"]
    assert conf["gain_vs_default_decision"] == c["gains"]["default"]["decision"]
    assert conf["split_selection_hash"] == result.confirmation["splits"]["selection"]["hash"]
    resolved = {float(r.data.params["hint_weight_resolved"]) for r in children(uri, NAME)[1]
                if r.data.params.get("hint_weight_resolved")}
    assert resolved and any(conf["hint_weight"] == pytest.approx(v) for v in resolved)  # the resolved β, not "auto"
    assert main(["export", NAME, *common, "--stage", "search", "-o", str(tmp_path / "y")]) == 0
    assert "ranked by the search stage: one seed" in capsys.readouterr().err


def test_the_parents_best_hint_set_is_the_confirmed_winner_even_from_mlflow_alone(confirmed, capsys, tmp_path):
    """best_hint_set.json on the parent run is what `export` writes first (the confirmation stage's winner), and
    `export` finds the confirmation table on the parent run when Tune's folder is not at hand."""
    cfg, uri, result, folder = confirmed
    parent, _ = children(uri, NAME)
    got = tracking.client(uri).download_artifacts(parent.info.run_id, "best_hint_set.json", str(tmp_path))
    best = json.loads(open(got).read())
    c = result.confirmation["configurations"][0]
    assert best["provenance"]["stage"] == "confirmation" and best["score"] == pytest.approx(c["test_acc"]["mean"])
    assert ",".join(best["layers"]) == c["hint_layers"]
    elsewhere = ["--tracking-uri", uri, "--storage-path", str(tmp_path / "no_such_results")]
    assert main(["export", NAME, *elsewhere, "-o", str(tmp_path / "m")]) == 0
    assert f"ranked by the confirmation stage ({result.confirmation['n_seeds']} seeds, test split)" in \
        capsys.readouterr().err
    exported = json.loads((tmp_path / "m" / "hint_set_1.json").read_text())
    assert exported["layers"] == best["layers"] and exported["score"] == pytest.approx(best["score"])


def test_the_winner_reruns_bit_for_bit_with_the_threads_it_trained_with(confirmed, capsys, tmp_path):
    """`export --stage search --top 1` then `distill --hints` gives the trial's own final accuracy exactly: the
    hint set carries the trial's recipe, seed, thread count and device type, and `distill` uses that count."""
    import torch

    cfg, uri, result, folder = confirmed
    common = ["--tracking-uri", uri, "--storage-path", str(folder / "ray_results")]
    assert main(["export", NAME, *common, "--stage", "search", "--top", "1", "-o", str(tmp_path / "e")]) == 0
    capsys.readouterr()
    exported = json.loads((tmp_path / "e" / "hint_set_1.json").read_text())
    prov = exported["provenance"]
    assert prov["threads"] == 1 and prov["device_type"] == "cpu"  # a 1-CPU trial trains with one thread
    trial = next(r for r in result.leaderboard if r.trial_id == prov["trial_id"])
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # as a user's shell would have: more than the trial had
    try:
        assert main(["distill", cfg.source, "--hints", str(tmp_path / "e" / "hint_set_1.json"), "-q",
                     "-o", str(tmp_path / "student")]) == 0
        assert torch.get_num_threads() == 2  # restored after the run
    finally:
        torch.set_num_threads(before)
    out = capsys.readouterr().out
    assert "torch threads: 1, as the hint set's trial trained with" in out
    rerun = json.loads((tmp_path / "student" / "result.json").read_text())
    assert rerun["final_val_acc"] == trial.final_val_acc  # bit for bit, not approximately
    params = tracking.client(uri).get_run(trial.run_id).data.params if getattr(trial, "run_id", "") else {}
    assert not params or (params["threads"] == "1" and params["device_type"] == "cpu")


def test_report_and_export_find_a_sweeps_parts_from_its_name_and_tracking_uri_alone(confirmed, capsys, tmp_path,
                                                                                     monkeypatch):
    """The sweep ran with --storage-path; from another folder, with only --tracking-uri, `report --sync` finds its
    Tune folder, `report` its Optuna study and confirmation table, and `export` the confirmed ranking: the parent
    run records where each is."""
    cfg, uri, result, folder = confirmed
    monkeypatch.chdir(tmp_path)  # no runs/ray_results here
    parent, _ = children(uri, NAME)
    assert parent.data.tags["pursuhint.sweep_dir"] == str(folder / "ray_results" / NAME)
    assert parent.data.tags["pursuhint.optuna_storage"] == f"sqlite:///{folder / 'ray_results' / NAME / 'optuna.db'}"
    assert parent.data.tags["pursuhint.confirmation"] == str(folder / "ray_results" / NAME / "confirmation.json")
    assert main(["report", NAME, "--tracking-uri", uri, "--sync"]) == 0
    out = capsys.readouterr().out
    assert f"synced {folder / 'ray_results' / NAME} → MLflow {uri}" in out
    assert out.count("Answer: " + result.confirmation["answer"]) == 1
    assert "no Optuna study named" not in out and "the Optuna study has 2 completed trials" in out
    assert main(["export", NAME, "--tracking-uri", uri, "-o", str(tmp_path / "x")]) == 0
    assert f"ranked by the confirmation stage ({result.confirmation['n_seeds']} seeds" in capsys.readouterr().err
    # a given --storage-path still wins: a wrong one is named, not silently replaced by the recorded folder
    wrong = tmp_path / "no_such_place"
    assert main(["report", NAME, "--tracking-uri", uri, "--sync", "--storage-path", str(wrong)]) == 2
    assert f"no sweep results in {wrong / NAME}" in capsys.readouterr().err


def test_the_confirmation_trains_one_tune_trial_per_cohort(confirmed):
    """``cohort: auto``: the arms of one seed train together, one Tune trial per cohort (at most 8 students) or lone
    arm, each arm-seed with its own MLflow run; that a cohort's students equal separately trained ones bit for
    bit is checked in-process (test_cohort_invalid_member)."""
    cfg, uri, result, folder = confirmed
    _, runs = children(uri, NAME)
    confirm = [r for r in runs if r.data.tags.get(tracking.ROLE_TAG) == "confirm"]
    tags = Counter(r.data.tags.get(tracking.COHORT_TAG) for r in confirm)
    lone = tags.pop(None, 0)
    trials = [p for d in folder.joinpath("ray_results").glob(NAME + "-confirm*") for p in d.glob("run_trial_*")]
    assert len(trials) == len(tags) + lone < len(confirm)
    assert all(2 <= n <= 8 for n in tags.values()), tags  # 9 arms a seed: cohorts of 5 and 4
