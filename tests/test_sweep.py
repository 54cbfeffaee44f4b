"""Sweeps on a real local Ray, tracked in a real MLflow store: layout, baselines, ASHA, duplicates,
report and export."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from pursuhint import tracking
from pursuhint.config import load_config
from pursuhint.export import write_hint_sets
from pursuhint.search.columns import format_leaderboard
from pursuhint.hints import HintSet
from pursuhint.search.hint_sets import top_hint_sets
from pursuhint.search.results import rows_from_mlflow, rows_from_tune
from pursuhint.search.sweep import run_sweep

from sweep_helpers import children, mlflow_db, write_config

pytestmark = pytest.mark.slow

CHILD_PARAMS = {"similarity", "n_hints", "algorithm", "center", "method", "hint_weight", "kd_weight", "lr",
                "hint_layers", "hint_indices", "student_layers"}


SECRET = "tok-9f8e7d6c5b4a39281706"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    import os

    folder = tmp_path_factory.mktemp("sweep")
    cfg = load_config(write_config(folder, "t_sweep"))
    uri = mlflow_db(folder)
    # Credentials in the environment (driver and, inherited, every Ray worker) must never reach MLflow.
    os.environ["PURSUHINT_TEST_API_TOKEN"] = SECRET
    os.environ["AWS_SECRET_ACCESS_KEY"] = SECRET + "-aws"
    try:
        result = run_sweep(cfg, tracking_uri=uri, storage_path=str(folder / "ray_results"), verbose=0,
                           progress=False)
    finally:
        os.environ.pop("PURSUHINT_TEST_API_TOKEN", None)
        os.environ.pop("AWS_SECRET_ACCESS_KEY", None)
    return cfg, uri, result, folder


def test_parent_and_children_layout(sweep):
    cfg, uri, result, _ = sweep
    parent, runs = children(uri, "t_sweep")
    assert parent.data.tags[tracking.ROLE_TAG] == "sweep"
    assert parent.data.tags[tracking.STATUS_TAG] == "completed"
    assert parent.data.params["teacher"] == "resnet14" and parent.data.params["student"] == "resnet8"
    assert len(runs) == 3 + 2  # 3 searched + default-hints baseline (at) + KD-only
    assert len({r.data.tags[tracking.TRIAL_TAG] for r in runs}) == 5
    assert Counter(r.data.tags[tracking.BASELINE_TAG] for r in runs) == {"none": 3, "default": 1, "kd_only": 1}
    for run in runs:
        assert CHILD_PARAMS <= set(run.data.params), run.info.run_name
        assert run.data.tags[tracking.PARENT_TAG] == parent.info.run_id
        assert run.data.tags[tracking.STATUS_TAG] in ("completed", "stopped"), run.data.tags
        assert "best_val_acc" in run.data.metrics
        # kd_weight is by_method: at's branch (0.0) for the AT trials; KD only's default branch is 0 too, so it
        # takes the benchmark's KD weights (0.9)
        kd_only = run.data.tags[tracking.BASELINE_TAG] == "kd_only"
        assert run.data.params["kd_weight"] == ("0.9" if kd_only else "0.0"), run.info.run_name
        assert not any("@" in k for k in run.data.params)
        # a given β is this β, logged when the trial starts (stopped trials and duplicates have it too); KD only: none
        assert run.data.params.get("hint_weight_resolved") == (None if kd_only else "10.0"), run.info.run_name
    names = {r.info.run_name for r in runs}
    assert {"baseline-default-at", "baseline-kd_only", "r2_cca-k3-pursuhint-mean_index-at"} <= names
    # MLflow's own status follows the trial's: completed, stopped by ASHA and duplicates are FINISHED
    assert {r.info.status for r in runs} == {"FINISHED"} and parent.info.status == "FINISHED"
    assert all(r.info.end_time for r in runs)
    client = tracking.client(uri)
    parent_files = {f.path for f in client.list_artifacts(parent.info.run_id)}
    assert {"config.yaml", "search_space.json", "leaderboard.json", "best_hint_set.json"} <= parent_files


def test_metrics_per_epoch_and_baselines_run_full_budget(sweep):
    cfg, uri, _, _ = sweep
    _, runs = children(uri, "t_sweep")
    client = tracking.client(uri)
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
        assert steps == sorted(set(steps)) and steps[0] == 1, (run.info.run_name, steps)
        if run.data.tags[tracking.BASELINE_TAG] != "none":
            # ASHA never stops a baseline: it trains every epoch.
            assert steps == [1, 2, 3], run.info.run_name
            for key in ("train_loss", "loss_ce", "epoch_time"):
                assert len(client.get_metric_history(run.info.run_id, key)) == 3, key
    default = next(r for r in runs if r.data.tags[tracking.BASELINE_TAG] == "default")
    assert default.data.params["hint_indices"] == "2,4,6"  # resnet14's stage ends (1-based)
    assert default.data.params["student_layers"] == "layer1.0,layer2.0,layer3.0"
    kd = next(r for r in runs if r.data.tags[tracking.BASELINE_TAG] == "kd_only")
    assert kd.data.params["method"] == "kd_only" and kd.data.params["hint_layers"] == ""
    assert float(kd.data.params["kd_weight"]) == 0.9


def test_duplicate_trials_reuse_the_first_result(sweep):
    _, uri, _, _ = sweep
    _, runs = children(uri, "t_sweep")
    searched = [r for r in runs if r.data.tags[tracking.BASELINE_TAG] == "none"]
    owners = [r for r in searched if tracking.DUPLICATE_TAG not in r.data.tags]
    dups = [r for r in searched if tracking.DUPLICATE_TAG in r.data.tags]
    assert len(owners) == 1 and len(dups) == 2
    owner = owners[0]
    client = tracking.client(uri)
    want = [m.value for m in client.get_metric_history(owner.info.run_id, "val_acc")]
    for dup in dups:
        assert dup.data.tags[tracking.DUPLICATE_TAG] == owner.data.tags[tracking.TRIAL_TAG]
        assert dup.data.tags[tracking.TRAIN_KEY_TAG] == owner.data.tags[tracking.TRAIN_KEY_TAG]
        got = [m.value for m in client.get_metric_history(dup.info.run_id, "val_acc")]
        assert got == want


def test_hint_set_and_atlas_artifacts(sweep):
    _, uri, _, folder = sweep
    _, runs = children(uri, "t_sweep")
    client = tracking.client(uri)
    for run in runs:
        files = {f.path for f in client.list_artifacts(run.info.run_id)}
        if run.data.params["hint_layers"]:
            assert {"hint_set.json", "layer_atlas.png"} <= files, run.info.run_name
            hs = HintSet.load(client.download_artifacts(run.info.run_id, "hint_set.json", str(folder)))
            assert ",".join(hs.layers) == run.data.params["hint_layers"]
            assert hs.teacher_arch == "resnet14" and len(hs.teacher_sha256) == 64
        else:
            assert "hint_set.json" not in files


def test_leaderboard_gains_and_report_text(sweep):
    _, uri, result, _ = sweep
    rows = rows_from_mlflow(uri, result.parent_run_id)
    assert [r.rank for r in rows] == list(range(1, 6))
    accs = [r.final_val_acc for r in rows]  # search.metric: final, the default
    assert accs == sorted(accs, reverse=True) and {r.metric for r in rows} == {"final"}
    for r in rows:
        assert r.best_val_acc >= r.final_val_acc
    default = next(r for r in rows if r.baseline == "default")
    kd = next(r for r in rows if r.baseline == "kd_only")
    for r in rows:
        if r.method == "at":
            assert r.gain_default == pytest.approx(r.final_val_acc - default.final_val_acc)
        else:  # no default-hints baseline for KD-only itself
            assert r.gain_default != r.gain_default
        assert r.gain_kd == pytest.approx(r.final_val_acc - kd.final_val_acc)
    text = format_leaderboard(rows)
    assert text.splitlines()[0].split()[:4] == ["rank", "val_acc", "best", "hints"]
    assert [r.trial_id for r in rows_from_mlflow(uri, result.parent_run_id, "best")] == \
        [r.trial_id for r in sorted(rows, key=lambda r: (-r.best_val_acc, r.trial_id))]
    assert len(text.splitlines()) == 6
    # run_sweep's leaderboard is read from Tune's folder: the same table as from MLflow.
    assert format_leaderboard(result.leaderboard) == text
    assert {r.trial_id: r.status for r in result.leaderboard} == {r.trial_id: r.status for r in rows}
    assert all(r.epochs >= 1 for r in result.leaderboard)


def test_export_round_trip(sweep, tmp_path):
    _, uri, result, _ = sweep
    rows = rows_from_mlflow(uri, result.parent_run_id)
    sets = top_hint_sets(rows, 3, sweep="t_sweep", parent=result.parent_run_id, uri=uri)
    assert 1 <= len(sets) <= 2  # two distinct hint sets exist: clustered and default
    assert len({tuple(s.indices) for s in sets}) == len(sets)
    paths = write_hint_sets(sets, tmp_path / "json", "json")
    for path, hs in zip(paths, sets):
        again = HintSet.load(path)
        assert again.to_dict() == hs.to_dict()
        row = next(r for r in rows if r.run_id == again.provenance["mlflow_run_id"])
        assert again.score == row.final_val_acc and again.provenance["sweep"] == "t_sweep"
        assert again.provenance["score_metric"] == "final_val_acc"
        assert again.provenance["method"] == row.method
    (ypath,) = write_hint_sets(sets[:1], tmp_path / "yaml", "yaml")
    assert HintSet.load(ypath).layers == sets[0].layers
    (tpath,) = write_hint_sets(sets[:1], tmp_path / "td", "torchdistill")
    frag = yaml.safe_load(tpath.read_text())
    assert frag["teacher"]["forward_hook"]["output"] == sets[0].layers
    assert frag["student"]["forward_hook"]["output"] == ["layer1.0", "layer2.0", "layer3.0"]


def test_cli_report_and_export(sweep, tmp_path, capsys, monkeypatch):
    from pursuhint.cli import main

    _, uri, _, folder = sweep
    assert main(["report", "t_sweep", "--tracking-uri", uri, "--plot", str(tmp_path / "cmp.png")]) == 0
    out = capsys.readouterr().out
    assert "sweep t_sweep: 5 trials" in out and (tmp_path / "cmp.png").stat().st_size > 1000
    assert main(["export", "t_sweep", "--tracking-uri", uri, "--top", "1", "-o", str(tmp_path / "ex")]) == 0
    assert HintSet.load(tmp_path / "ex" / "hint_set_1.json").score is not None
    assert main(["report", "no_such_sweep", "--tracking-uri", uri]) == 2
    assert "no sweep named 'no_such_sweep'" in capsys.readouterr().err


def test_existing_sweep_is_not_overwritten_silently(sweep):
    cfg, uri, _, folder = sweep
    from pursuhint.errors import PursuhintError

    with pytest.raises(PursuhintError, match="already exists.*--resume.*--overwrite"):
        run_sweep(cfg, tracking_uri=uri, storage_path=str(folder / "ray_results"), verbose=0, progress=False)
    other = cfg.with_values({"name": "never_ran"})
    with pytest.raises(PursuhintError, match="no sweep named 'never_ran' to resume"):
        run_sweep(other, tracking_uri=uri, storage_path=str(folder / "ray_results"), resume=True, verbose=0)


def test_an_overwrite_refused_by_its_checks_keeps_the_old_sweep(sweep):
    """--overwrite replaces the old sweep only once the new one has passed every check: a sweep refused for its
    resources (more GPUs per trial than the machine has) leaves the old folder, Optuna study and runs as they were."""
    from pursuhint.errors import PursuhintError
    from pursuhint.search.importance import study_exists

    cfg, uri, result, folder = sweep
    exp_dir = folder / "ray_results" / "t_sweep"
    files = sorted(p.name for p in exp_dir.iterdir())
    tag = tracking.client(uri).get_run(result.parent_run_id).data.tags[tracking.SWEEP_DIR_TAG]
    greedy = cfg.with_values({"search.resources_per_trial.gpu": 64})
    with pytest.raises(PursuhintError, match="asks for 64 GPU per trial"):
        run_sweep(greedy, tracking_uri=uri, storage_path=str(folder / "ray_results"), overwrite=True, verbose=0,
                  progress=False)
    assert sorted(p.name for p in exp_dir.iterdir()) == files and "pursuhint_sweep.json" in files
    assert tracking.client(uri).get_run(result.parent_run_id).data.tags[tracking.SWEEP_DIR_TAG] == tag
    assert study_exists(result.optuna_storage, "t_sweep")


def test_report_and_export_fall_back_to_tune_results(sweep, tmp_path, capsys):
    from pursuhint.cli import main

    _, uri, result, folder = sweep
    dead = "http://127.0.0.1:9"  # nothing listens on the discard port
    storage = str(folder / "ray_results")
    assert main(["report", "t_sweep", "--tracking-uri", dead, "--storage-path", storage]) == 0
    captured = capsys.readouterr()
    assert "reading Tune's results" in captured.err and "sweep t_sweep: 5 trials" in captured.out
    mlflow_rows = rows_from_mlflow(uri, result.parent_run_id)
    tune = rows_from_tune(folder / "ray_results" / "t_sweep")
    assert format_leaderboard(tune) == format_leaderboard(mlflow_rows)
    assert format_leaderboard(tune) in captured.out
    assert main(["export", "t_sweep", "--tracking-uri", dead, "--storage-path", storage, "-o",
                 str(tmp_path / "fb")]) == 0
    hs = HintSet.load(tmp_path / "fb" / "hint_set_1.json")
    assert hs.score == max(r.final_val_acc for r in mlflow_rows if r.hint_indices)


def test_no_credentials_in_mlflow_records(sweep, tmp_path):
    _, uri, _, _ = sweep
    parent, runs = children(uri, "t_sweep")
    client = tracking.client(uri)
    seen_text = 0
    for run in [parent, *runs]:
        blob = json.dumps({"params": run.data.params, "tags": run.data.tags, "metrics": list(run.data.metrics)})
        assert SECRET not in blob, run.info.run_name
        local = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / run.info.run_id)))
        for f in local.rglob("*"):
            if f.is_file() and f.suffix in (".json", ".yaml", ".txt", ".yml"):
                assert SECRET not in f.read_text(errors="ignore"), f
                seen_text += 1
    assert seen_text >= 5  # the scan really read the parent's and trials' text artifacts


def test_scrub_removes_credentials():
    text = "tracking: http://alice:pw123456@mlflow.internal:5000 token=abcdefghijk"
    out = tracking.scrub(text, {"MY_SERVICE_TOKEN": "abcdefghijk", "HOME": "/root"})
    assert out == "tracking: http://***@mlflow.internal:5000 token=***"


def test_trials_ended_by_tune_are_completed_only_when_every_epoch_ran():
    from pursuhint.search.callbacks import ended_status

    assert ended_status({"status": "running", "epoch": 3, "epochs_total": 3}) == "completed"  # ASHA at max_t
    assert ended_status({"status": "running", "epoch": 1, "epochs_total": 3}) == "stopped"
    assert ended_status({"status": "diverged", "epoch": 1, "epochs_total": 3}) is None  # the trial said so itself


def test_duplicate_book_hands_a_restarting_owners_key_to_its_waiter():
    from pursuhint.search.duplicate_index import DuplicateIndex

    book = DuplicateIndex()
    assert book.claim("k", "a") == {"role": "owner"}
    assert book.claim("k", "b")["role"] == "wait"
    book.update("k", "a", {"epoch": 1, "val_acc": 50.0})
    book.recovering("a")  # a's worker died; b holds a CPU a may need: b must not wait on a
    assert book.claim("k", "b") == {"role": "owner"}
    assert book.claim("k", "a")["role"] == "wait"  # a, restarted, now waits for b and reuses its result
    book.update("k", "b", {"epoch": 1, "val_acc": 51.0})
    book.finish("k", "b", "done", "completed")
    claim = book.claim("k", "a")
    assert claim["role"] == "reuse" and claim["owner"] == "b" and claim["history"] == [{"epoch": 1, "val_acc": 51.0}]
    assert book.claim("k2", "c") == {"role": "owner"}
    book.recovering("c")
    assert book.claim("k2", "c") == {"role": "owner"}  # restarted with no one waiting: it trains on


def test_distill_with_an_exported_hint_set_reproduces_its_trial(sweep, tmp_path, capsys):
    """The exported hint set records its trial's recipe; ``distill --hints`` trains with it, so on the same seed it
    is the same computation (on CPU, one thread, as the trial ran) and gives the trial's own accuracies."""
    import torch

    from pursuhint.cli import main

    _, uri, _, folder = sweep
    assert main(["export", "t_sweep", "--tracking-uri", uri, "--stage", "search", "-o", str(tmp_path / "ex")]) == 0
    path = tmp_path / "ex" / "hint_set_1.json"
    prov = HintSet.load(path).provenance
    assert not any(k.startswith("recipe_") for k in prov)  # the recipe once, under its own names
    assert (prov["method"], prov["hint_weight_setting"], prov["epochs"], prov["seed"]) == \
        ("at", 10.0, 3, 0)
    _, runs = children(uri, "t_sweep")
    run = next(r for r in runs if r.data.tags[tracking.TRIAL_TAG] == prov["trial_id"])
    trial = [m.value for m in sorted(tracking.client(uri).get_metric_history(run.info.run_id, "val_acc"),
                                     key=lambda m: m.step)]
    capsys.readouterr()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["distill", str(folder / "t_sweep.yaml"), "--hints", str(path), "-o", str(tmp_path / "st"),
                     "-q"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert f"recipe of the hint set's trial {prov['trial_id']}" in out
    for line in ("distill.method = 'at'  (hint set)", "distill.hint_weight = 10.0  (hint set)",
                 "train.epochs = 3  (hint set)", "train.seed = 0  (hint set)", "train.lr = 0.05  (hint set)"):
        assert line in out, out
    ours = [h["val_acc"] for h in json.loads((tmp_path / "st" / "result.json").read_text())["history"]]
    assert len(ours) == 3 and ours[:len(trial)] == pytest.approx(trial, abs=1e-6)  # an ASHA-stopped trial: its epochs
    # --recipe config takes the config's values instead, and a command-line value overrides either
    assert main(["distill", str(folder / "t_sweep.yaml"), "--hints", str(path), "--epochs", "1", "-o",
                 str(tmp_path / "st2"), "-q"]) == 0
    assert "train.epochs = 1  (command line)" in capsys.readouterr().out


def test_the_optuna_study_is_kept_beside_tunes_results(sweep):
    import optuna

    _, _, result, folder = sweep
    db = folder / "ray_results" / "t_sweep" / "optuna.db"
    assert result.optuna_storage == f"sqlite:///{db}" and db.is_file()
    assert optuna.study.get_all_study_names(f"sqlite:///{db}") == ["t_sweep"]
    study = optuna.load_study(study_name="t_sweep", storage=f"sqlite:///{db}")
    trials = study.get_trials()
    assert len(trials) == 3  # the searched trials: baselines are not Optuna trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    for t in trials:  # dotted keys; a by_method leaf under its branch's name
        assert t.params == {"selection.rbf_max_samples": t.params["selection.rbf_max_samples"],
                            "distill.method": "at", "distill.kd_weight@at": 0.0}
    # The objective is what the ranking uses (search.metric: final): each searched trial's last val_acc.
    searched = [r for r in result.leaderboard if r.baseline == "none"]
    assert sorted(t.value for t in trials) == pytest.approx(sorted(r.final_val_acc for r in searched))


def _self_contained(page: str) -> None:
    import re

    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', page, re.I)
    assert "http://" not in page and "https://" not in page and "<script" not in page.lower()


def test_report_prints_the_caveat_and_writes_the_page(sweep, tmp_path, capsys):
    from pursuhint.cli import main

    _, uri, result, folder = sweep
    html = tmp_path / "report.html"
    assert main(["report", "t_sweep", "--tracking-uri", uri, "--storage-path", str(folder / "ray_results"),
                 "--html", str(html)]) == 0
    out = capsys.readouterr().out
    caveat = "parameter importances: not shown, the Optuna study has 3 completed trials and needs at least 8"
    assert caveat in out and f"report page: {html}" in out
    page = html.read_text()
    _self_contained(page)
    assert page.count('<img src="data:image/png;base64,') >= 2  # the comparison plot and the best hints' atlas
    assert "Search stage: one seed, selection split" in page and caveat in page
    assert "has no confirmation stage" in page
    for r in rows_from_mlflow(uri, result.parent_run_id):
        assert f">{r.trial_id}<" in page and f">{r.final_val_acc:.2f}<" in page


def test_the_sweeps_run_holds_its_report_page(sweep, tmp_path):
    import base64
    import re

    _, uri, result, _ = sweep
    client = tracking.client(uri)
    assert "report.html" in {f.path for f in client.list_artifacts(result.parent_run_id)}
    page = Path(client.download_artifacts(result.parent_run_id, "report.html", str(tmp_path))).read_text()
    _self_contained(page)
    images = [base64.b64decode(m) for m in re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]
    rows = rows_from_mlflow(uri, result.parent_run_id)
    best = next(r for r in rows if r.hint_indices and r.baseline == "none")
    assert len(images) == 3  # the comparison plot, the best searched hint set's atlas and the default hints'
    assert f"Best hint set (the best searched trial, rank {best.rank} of the search stage): trial {best.trial_id}" in page
    owner = best if not best.duplicate_of else next(r for r in rows if r.trial_id == best.duplicate_of)
    atlas = Path(client.download_artifacts(owner.run_id, "layer_atlas.png", str(tmp_path / "atlas"))).read_bytes()
    assert atlas in images  # the trial's own picture, embedded byte for byte
    assert "Search stage: one seed, selection split" in page and "has 3 completed trials" in page
    for r in rows:
        assert f">{r.trial_id}<" in page and f">{r.final_val_acc:.2f}<" in page


def test_each_tune_experiment_gets_its_own_list_of_callbacks():
    """Tune appends its loggers to the callbacks list it is given: a list shared by the search stage and the
    confirmation rounds carried the search's open log files into the next Tuner, which then could not be pickled."""
    from ray.tune.utils.callback import _create_default_callbacks

    from pursuhint.config import config_from_text
    from pursuhint.search.sweep import _own_callbacks, _run_config

    mine = object()
    shared = _run_config(config_from_text("data: {dataset: digits, image_size: 8}\n"), "/tmp/x", 0, [mine])
    for _ in range(2):  # the search stage, then a confirmation round
        _create_default_callbacks(_own_callbacks(shared)["callbacks"])
    assert shared["callbacks"] == [mine]
