"""The sweep's Optuna study kept in a real SQLite RDB storage: fANOVA importances read back from it, and a searcher
restored on ``--resume`` going on in the same study."""

from __future__ import annotations

import pickle

import numpy as np
import optuna
import pytest

from pursuhint.config import load_config
from pursuhint.errors import PursuhintError
from pursuhint.search.importance import (NoImportances, format_importances, param_importances, short_param_names,
                                         study_exists, study_storage)

from sweep_helpers import write_config


def _study(url: str, name: str, n: int) -> None:
    """``n`` completed trials whose objective is almost all ``train.lr`` (the others add noise a hundred times
    smaller), under the names a sweep gives its parameters."""
    study = optuna.create_study(study_name=name, storage=url, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=1))
    noise = np.random.default_rng(0)

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("train.lr", 0.001, 0.1, log=True)
        trial.suggest_categorical("selection.similarity", ["r2_cca", "cka_linear"])
        ratio = trial.suggest_float("distill.hint_ratio@at", 0.3, 3.0, log=True)
        return 50.0 + 200.0 * lr + 0.01 * ratio + 0.01 * noise.normal()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=n)


def test_the_parameter_that_drives_the_objective_ranks_first(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    _study(url, "s", 16)
    values = param_importances(url, "s")
    assert list(values)[0] == "lr" and set(values) == {"lr", "similarity", "hint_ratio@at"}
    assert values["lr"] > 0.8
    assert sum(values.values()) == pytest.approx(1.0)
    assert list(values.values()) == sorted(values.values(), reverse=True) and values.n_trials == 16
    assert values == param_importances(url, "s")  # seeded: the same figures twice
    text = format_importances(values, "final")
    assert text.splitlines()[0].startswith("Parameter importances (fANOVA over 16 completed Optuna trials")
    assert text.splitlines()[1].split()[:2] == ["lr", f"{values['lr']:.3f}"]


def test_fewer_than_eight_completed_trials_give_the_caveat(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    _study(url, "s", 5)
    with pytest.raises(NoImportances, match="has 5 completed trials and needs at least 8"):
        param_importances(url, "s")
    with pytest.raises(NoImportances, match="no Optuna study named 'other'"):
        param_importances(url, "other")
    missing = tmp_path / "none" / "optuna.db"
    with pytest.raises(NoImportances, match="no Optuna study"):
        param_importances(f"sqlite:///{missing}", "s")
    assert not missing.exists()  # looking did not create a database
    with pytest.raises(NoImportances, match="kept in memory"):
        param_importances(None, "s")


def test_short_names_keep_a_shared_last_component_whole():
    names = short_param_names(["selection.similarity", "distill.kd_weight@at", "train.lr", "teacher.train.lr",
                               "selection.rbf_max_samples"])
    assert names == {"selection.similarity": "similarity", "distill.kd_weight@at": "kd_weight@at",
                     "train.lr": "train.lr", "teacher.train.lr": "teacher.train.lr",
                     "selection.rbf_max_samples": "rbf_max_samples"}


def test_storage_defaults_to_a_file_in_the_tune_folder(tmp_path):
    cfg = load_config(write_config(tmp_path, "s_store"))
    assert study_storage(cfg, tmp_path / "rr" / "s_store") == f"sqlite:///{tmp_path / 'rr' / 's_store' / 'optuna.db'}"
    assert study_storage(cfg, None) is None  # Tune on remote storage: in memory
    explicit = cfg.with_values({"search.optuna_storage": "sqlite:////data/studies.db"})
    assert study_storage(explicit, None) == "sqlite:////data/studies.db"
    with pytest.raises(PursuhintError, match="'studies.db' is not an RDB URL"):
        cfg.with_values({"search.optuna_storage": "studies.db"})


def test_a_restored_searcher_goes_on_in_the_same_study(tmp_path):
    from pursuhint.search.searcher import make_searcher

    cfg = load_config(write_config(tmp_path, "s_resume"))
    url = f"sqlite:///{tmp_path / 'tune' / 'optuna.db'}"
    searcher = make_searcher(cfg, url)
    initial = pickle.dumps(searcher)  # what Tune keeps of the searcher when the Tuner is made
    assert [searcher.suggest(t)["pursuhint.baseline"] for t in ("b1", "b2")] == ["default", "kd_only"]
    for t in ("t1", "t2", "t3"):
        assert set(searcher.suggest(t)) >= {"selection.rbf_max_samples", "distill.kd_weight@at"}
    searcher.on_trial_complete("b1", {"val_acc": 99.0})  # a baseline: never an Optuna trial
    searcher.on_trial_complete("t1", {"val_acc": 61.0})
    searcher.on_trial_complete("t2", {"val_acc": 62.0})
    searcher.save(str(tmp_path / "searcher.pkl"))
    searcher.suggest("t4")  # asked after the last saved state: the driver is killed before saving again

    restored = pickle.loads(initial)
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_complete("t3", {"val_acc": 63.0})  # Tune reruns t3 and tells the restored searcher
    restored.suggest("t5")
    restored.on_trial_complete("t5", {"val_acc": 65.0})
    assert optuna.study.get_all_study_names(url) == ["s_resume"]
    study = optuna.load_study(study_name="s_resume", storage=url)
    states = {t.number: (t.state.name, t.value) for t in study.get_trials()}
    assert states == {0: ("COMPLETE", 61.0), 1: ("COMPLETE", 62.0), 2: ("COMPLETE", 63.0), 3: ("FAIL", None),
                      4: ("COMPLETE", 65.0)}
    again = make_searcher(cfg, url)  # the same storage and name: loaded, not a second study, no crash
    assert len(again.inner._ot_study.get_trials()) == 5 and study_exists(url, "s_resume")


def test_a_new_sweep_refuses_a_study_of_its_name_unless_overwritten(tmp_path, capsys):
    from pursuhint.search.sweep import _replace_old, _study as sweep_study

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    cfg = load_config(write_config(tmp_path, "s_taken")).with_values({"search.optuna_storage": url})
    _study(url, "s_taken", 2)
    with pytest.raises(PursuhintError, match="Optuna study named 's_taken' already exists"):
        sweep_study(cfg, tmp_path / "rr" / "s_taken", resume=False, overwrite=False)
    assert sweep_study(cfg, tmp_path / "rr" / "s_taken", resume=True, overwrite=False) == url  # goes on in it
    assert sweep_study(cfg, tmp_path / "rr" / "s_taken", resume=False, overwrite=True) == url
    assert study_exists(url, "s_taken")  # kept until the new sweep has passed its checks and holds its resources
    _replace_old(cfg, "", None, url)
    assert not study_exists(url, "s_taken")  # overwritten: the old study is gone
    remote = load_config(write_config(tmp_path, "s_remote"))
    assert sweep_study(remote, None, resume=False, overwrite=False) is None
    assert "Optuna study is kept in memory only" in capsys.readouterr().err


def test_the_sweep_command_prints_the_dashboard_command(tmp_path, monkeypatch, capsys):
    import pursuhint.cli as cli
    import pursuhint.search.sweep as sweep

    url = f"sqlite:///{tmp_path / 'rr' / 's_cli' / 'optuna.db'}"
    done = sweep.SweepResult(experiment_dir=tmp_path / "rr" / "s_cli", tracking_uri="sqlite:///m.db",
                             parent_run_id="p1", leaderboard=[], optuna_storage=url)
    monkeypatch.setattr(sweep, "run_sweep", lambda cfg, **kw: done)
    monkeypatch.setattr("pursuhint.search.parent_run.runs_table_address", lambda uri, parent: "")
    assert cli.main(["sweep", str(write_config(tmp_path, "s_cli")), "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    mlflow_line = next(i for i, line in enumerate(lines) if "mlflow ui --backend-store-uri sqlite:///m.db" in line)
    assert lines[mlflow_line + 1] == f"the Optuna study 's_cli': optuna-dashboard {url}"
