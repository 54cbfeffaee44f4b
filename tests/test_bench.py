"""bench/: the runner writes well-formed entries and keeps others; the naive baseline is a faithful one.

Figures are not asserted (they are measured in bench/, not tested); the smoke test runs at --tiny sizes.
"""

from __future__ import annotations

import base64
import glob
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import types
import zipfile
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as scipy_stats
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import cohorts, gpu, gpu_check, gpu_kit  # noqa: E402
from bench import run as bench_run  # noqa: E402
from bench.asha_savings import epochs_trained  # noqa: E402
from bench.common import CACHE_ENV, cifar10_subset, demo_raw, sweep_storage, workspace  # noqa: E402
from bench.experiments import hint_ratio_transfer, search_waste, selection_quality  # noqa: E402
from bench.experiments import selection_quality_natural as natural  # noqa: E402
from bench.experiments.hint_ratio_transfer import accuracy_gap, ratio_spread  # noqa: E402
from bench.experiments.search_waste import SPACES_ENV, collapsed, kept_spaces, sweep_config, trial_hours  # noqa: E402
from bench.selection_speed import naive_cka, naive_kmeans, naive_pair_list  # noqa: E402
from pursuhint.hints import cluster, similarity_matrix  # noqa: E402
from pursuhint.hints import similarity as sim  # noqa: E402
from pursuhint.search.confirm import SEARCHED, Candidate, ConfirmedResult, confirmation_table  # noqa: E402
from pursuhint.search.results import TrialRow  # noqa: E402


@pytest.mark.slow  # bench/run.py in a process of its own, timing selections (7 s): not in `make test-fast`
def test_quick_selection_speed_writes_a_well_formed_entry_and_keeps_others(tmp_path):
    out, docs = tmp_path / "results.json", tmp_path / "benchmarks.md"
    kept = {"name": "gpu", "ratio": 3.0, "note": "from an earlier run"}
    out.write_text(json.dumps({"gpu": kept}))
    docs.write_text("# Benchmarks\n\nHand-written intro.\n\n<!-- BEGIN generated:selection_speed -->\nold\n"
                    "<!-- END generated:selection_speed -->\n\nHand-written reading.\n")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--tiny", "--only", "selection_speed",
         "--output", str(out), "--docs", str(docs)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["gpu"] == kept  # entries of benchmarks not run this time stay
    entry = data["selection_speed"]
    keys = {"ratio", "ratio_definition", "aim", "machine", "date", "quick", "command", "figures", "tables"}
    assert keys <= set(entry)
    assert isinstance(entry["ratio"], float) and math.isfinite(entry["ratio"]) and entry["ratio"] > 0
    assert entry["quick"] is True and entry["tiny"] is True
    assert entry["command"] == "python bench/run.py --quick --tiny --only selection_speed"
    assert {"cpu", "cores", "torch", "device"} <= set(entry["machine"])
    assert entry["machine"]["torch"] == torch.__version__
    datetime.fromisoformat(entry["date"])
    case = entry["figures"]["cases"][0]
    assert case["naive_pair_evaluations"] == case["naive_measured_evaluations"]  # the count is exact
    assert case["naive_same_hints"] is True
    text = docs.read_text()
    assert "Hand-written intro." in text and "Hand-written reading." in text and "\nold\n" not in text
    assert f"**Headline ratio: {bench_run.fmt(entry['ratio'])}**" in text
    for name in bench_run.BENCHMARKS:  # every benchmark has its section, run this time or not
        assert f"<!-- BEGIN generated:{name} -->" in text, name
    assert text.count("<!-- BEGIN generated:") == len(bench_run.BENCHMARKS)


def test_unknown_benchmark_name_is_refused_with_the_valid_names(tmp_path):
    with pytest.raises(bench_run.BenchUsageError, match="unknown benchmark 'speed'; valid: selection_speed, "):
        bench_run.parse_only("selection_speed,speed")
    assert bench_run.parse_only(None) == list(bench_run.BENCHMARKS)
    assert bench_run.main(["--only", "nope", "--output", str(tmp_path / "r.json")]) == 2
    assert not (tmp_path / "r.json").exists()


def test_every_benchmark_loads_by_name_the_experiments_from_bench_experiments():
    for name in bench_run.BENCHMARKS:
        module = bench_run.load_module(name)
        folder = "experiments" if name in bench_run.EXPERIMENTS else "bench"
        assert module.NAME == name and module.TITLE and Path(module.__file__).parent.name == folder, name
    assert set(bench_run.EXPERIMENTS) < set(bench_run.BENCHMARKS)


def test_docs_are_created_with_one_section_per_benchmark(tmp_path):
    docs = tmp_path / "b.md"
    entry = {"ratio": 12.5, "ratio_definition": "a over b", "aim": "≥ 5", "aim_met": True, "quick": False,
             "command": "python bench/run.py --only input_pipeline", "date": "2026-01-01T00:00:00+00:00",
             "machine": {"cpu": "X", "cores": 2, "torch": "2", "device": "cpu"},
             "tables": [{"title": "T", "columns": ["a", "b"], "rows": [["x", 0.012345], ["y", 12345.0]]}]}
    bench_run.refresh_docs(docs, {"input_pipeline": entry})
    text = docs.read_text()
    assert "**Headline ratio: 12.5** — a over b." in text and "**met**" in text
    assert "| x | 0.0123 |" in text and "| y | 12,345 |" in text
    assert "No result yet: run `python bench/run.py --only selection_speed`." in text
    bench_run.refresh_docs(docs, {"input_pipeline": entry})
    assert docs.read_text() == text  # idempotent


def test_naive_gram_cka_equals_feature_space_cka():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 6, generator=g, dtype=torch.float64) + 3.0  # uncentered on purpose
    y = torch.tanh(x @ torch.randn(6, 4, generator=g, dtype=torch.float64))
    want = similarity_matrix([x, y], "cka_linear").values[0, 1]
    assert naive_cka(x, y) == pytest.approx(want, abs=1e-12)
    assert naive_cka(x, 2.5 * x) == pytest.approx(1.0, abs=1e-12)


def test_naive_kmeans_makes_the_same_choices_and_count_as_the_paper_clustering():
    g = torch.Generator().manual_seed(1)
    bases = [torch.randn(40, 5, generator=g, dtype=torch.float64) for _ in range(3)]
    # three depth blocks of 4, 3 and 5 layers, each a noisy copy of its block's base
    reps = [bases[b] + 0.3 * torch.randn(40, 5, generator=g, dtype=torch.float64) for b in [0] * 4 + [1] * 3 + [2] * 5]
    S = similarity_matrix(reps, "cka_linear").values
    result = cluster(S, 3)
    centers, iterations, evaluations = naive_kmeans(reps, 3)
    assert sorted(set(centers)) == result.centers
    assert iterations == result.iterations
    pairs = naive_pair_list(result.trace, result.iterations, len(reps))
    assert evaluations == len(pairs) == iterations * 3 * len(reps)


@pytest.mark.parametrize("case", ["continuous", "ties", "mostly_zero", "odd"])
def test_rbf_median_fast_path_is_numpys_median(case, monkeypatch):
    # the bracketed selection in similarity._median must give exactly np.median on large inputs
    rng = np.random.default_rng(3)
    if case == "continuous":
        a = rng.standard_normal((400, 400)) ** 2
    elif case == "ties":
        a = rng.integers(0, 7, (400, 400)).astype(np.float64)
    elif case == "mostly_zero":
        a = np.where(rng.random((400, 400)) < 0.6, 0.0, rng.random((400, 400)))
    else:
        a = rng.random((401, 399))
    assert a.size > sim._MEDIAN_SAMPLE
    assert sim._median(torch.from_numpy(a)) == np.median(a)


def test_rbf_median_falls_back_to_a_full_selection_when_the_bracket_misses(monkeypatch):
    a = np.random.default_rng(4).random(90_001)
    monkeypatch.setattr(sim, "_MEDIAN_SAMPLE", 64)
    picks = torch.randint(a.size, (64,), generator=torch.Generator().manual_seed(0)).numpy()
    a[picks] = 1e9  # the sampled entries are all outliers, so the bracket [1e9, 1e9] misses the median
    sizes = []
    middle = sim._middle
    monkeypatch.setattr(sim, "_middle", lambda flat, ks: sizes.append(flat.numel()) or middle(flat, ks))
    assert sim._median(torch.from_numpy(a)) == np.median(a)
    assert sizes == [a.size]


def test_asha_epochs_trained_leaves_out_replays_and_invalid_trials():
    rows = [TrialRow("a", epochs=8, status="completed"), TrialRow("b", epochs=2, status="stopped"),
            TrialRow("c", epochs=8, status="completed", duplicate_of="a"), TrialRow("d", epochs=0, status="invalid"),
            TrialRow("e", epochs=4, status="diverged")]
    assert epochs_trained(rows) == 8 + 2 + 4


def test_search_waste_counts_collapsed_searched_trials_only(tmp_path):
    nan = float("nan")
    rows = [TrialRow("a", final_val_acc=90.0), TrialRow("b", final_val_acc=84.9),  # 84.9 < 90 − 5: collapsed
            TrialRow("c", final_val_acc=85.0), TrialRow("d", final_val_acc=12.0, baseline="default"),
            TrialRow("e", final_val_acc=12.0, duplicate_of="b"), TrialRow("f", final_val_acc=0.0, status="invalid"),
            TrialRow("g", final_val_acc=nan, status="diverged")]  # diverged: no accuracy, counted as collapsed
    assert [r.trial_id for r in collapsed(rows, 90.0)] == ["b", "g"]
    settings = {"samples": 3, "epochs": 2, "seeds": 2}
    raw_beta = sweep_config(demo_raw(), "digits", "raw_beta", "/tmp/t.pt", settings)
    calibrated = sweep_config(demo_raw(), "digits", "calibrated", "/tmp/t.pt", settings)
    assert raw_beta.space["distill.hint_weight"] == {"loguniform": [10.0, 1000.0]} and raw_beta.distill.hint_ratio == 1
    assert calibrated.distill.hint_weight == "auto" and "distill.hint_ratio" in calibrated.space
    for cfg in (raw_beta, calibrated):  # everything else identical
        assert (cfg.search.scheduler, cfg.search.num_samples, cfg.seed, cfg.train.epochs) == ("fifo", 3, 0, 2)
        assert {k: v for k, v in cfg.space.items() if "hint" not in k} == \
            {k: v for k, v in raw_beta.space.items() if "hint" not in k}
    trial = tmp_path / "t" / "run_trial_x"
    trial.mkdir(parents=True)
    (trial / "params.json").write_text("{}")
    (trial / "result.json").write_text('{"trial_id": "x", "time_total_s": 1800}\n{"trial_id": "x", "time_total_s": 3600}\n')
    assert trial_hours(tmp_path / "t", tmp_path / "missing") == 1.0


def test_search_waste_reruns_only_the_named_spaces_and_tables_skip_spaces_a_pair_never_ran(monkeypatch):
    fig = {"collapsed": 0, "searched": 8, "final_val_acc": [50.0], "confirmed_test_acc": 51.0, "confirmed_sd": 1.0,
           "trial_hours": 0.5, "test_acc_per_trial_hour": 102.0}
    entry = {"figures": {"cifar": {"ce_only_final_val_acc": 43.6, "raw_beta": fig, "calibrated": fig,
                                   "teacher": {"arch": "resnet20"}}}}
    monkeypatch.delenv(SPACES_ENV, raising=False)
    assert kept_spaces(entry, "cifar") == {}  # unset: every space runs
    monkeypatch.setenv(SPACES_ENV, "calibrated_by_method")
    assert kept_spaces(entry, "cifar") == {"raw_beta": fig, "calibrated": fig}
    assert kept_spaces(None, "cifar") == {}
    monkeypatch.setenv(SPACES_ENV, "calibrated,bogus")
    with pytest.raises(SystemExit, match=r"unknown spaces \['bogus'\]"):
        kept_spaces(entry, "cifar")
    rows = search_waste.tables({"digits": None, "cifar": entry["figures"]["cifar"]})[0]["rows"]
    assert [r[:3] for r in rows] == [["cifar", "raw_beta", "0 of 8"], ["cifar", "calibrated", "0 of 8"]]


def test_hint_ratio_transfer_tables_compare_the_ratios_and_the_trained_students():
    figures = {"digits": {"implied": {"at": 10.0, "fitnet": 1000.0},
                          "trained": {"at": {"r": 5.0, "1": [94.0, 96.0], "published": [80.0, 80.0]},
                                      "fitnet": {"r": 250.0, "1": [95.0, 95.0], "published": [91.0, 92.0]}}},
               "cifar": {"implied": {"at": 5.0, "fitnet": 250.0},
                         "trained": {"at": {"r": 5.0, "1": [47.0, 48.0], "published": [47.5, 46.5]},
                                     "fitnet": {"r": 250.0, "1": [48.0, 47.0], "published": [56.0, 55.0]}}}}
    assert ratio_spread(figures, "at") == 2.0 and ratio_spread(figures, "fitnet") == 4.0
    assert accuracy_gap(figures["cifar"]["trained"]["fitnet"]) == -8.0
    assert accuracy_gap(figures["digits"]["trained"]["at"]) == 15.0
    ratios, trained = hint_ratio_transfer.tables(figures)
    assert ratios["rows"] == [["at", "10", "5", "2.0×"], ["fitnet", "1e+03", "250", "4.0×"]]
    assert trained["columns"][3] == "the published β's 32-px r"
    assert trained["rows"][0] == ["digits, 16 px", "at", "95.00 ± 1.41", "5", "80.00 ± 0.00", "+15.00"]
    assert trained["rows"][3] == ["CIFAR-shaped, 32 px", "fitnet", "47.50 ± 0.71", "250", "55.50 ± 0.71", "-8.00"]
    assert ratio_spread({"digits": figures["digits"]}, "at") is None and hint_ratio_transfer.tables({}) == []


def test_selection_quality_tables_come_from_the_sweeps_confirmation_tables():
    cand = Candidate("t1", {}, 90.0, "at", 3, "layer1.2,layer2.2,layer3.2", (100.0, 1.0, 0.0, 1.0), 0.05)
    results = [ConfirmedResult(SEARCHED, "t1", "at", 3, s, 90.0 + s, 0.0, cand.hint_layers) for s in (1, 2, 3)]
    results += [ConfirmedResult("default", "default", "at", 3, s, 88.0 + s * 0.9, 0.0) for s in (1, 2, 3)]
    table = confirmation_table([cand], results, 3)
    out = selection_quality.tables({"paper_mode": {"at r2_cca": {"wall_s": 12.5, "trials": 1, "confirmation": table}},
                                    "best": "at r2_cca", "searched": None, "probe_sensitivity": []})
    assert len(out) == 1 and "at r2_cca: confirmation stage, 3 seeds" in out[0]["title"]
    row, base = out[0]["rows"]
    assert row[0] == "at K=3 [layer1.2,layer2.2,layer3.2]" and row[1] == "92.00 ± 1.00"
    assert row[2].startswith("better by 2.20 [+") and row[2] == table["configurations"][0]["gains"]["default"]["verdict"]
    assert base[0] == "default hints (at)" and base[2:] == ["—", "—", "—", "—"]


def test_gpu_benchmark_without_cuda_writes_a_skipped_entry(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    entry = gpu.run(quick=True)
    assert entry["skipped"] is True and entry["ratio"] is None and entry["figures"] == {}
    assert "no GPU was lent" in entry["notes"][0]
    assert entry["command"] == "python bench/run.py --quick --only gpu"
    json.dumps(entry, allow_nan=False)


def test_sweep_benchmarks_workspace_points_runs_at_the_cache_and_cleans_up(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    before = os.environ.get("PURSUHINT_RUNS")
    with workspace() as folder:
        assert os.environ["PURSUHINT_RUNS"] == str(tmp_path / "cache")
        kw = sweep_storage(folder / "s")
        assert (folder / "s").is_dir() and kw["tracking_uri"] == f"sqlite:///{folder / 's' / 'mlflow.db'}"
        assert not str(folder).startswith(str(ROOT))  # never inside the checkout
    assert os.environ.get("PURSUHINT_RUNS") == before and not folder.exists()


def _natural_figures():
    """A hand-made selection_quality_natural figures dict: an AT+KD family (r2_cca sweep with every baseline,
    a cka_linear sweep of its own) and an AT family whose cka_linear hints equal r2_cca's."""

    def sweep(family, measure, base, baselines, wall):
        cand = Candidate("t1", {}, 50.0, "at", 3, "layer1.1,layer2.1,layer3.2", ("auto", 1.0, 1.5, 1.0), 0.05)
        results = [ConfirmedResult(SEARCHED, "t1", "at", 3, s, base + s, 0.0, cand.hint_layers) for s in (1, 2, 3)]
        for kind, offset in baselines.items():
            results += [ConfirmedResult(kind, kind, "kd_only" if kind == "kd_only" else "at", 3, s,
                                        base - offset + 0.5 * s, 0.0) for s in (1, 2, 3)]
        return {"family": family, "measure": measure, "wall_s": wall, "trials": 1,
                "confirmation": confirmation_table([cand], results, 3)}

    return {
        "pair": ["resnet20", "resnet8"], "n_seeds": 3, "seeds": [1, 2, 3], "splits": {"train": 1800, "selection": 200,
                                                                                     "test": 5000},
        "teacher": {"arch": "resnet20", "train_images": 4500, "epochs": 15, "test_acc": 70.0},
        "ce_only": {"seeds": {"1": 40.0, "2": 41.0, "3": 42.5}},
        "hints": {"r2_cca": [1, 5, 8], "cka_linear": [2, 5, 8], "default": [2, 5, 8], "uniform": [1, 4, 7],
                  "random": {"1": [0, 3, 6], "2": [2, 4, 8], "3": [1, 2, 3]}},
        "sweeps": {"at+kd r2_cca": sweep("at+kd", "r2_cca", 50.0, {"default": 2.0, "uniform": 3.0, "random": 4.0,
                                                                    "kd_only": 1.0}, 300.0),
                   "at+kd cka_linear": sweep("at+kd", "cka_linear", 49.0, {}, 120.0),
                   "at r2_cca": sweep("at", "r2_cca", 45.0, {"default": 1.0}, 200.0),
                   "at cka_linear": {"family": "at", "measure": "cka_linear", "same_as": "at r2_cca"}},
        "data_path": {"jpeg_mb": 30.0, "cpus": 2, "cache_mb": 73.4, "cold_over_warm": 7.5,
                      "first_load": {"seconds": 15.0, "images": 25000, "maxrss_mb": 700.0},
                      "second_load": {"seconds": 2.0, "images": 25000, "maxrss_mb": 600.0}},
        "probe_sensitivity": [{"probe": "teacher's training split", "images": 250, "r2_cca": [1, 5, 8],
                               "cka_linear": [2, 5, 8]}],
    }


def test_selection_quality_natural_tables_pair_every_placement_with_the_default_hints():
    out = natural.tables(_natural_figures())
    titles = [t["title"] for t in out]
    assert titles[0].startswith("Teacher and student alone: test accuracy (%) on 5000 held-out photographs")
    assert out[0]["rows"][1][1] == "41.17 ± 1.26" and out[0]["rows"][2][1] == "+28.83"
    kd, at = out[1], out[2]
    assert kd["title"].startswith("at+kd (CE + KD + hints): test accuracy (%) over 3 seeds")
    assert "r2_cca 300.0 s" in kd["title"] and "cka_linear 120.0 s" in kd["title"]
    rows = {r[0]: r for r in kd["rows"]}
    assert list(rows) == ["paper mode, r2_cca", "paper mode, cka_linear", "default hints", "uniform hints",
                          "random hints", "KD only", "student alone (CE only)"]
    # r2_cca: 51, 52, 53 against default 48.5, 49, 49.5: gains 2.5, 3, 3.5, so the CI lies above 0
    assert rows["paper mode, r2_cca"][1:3] == ["2, 6, 9", "52.00 ± 1.00"]
    assert rows["paper mode, r2_cca"][3].startswith("+3.00 [") and rows["paper mode, r2_cca"][4] == \
        "better than default hints"
    # the cka_linear sweep's runs (50, 51, 52) pair with the r2_cca sweep's default runs of the same seeds
    assert rows["paper mode, cka_linear"][3].startswith("+2.00 [")
    assert rows["default hints"][1:] == ["3, 6, 9", "49.00 ± 0.50", "—", "—"]
    assert rows["random hints"][1] == "1, 4, 7 / 3, 5, 9 / 2, 3, 4 (per seed)"
    assert rows["KD only"][3].startswith("+1.00 [") and rows["KD only"][4] == "better than default hints"
    # CE only 40, 41, 42.5 vs default 48.5, 49, 49.5: worse, seeds paired as ints and strings alike
    assert rows["student alone (CE only)"][4] == "worse than default hints"
    at_rows = {r[0]: r for r in at["rows"]}
    assert at_rows["paper mode, cka_linear"] == ["paper mode, cka_linear", "3, 6, 9 (= r2_cca: not retrained)",
                                                 "—", "—", "—"]
    assert "KD only" not in at_rows and "uniform hints" not in at_rows
    assert out[3]["title"].startswith("Natural-image data path: 25,000 JPEGs (30.0 MB)")
    assert out[3]["rows"][0][1:] == [15.0, 700.0, 73.4] and out[3]["rows"][2][:2] == ["first ÷ second", 7.5]
    assert out[4]["rows"] == [[250, "teacher's training split", "2, 6, 9", "3, 6, 9"]]
    assert natural.tables({}) == []
    json.dumps(out, allow_nan=False)


def test_selection_quality_natural_builds_the_published_methods_sweeps(tmp_path):
    from pursuhint.preflight import check_names, check_published

    s = natural.natural_settings(False, False)
    m = natural.modern_settings(False, False)
    cfgs = natural.modern_configs(tmp_path, str(tmp_path / "teacher.pt"), s, m)
    race, hints = cfgs["race"], cfgs["semckd_hints"]
    conf = race.search.confirm
    assert conf.baselines == ["default", "kd_only", "dkd", "reviewkd", "semckd"]
    assert (conf.min_seeds, conf.max_seeds, conf.cohort) == (3, 5, "auto")  # a race, arms of a seed together
    assert (race.distill.method, race.distill.kd_weight, race.selection.similarity) == ("at", 1.5, "r2_cca")
    assert hints.distill.method == "semckd" and hints.distill.params == {"candidates": "hints"}
    assert hints.distill.hint_weight is None and hints.distill.kd_weight == 1.0  # SemCKD's published recipe
    assert hints.search.confirm.seeds == 3 and hints.search.confirm.baselines == []  # the race's first seeds
    assert hints.selection == race.selection and hints.train == race.train and hints.data == race.data
    for cfg in cfgs.values():
        check_names(cfg)
        check_published(cfg)
    assert list(natural.modern_configs(tmp_path, "t.pt", s, natural.modern_settings(True, True))) == ["race"]


def _modern_figures():
    """Figures with the published methods' part: a race over five baselines and the SemCKD-over-hints sweep."""
    cand = Candidate("t1", {}, 50.0, "at", 3, "layer1.1,layer2.1,layer3.2", ("auto", 1.0, 1.5, 1.0), 0.05)
    paper = {1: 50.0, 2: 51.0, 3: 52.0}
    offsets = {"default": {1: 0.5, 2: 0.4, 3: 0.6}, "kd_only": {1: 3.0, 2: 3.5, 3: 2.5},
               "dkd": {1: 0.1, 2: -0.1, 3: 0.0}, "reviewkd": {1: 1.0, 2: 2.0, 3: 3.0}, "semckd": {1: 2.0, 2: 2.2, 3: 1.8}}
    results = [ConfirmedResult(SEARCHED, "t1", "at", 3, k, v, 0.0, cand.hint_layers) for k, v in paper.items()]
    for kind, off in offsets.items():
        method = {"default": "at", "kd_only": "kd_only"}.get(kind, kind)  # the default hints train the config's AT
        results += [ConfirmedResult(kind, kind, method, 3, k, paper[k] - off[k], 0.0) for k in paper]
    hints_cand = Candidate("h1", {}, 49.0, "semckd", 3, "layer1.1,layer2.1,layer3.2", ("auto", 1.0, 1.0, 1.0), 0.05)
    hints = [ConfirmedResult(SEARCHED, "h1", "semckd", 3, k, paper[k] - 1.0, 0.0, hints_cand.hint_layers)
             for k in paper]
    f = _natural_figures()
    f["modern"] = {"settings": {"family": ["at", 1.5], "baselines": list(offsets), "seeds": 3},
                   "sweeps": {"race": {"wall_s": 100.0, "trials": 1, "confirmation": confirmation_table([cand], results, 3)},
                              "semckd_hints": {"wall_s": 50.0, "trials": 1,
                                               "confirmation": confirmation_table([hints_cand], hints, 3)}},
                   "date": "2026-12-03T00:00:00+00:00", "same_run": True}
    f["walls_s"] = {"modern": 150.0}
    return f


def test_selection_quality_natural_decides_the_published_methods_against_kd_only_and_the_hints():
    from pursuhint.search.stats import decide_table

    f = _modern_figures()
    arms = natural.modern_arms(f)
    assert list(arms)[0] == "paper" and list(arms)[-2:] == ["semckd_hints", "ce_only"]  # baselines: best first
    assert set(arms) == {"paper", "default", "kd_only", "dkd", "reviewkd", "semckd", "semckd_hints", "ce_only"}
    assert arms["dkd"] == ("DKD", {1: 49.9, 2: 51.1, 3: 52.0}) and arms["paper"][0] == "at+kd, paper-mode hints (r2_cca)"
    decided = natural.modern_decisions(f)
    assert list(decided) == list(natural.MODERN_PAIRS)  # the table's order
    # DKD − KD only: 49.9 − 47, 51.1 − 47.5, 52 − 49.5 = 2.9, 3.6, 2.5 (paired by seed)
    d = decided[("dkd", "kd_only")]
    assert d.n == 3 and d.mean == pytest.approx(3.0)
    # Holm over six: SemCKD over the hints is 1 point below the paper-mode hints on every seed (sd 0: decided
    # first, at α/6); DKD − KD only comes next, at α/5 = 0.01, where t(0.995, 2) · sd/√3 is wider than its mean
    first = decided[("semckd_hints", "paper")]
    assert (first.mean, first.verdict, first.alpha_star) == (pytest.approx(-1.0), "worse", pytest.approx(0.05 / 6))
    half = scipy_stats.t.ppf(1 - 0.01 / 2, 2) * np.std([2.9, 3.6, 2.5], ddof=1) / math.sqrt(3)
    assert (d.alpha_star, d.low, d.high) == (pytest.approx(0.01), pytest.approx(3 - half), pytest.approx(3 + half))
    assert d.verdict == "undecided" and d.low < 0
    again = decide_table({pair: [arms[pair[0]][1][k] - arms[pair[1]][1][k] for k in (1, 2, 3)]
                          for pair in natural.MODERN_PAIRS}, alpha=0.05, margin=1.0)
    assert {k: v.verdict for k, v in again.items()} == {k: v.verdict for k, v in decided.items()}
    out = natural.modern_tables(f)
    assert [t["title"].split(":")[0] for t in out] == [
        "Published methods that choose no layer, on 5000 held-out photographs",
        "The race", "Afterwards, on the seeds both arms have"]
    assert out[0]["rows"][0] == ["at+kd, paper-mode hints (r2_cca)", 3, "51.00 ± 1.00"]
    race_rows = {r[0]: r for r in out[1]["rows"]}
    assert set(race_rows) == {"at+kd, default hints", "KD only", "DKD", "ReviewKD", "SemCKD over the stage ends"}
    assert race_rows["KD only"][2] == "better" and race_rows["DKD"][2] == "equivalent"
    assert [r[:2] for r in out[2]["rows"]][:1] == [["DKD", "KD only"]]
    assert natural.tables(f)[-3:-2] == out[-1:]  # before the data path and the probe tables
    assert "same run" in natural._modern_note(f)
    json.dumps(out, allow_nan=False)


def test_selection_quality_natural_without_photographs_is_skipped_with_a_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(natural, "cifar10_subset", lambda: None)
    entry = natural.run(quick=True)
    assert entry["skipped"] is True and entry["aim_met"] is False and entry["ratio"] is None
    assert entry["figures"] == {} and natural.tables(entry["figures"]) == []
    assert "PURSUHINT_CIFAR10_SUBSET" in entry["notes"][0]
    json.dumps(entry, allow_nan=False)
    out = tmp_path / "r.json"
    code = bench_run.main(["--quick", "--only", "selection_quality_natural", "--output", str(out),
                           "--docs", str(tmp_path / "b.md")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "[skip] selection_quality_natural: Skipped: the CIFAR-10 photographs were not found" in printed
    assert json.loads(out.read_text())["selection_quality_natural"]["skipped"] is True


@pytest.mark.slow
def test_tiny_selection_quality_natural_runs_sweeps_with_a_confirmation_stage(tmp_path):
    if cifar10_subset() is None:
        pytest.skip("the CIFAR-10 photographs are not here (set $PURSUHINT_CIFAR10_SUBSET to their ImageFolder)")
    out, docs = tmp_path / "results.json", tmp_path / "benchmarks.md"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--tiny", "--only", "selection_quality_natural",
         "--output", str(out), "--docs", str(docs)],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    entry = json.loads(out.read_text())["selection_quality_natural"]
    assert entry["skipped"] is False and entry["tiny"] is True
    assert entry["command"] == "python bench/run.py --quick --tiny --only selection_quality_natural"
    assert isinstance(entry["ratio"], float) and math.isfinite(entry["ratio"]) and entry["ratio"] > 0
    f = entry["figures"]
    table = f["sweeps"]["at r2_cca"]["confirmation"]
    assert table["n_seeds"] >= 2 and len(table["seeds"]) >= 2
    (config,) = table["configurations"]
    assert len(config["seeds"]) >= 2 and "default" in config["gains"]
    assert {b["kind"] for b in table["baselines"]} == {"default", "kd_only", "dkd", "reviewkd", "semckd"}
    assert len(f["ce_only"]["seeds"]) >= 2 and 0 < f["teacher"]["test_acc"] <= 100
    assert len(f["hints"]["r2_cca"]) == 3 and f["probe_sensitivity"]
    assert entry["tables"][1]["rows"][0][0] == "paper mode, r2_cca"
    race = f["modern"]["sweeps"]["race"]["confirmation"]  # the published methods, raced in cohorts
    assert race == table  # tiny: the family's own sweep is their race (one sweep less)
    assert set(race["configurations"][0]["gains"]) == {"default", "kd_only", "dkd", "reviewkd", "semckd"}
    assert list(f["modern"]["sweeps"]) == ["race"]
    assert any(t["title"].startswith("Published methods that choose no layer") for t in entry["tables"])
    assert "<!-- BEGIN generated:selection_quality_natural -->" in docs.read_text()


@pytest.mark.slow
def test_selection_quality_natural_data_path_measures_a_cold_and_a_warm_load(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 36), (i * 40, 90, 200)).save(tmp_path / split / cls / f"{i}.jpg")
    d = natural.data_path(tmp_path)
    assert d["first_load"]["images"] == d["second_load"]["images"] == 10
    assert d["cache_mb"] > 0 and d["jpeg_mb"] > 0 and d["children_maxrss_mb"] >= d["first_load"]["maxrss_mb"] > 0
    assert d["first_load"]["seconds"] > 0 and d["cold_over_warm"] > 0
    assert not (tmp_path / ".pursuhint_cache").exists()  # the measurement's cache is its own temporary folder
    tmp_path.chmod(0o555)  # a read-only share, as the photographs are: the loader must still write the cache
    try:
        d = natural.data_path(tmp_path)
    finally:
        tmp_path.chmod(0o755)
    assert d["cache_mb"] > 0 and d["first_load"]["images"] == 10


def test_gpu_check_dry_run_lists_its_steps_without_a_gpu(tmp_path):
    out = subprocess.run([sys.executable, "bench/gpu_check.py", "--dry-run"], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "GPU_CHECK_OUT": str(tmp_path / "gc")}, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:5]] == ["1. dependencies", "2. CUDA tests", "3. gpu benchmark",
                                                          "4. cohort benchmark", "5. confirmation sweep"]
    assert "tests/test_memory_map.py" in lines[1]
    assert lines[-1] == f"writes under {tmp_path / 'gc'} (GPU_CHECK_OUT); never bench/results.json or docs/benchmarks.md"
    assert not (tmp_path / "gc").exists()


def test_gpu_check_says_not_run_in_its_exit_status_and_writes_only_its_own_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("GPU_CHECK_OUT", str(tmp_path / "gc"))
    monkeypatch.setattr(gpu_check, "_cuda_or_exit", lambda: "fake GPU")
    monkeypatch.setattr(gpu_check, "tests", lambda: ("ok", ""))
    monkeypatch.setattr(gpu_check, "benchmark", lambda out, full: ("ok", ""))
    monkeypatch.setattr(gpu_check, "cohort_benchmark", lambda out: ("ok", ""))
    monkeypatch.setattr(gpu_check, "confirmation_sweep", lambda out: ("NOT RUN", "no photographs"))
    # a checkout's gpu-kit/ may hold the photo sample: unpacking it would set $PURSUHINT_CIFAR10_SUBSET for the session
    monkeypatch.setattr(gpu_check, "photographs", lambda: "none (faked)")
    before = (ROOT / "bench" / "results.json").read_bytes()
    assert gpu_check.main([]) == 3
    monkeypatch.setattr(gpu_check, "benchmark", lambda out, full: ("FAILED", "boom"))
    assert gpu_check.main([]) == 1
    summary = json.loads((tmp_path / "gc" / "summary.json").read_text())
    assert summary["confirmation sweep"] == {"status": "NOT RUN", "why": "no photographs"}
    assert (ROOT / "bench" / "results.json").read_bytes() == before


def test_gpu_check_names_the_install_line_of_what_is_missing(monkeypatch):
    assert gpu_check.missing({"json": "json", "no_such_module_here": "nosuch"}) == ["nosuch"]
    assert gpu_check.install_line(["ray[tune]", "optuna"], Path("/kit")) == \
        f"{sys.executable} -m pip install --no-index --find-links /kit ray[tune] optuna"
    monkeypatch.setattr(gpu_check, "NEEDED", {"torch": "torch", "no_such_module_here": "nosuch"})
    status, why = gpu_check.dependencies()
    assert status == "FAILED" and why == f"missing nosuch: {sys.executable} -m pip install nosuch"


def test_gpu_check_fits_in_eight_minutes_of_a_gpu(tmp_path, monkeypatch):
    """Every command `make gpu-check` starts runs under its step's declared timeout (the GPU kit's offline install
    and both pytest runs included), and they add up, with the reserve for what runs outside them, to at most 480 s:
    a lent H200's 8 minutes. Read from the declarations and the commands, nothing timed."""
    assert gpu_check.BUDGET_S == 480
    assert sum(gpu_check.TIMEOUTS.values()) + gpu_check.RESERVE_S <= 480 and gpu_check.RESERVE_S >= gpu_check.END_S
    calls = []

    def fake_run(cmd, timeout=None, **kwargs):
        calls.append((cmd, timeout))
        envs.append(kwargs.get("env") or {})
        return subprocess.CompletedProcess(cmd, 0)

    envs = []
    kit = tmp_path / "kit"
    kit.mkdir()
    (kit / "ray-1.0-py3-none-any.whl").write_bytes(b"")
    monkeypatch.setenv("GPU_KIT", str(kit))
    monkeypatch.setenv("GPU_CHECK_OUT", str(tmp_path / "gc"))
    real_missing = gpu_check.missing
    monkeypatch.setattr(gpu_check, "missing", lambda m: list(m.values()) if m is gpu_check.KIT else real_missing(m))
    monkeypatch.setattr(gpu_check, "_cuda_or_exit", lambda: "fake GPU")
    monkeypatch.setattr(gpu_check.subprocess, "run", fake_run)
    monkeypatch.setattr(gpu_check, "_deadline", None)
    gpu_check.main([])
    monkeypatch.undo()
    commands = [" ".join(cmd[1:]) for cmd, _ in calls]
    assert commands[0].startswith(f"-m pip install --no-index --find-links {kit.resolve()} ray[tune] optuna")
    # offline, adding only what the image lacks: allowed into a system Python that PEP 668 marks externally managed
    assert envs[0].get("PIP_BREAK_SYSTEM_PACKAGES") == "1" and "PIP_BREAK_SYSTEM_PACKAGES" not in envs[1]
    assert [c.split()[1] for c in commands[1:3]] == ["pytest", "pytest"]
    assert [c.split(" --output")[0] for c in commands[3:]] == [  # the trimmed forms
        "bench/run.py --only gpu --tiny", "bench/run.py --only cohorts --tiny",
        "bench/run.py --only selection_quality_natural --tiny"]
    timeouts = [t for _, t in calls]
    assert timeouts == [gpu_check.TIMEOUTS[k] for k in ("kit install", "CUDA tests", "device tests", "gpu benchmark",
                                                          "cohort benchmark", "confirmation sweep")]
    assert all(isinstance(t, int) and t > 0 for t in timeouts) and sum(timeouts) + gpu_check.RESERVE_S <= 480
    # what is left of the budget caps a step, and a step with none left is not started
    monkeypatch.setattr(gpu_check, "_deadline", time.perf_counter() + 30.5)
    assert gpu_check.step_timeout("gpu benchmark") in (29, 30) and gpu_check.step_timeout("device tests") <= 30
    monkeypatch.setattr(gpu_check, "_deadline", time.perf_counter() - 1)
    assert gpu_check.cohort_benchmark(tmp_path) == ("NOT RUN", "the 480 s budget is spent")


def _python312() -> str | None:
    """A working CPython 3.12 (PATH's python3.12 may be a pyenv shim that refuses to run)."""
    candidates = [shutil.which("python3.12"), *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")))]
    for exe in filter(None, candidates):
        try:
            done = subprocess.run([exe, "-c", "import sys, venv; print(sys.version_info[:2] == (3, 12))"],
                                  capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and done.stdout.strip() == "True":
            return exe
    return None


KIT_SMOKE = """
import ray, optuna, mlflow, pydantic, sqlalchemy, alembic
from ray import tune
mlflow.set_tracking_uri("sqlite:///" + {db!r})
with mlflow.start_run():
    mlflow.log_metric("acc", 0.5)
study = optuna.create_study()
study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)  # never a running one
double = ray.remote(lambda x: 2 * x)
print("kit ok", ray.__version__, ray.get(double.remote(21)), len(study.trials))
ray.shutdown()
"""


# Versions read on the lent GPU image that are older than a kit project needs: the kit must bring theirs. On
# 2026-12-04 its certifi was 2026.7.22, and mlflow-skinny's databricks-sdk needs certifi>=2026.10.19.
IMAGE_LAGS = {"certifi": "2026.7.22"}


@pytest.mark.slow
def test_the_gpu_kit_installs_offline_into_a_fresh_python_312(tmp_path):
    """What `make gpu-check` does on the lent GPU machine, on the CPU: the kit's projects (gpu_check.KIT) install
    into a fresh CPython 3.12 with no package index (`pip install --no-index --find-links gpu-kit`), every one
    of them from the kit; then Ray runs a remote task, MLflow (skinny) logs to SQLite and Optuna runs a study.
    The projects the kit leaves out because the GPU image has them (gpu_kit.ON_THE_IMAGE: numpy, requests,
    pandas, ...) are put there first from the registry, at what the kit's pinned versions need, or older where
    the lent image was seen older (IMAGE_LAGS): the kit's pure-Python wheel of that project must then install."""
    kit = gpu_check.find_kit()
    if kit is None:
        pytest.skip("no GPU kit here: run `make gpu-kit` (or set GPU_KIT to its folder)")
    python = _python312()
    if python is None:
        pytest.skip("no CPython 3.12 here (python3.12 on PATH or under ~/.pyenv/versions/3.12*/bin), the kit's Python")
    t0 = time.perf_counter()
    venv = tmp_path / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    # 1. The image's part, from the registry: what the kit's pinned projects need that the kit leaves out.
    report = tmp_path / "report.json"
    done = subprocess.run([py, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed", "--report",
                           str(report), *gpu_kit.requirements()], capture_output=True, text=True, timeout=240)
    if done.returncode != 0:
        pytest.skip(f"the package registry could not resolve the image's part: {done.stderr[-500:]}")
    resolved = {re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower(): item["metadata"]["version"]
                for item in json.loads(report.read_text())["install"]}
    # the image as lent: older than the kit needs where it was seen so (IMAGE_LAGS), else at what the pins need
    image = sorted(f"{name}=={IMAGE_LAGS.get(name, version)}" for name, version in resolved.items()
                   if name in gpu_kit.ON_THE_IMAGE)
    kit_projects = {gpu_kit.project(w.name) for w in kit.glob("*.whl")}
    assert set(resolved) - set(gpu_kit.ON_THE_IMAGE) <= kit_projects, "the kit lacks a dependency the image lacks too"
    assert all(gpu_kit.is_pure(w.name) for w in kit.glob("*.whl") if gpu_kit.project(w.name) in gpu_kit.ON_THE_IMAGE)
    done = subprocess.run([py, "-m", "pip", "install", "--quiet", *image], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.skip(f"the package registry is unreachable: {done.stderr[-500:]}")
    t_image = time.perf_counter()
    # 2. The kit, offline: the very command gpu_check runs, with this venv's Python.
    cmd = gpu_check.install_line(list(gpu_check.KIT.values()), kit, python=py).split()
    assert "--no-index" in cmd
    done = subprocess.run([*cmd, "--quiet"], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    t_kit = time.perf_counter()
    versions = subprocess.run([py, "-c", "from importlib import metadata as m; import json; print(json.dumps("
                               "{d: m.version(d) for d in ('ray', 'optuna', 'mlflow-skinny', 'pydantic', 'certifi')}))"],
                              capture_output=True, text=True, timeout=60, check=True)
    wheels = {(gpu_kit.project(w.name), w.name.split("-")[1]) for w in kit.glob("*.whl")}
    for name, version in json.loads(versions.stdout).items():
        assert (name, version) in wheels, f"{name} {version} is not the kit's"
    # 3. The stack runs.
    done = subprocess.run([py, "-c", KIT_SMOKE.format(db=str(tmp_path / "mlflow.db"))], capture_output=True,
                          text=True, timeout=180, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "kit ok" in done.stdout and " 42 3" in done.stdout, done.stdout
    print(f"fresh venv and the image's part {t_image - t0:.0f} s, the kit offline {t_kit - t_image:.0f} s, "
          f"the smoke run {time.perf_counter() - t_kit:.0f} s")


@pytest.mark.slow
def test_tiny_cohorts_bench_times_both_sides_and_finds_the_weights_equal():
    entry = cohorts.run(quick=True, tiny=True)
    assert set(entry["figures"]) == {"digits resnet56 → resnet8, 16 px", "CIFAR-shaped resnet56 → resnet20, 32 px"}
    for f in entry["figures"].values():
        assert f["exact"] is True  # every arm's final weights equal bit for bit, trained apart or together
        # timed figures, from separate measurements: only their signs are certain (tiny runs are noise-bound)
        assert f["separate_s"] > 0 and f["cohort_s"] > 0 and f["teacher_share"] > 0
        # at best the arms one after another less the teacher passes a cohort saves (all but one of those arms
        # that run it: the CE-only student does not)
        best = f["separate_s"] - (f["teacher_arms"] - 1) * f["teacher_s"]
        assert f["bound"] == pytest.approx(f["separate_s"] / best) and f["speedup"] == pytest.approx(
            f["separate_s"] / f["cohort_s"])
    assert [(f["arms"], f["teacher_arms"]) for f in entry["figures"].values()] == [(4, 3), (5, 4)]
    equal = cohorts.bound_figures(10.0, 5.0, 1.0, 4, 4)  # every arm runs the teacher: k(t + s) / (t + k·s)
    assert equal["bound"] == pytest.approx(4 * (1.0 + 1.5) / (1.0 + 4 * 1.5)) and equal["student_s"] == 1.5
    assert entry["command"] == "python bench/run.py --quick --tiny --only cohorts"


@pytest.mark.slow  # pip in a process of its own (3 s): not in `make test-fast`
def test_the_gpu_kit_strips_a_wheel_into_one_pip_installs(tmp_path):
    """The kit's Ray is re-zipped without the parts a sweep never imports; its RECORD matches what stays, so pip
    installs it; wheels of projects the GPU image has are left out."""
    wheel = tmp_path / "toy-1.0-py3-none-any.whl"
    files = {"toy/__init__.py": b"VALUE = 42\n", "toy/jars/big.jar": b"x" * 5000, "toy/keep.txt": b"kept\n",
             "toy-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: toy\nVersion: 1.0\n",
             "toy-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    with zipfile.ZipFile(wheel, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("toy-1.0.dist-info/RECORD", "".join(f"{n},,\n" for n in files) + "toy-1.0.dist-info/RECORD,,\n")
    before, after = gpu_kit.strip_wheel(wheel, ("toy/jars/",))
    assert after < before
    with zipfile.ZipFile(wheel) as z:
        assert "toy/jars/big.jar" not in z.namelist() and "toy/keep.txt" in z.namelist()
        record = z.read("toy-1.0.dist-info/RECORD").decode().splitlines()
    digest = base64.urlsafe_b64encode(hashlib.sha256(b"VALUE = 42\n").digest()).rstrip(b"=").decode()
    assert f"toy/__init__.py,sha256={digest},11" in record and not any("jars" in line for line in record)
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet",
                           "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (target / "toy" / "keep.txt").exists() and not (target / "toy" / "jars").exists()
    for name in ("numpy-2.4.6-cp312-cp312-manylinux_2_28_x86_64.whl", "PyYAML-6.0-cp312-cp312-manylinux_2_17_x86_64.whl",
                 "optuna-5.1.0-py3-none-any.whl", "certifi-2026.10.19.post1-py3-none-any.whl"):
        (tmp_path / name).write_bytes(b"")
    # the image's compiled projects go; its pure-Python ones stay, for an image whose version is too old
    assert sorted(gpu_kit.keep_only_missing(tmp_path)) == ["numpy", "pyyaml"]
    assert sorted(p.name for p in tmp_path.glob("*.whl")) == ["certifi-2026.10.19.post1-py3-none-any.whl",
                                                             "optuna-5.1.0-py3-none-any.whl",
                                                             "toy-1.0-py3-none-any.whl"]
    assert gpu_kit.project("typing_extensions-4.16.0-py3-none-any.whl") == "typing-extensions"


def test_a_run_names_the_sizes_it_runs_at():
    """`[run ] NAME (tiny)` only where the benchmark has a tiny form (the GPU check's log said `(full)` for its
    `--tiny` runs); one without runs, and is named, at its quick or full sizes."""
    with_tiny = types.SimpleNamespace(run=lambda quick, tiny=False: None)
    without = types.SimpleNamespace(run=lambda quick: None)
    assert [bench_run.variant(with_tiny, q, t) for q, t in ((False, True), (True, True), (True, False), (False, False))
            ] == ["tiny", "tiny", "quick", "full"]
    assert [bench_run.variant(without, q, True) for q in (True, False)] == ["quick", "full"]


def test_the_gpu_kit_packs_a_sample_of_the_photographs_that_the_check_unpacks(tmp_path, monkeypatch):
    """The lent machine sees no shared data folder: `make gpu-kit` packs the first photographs of each class (by
    name) and the check unpacks them into an ImageFolder that $PURSUHINT_CIFAR10_SUBSET then names."""
    root = tmp_path / "photos"
    for split, n in (("train", 4), ("test", 3)):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / split / cls / f"{i:04d}.jpg")
    kit = tmp_path / "kit"
    kit.mkdir()
    (kit / "ray-1.0-py3-none-any.whl").write_bytes(b"")
    assert gpu_kit.pack_photos(root, kit / gpu_kit.PHOTOS, {"train": 3, "test": 1}) == 8
    monkeypatch.setenv("GPU_KIT", str(kit))
    monkeypatch.setattr("bench.common.cifar10_subset", lambda: None)  # as on the lent machine
    monkeypatch.setenv("PURSUHINT_CIFAR10_SUBSET", "")
    said = gpu_check.photographs()
    folder = Path(os.environ["PURSUHINT_CIFAR10_SUBSET"])
    assert said == f"the GPU kit's sample of the photographs: 8 unpacked into {folder}"
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*.jpg")) == [
        "test/cat/0000.jpg", "test/dog/0000.jpg", *(f"train/{c}/{i:04d}.jpg" for c in ("cat", "dog") for i in range(3))]
    assert (folder / "train/dog/0002.jpg").read_bytes() == (root / "train/dog/0002.jpg").read_bytes()
    monkeypatch.setenv("PURSUHINT_CIFAR10_SUBSET", str(tmp_path / "typo"))  # a wrong path: said, not replaced
    assert gpu_check.photographs() == (f"$PURSUHINT_CIFAR10_SUBSET names {tmp_path / 'typo'}, which has no train/ "
                                       "folder: random images or NOT RUN")
    assert os.environ["PURSUHINT_CIFAR10_SUBSET"] == str(tmp_path / "typo")
    monkeypatch.setenv("PURSUHINT_CIFAR10_SUBSET", "")
    (kit / gpu_kit.PHOTOS).unlink()  # no sample: said so, nothing set
    assert gpu_check.photographs().startswith("no photographs ($PURSUHINT_CIFAR10_SUBSET, or cifar10-sample.tgz")
    shutil.rmtree(folder)


def test_natural_sweeps_train_their_trials_on_the_gpu_where_there_is_one(monkeypatch, tmp_path):
    """On the lent H200 the confirmation sweep's Tune trials asked for no GPU and trained on its CPU cores; where
    CUDA is, its two concurrent trials now share the GPU (half each), and on CPUs they ask for none."""
    s = natural.natural_settings(False, True)
    build = lambda: natural.student_config(tmp_path, "teacher.pt", "at", 0.0, "r2_cca", s)  # noqa: E731
    assert (build().search.resources_per_trial.cpu, build().search.resources_per_trial.gpu) == (1, 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = build()
    assert (cfg.search.resources_per_trial.gpu, cfg.search.max_concurrent_trials) == (0.5, 2)


def test_the_gpu_benchmark_says_each_phase_and_assembles_its_entry(monkeypatch, capsys):
    """Its CUDA path, with every measurement faked on the CPU: each phase is announced before it runs (on a lent
    H200 its log was silent for the 110 s a cold run took, then cut), and the entry's tables come together."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    monkeypatch.setattr(gpu, "pick_device", lambda: torch.device("cpu"))
    monkeypatch.setattr(gpu, "free_driver_gpu", lambda: None)
    ds = types.SimpleNamespace(train_x=torch.zeros(4, 3, 32, 32, dtype=torch.uint8))
    monkeypatch.setattr(gpu, "natural_dataset", lambda n, subset: (ds, {"data": f"{n} fake photographs"}))
    monkeypatch.setattr(gpu, "epoch_time", lambda device, d, budget_gb=None: {
        "images": 4, "placement": "host" if budget_gb == 0 else "device", "epoch_s": [2.0, 1.0],
        "timed_epoch_s": 1.0, "images_per_s": 4.0})
    monkeypatch.setattr(gpu, "step_sync_measure", lambda device, n, repeats: {
        "device_side_steps_per_s": 50.0, "host_reads_steps_per_s": 50.0, "ratio": 1.0})
    monkeypatch.setattr(gpu, "selection_time", lambda device, n, x: {
        "probe_images": n, "candidates": 54, "representations_s": 0.2, "clustering_s": 0.01, "total_r2_cca_s": 0.4,
        "similarity_s": {"r2_cca": 0.19, "cka_linear": 0.1, "cka_rbf": 1.0}})
    monkeypatch.setattr(gpu, "ray_stack_installed", lambda: False)
    monkeypatch.setattr(gpu, "concurrent_processes", lambda n, samples, epochs: {
        "runner": "processes (Ray not installed)", "concurrent": n, "gpu_per_trial": 1 / n, "trials": samples,
        "trained": samples, "tuner_fit_s": 10.0 / n, "trials_per_s": samples * n / 10.0, "epochs_per_s": 1.0})
    entry = gpu.run(quick=False, tiny=True)
    said = [line.split("] ", 1)[1] for line in capsys.readouterr().out.splitlines() if line.startswith("[gpu +")]
    assert said == ["the data: 5,000 photographs (decoded once, then cached)", "epoch time, images on the device",
                    "epoch time, images on the host", "step syncs", "ResNet-110 selection over 5,000 probe images",
                    "4 trials, 1 at a time (processes sharing the GPU)", "4 trials, 4 at a time (processes sharing the GPU)"]
    assert entry["device_name"] == "Fake GPU" and entry["ratio"] == 4.0 and entry["figures"]["best_concurrency"] == 4
    assert [t["title"].split(" (")[0].split(",")[0] for t in entry["tables"]] == [
        "resnet56 → resnet20", "Step syncs", "ResNet-110 hint selection", "Concurrent fractional-GPU trials"]
    json.dumps(entry, allow_nan=False)
