"""bench/: the runner writes well-formed entries and keeps others; the naive baseline is a faithful one.

Figures are not asserted (they are measured in bench/, not tested); the smoke test runs at --tiny sizes.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import run as bench_run  # noqa: E402
from bench.selection_speed import naive_cka, naive_kmeans, naive_pair_list  # noqa: E402
from pursuhint.hints import cluster, similarity_matrix  # noqa: E402
from pursuhint.hints import similarity as sim  # noqa: E402


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
    from bench.asha_savings import epochs_trained

    from pursuhint.search.results import TrialRow

    rows = [TrialRow("a", epochs=8, status="completed"), TrialRow("b", epochs=2, status="stopped"),
            TrialRow("c", epochs=8, status="completed", duplicate_of="a"), TrialRow("d", epochs=0, status="invalid"),
            TrialRow("e", epochs=4, status="diverged")]
    assert epochs_trained(rows) == 8 + 2 + 4


def test_search_waste_counts_collapsed_searched_trials_only(tmp_path):
    from bench.search_waste import collapsed, sweep_config, demo_raw, trial_hours

    from pursuhint.search.results import TrialRow

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


def test_selection_quality_tables_come_from_the_sweeps_confirmation_tables():
    from bench.selection_quality import tables
    from pursuhint.search.confirm import SEARCHED, Candidate, ConfirmedResult, confirmation_table

    cand = Candidate("t1", {}, 90.0, "at", 3, "layer1.2,layer2.2,layer3.2", (100.0, 1.0, 0.0, 1.0), 0.05)
    results = [ConfirmedResult(SEARCHED, "t1", "at", 3, s, 90.0 + s, 0.0, cand.hint_layers) for s in (1, 2, 3)]
    results += [ConfirmedResult("default", "default", "at", 3, s, 88.0 + s * 0.9, 0.0) for s in (1, 2, 3)]
    table = confirmation_table([cand], results, 3)
    out = tables({"paper_mode": {"at r2_cca": {"wall_s": 12.5, "trials": 1, "confirmation": table}},
                  "best": "at r2_cca", "searched": None, "probe_sensitivity": []})
    assert len(out) == 1 and "at r2_cca: confirmation stage, 3 seeds" in out[0]["title"]
    row, base = out[0]["rows"]
    assert row[0] == "at K=3 [layer1.2,layer2.2,layer3.2]" and row[1] == "92.00 ± 1.00"
    assert row[2].startswith("+2.20 [") and row[2].endswith("better than default hints")
    assert base[0] == "default hints (at)" and base[2:] == ["—", "—", "—", "—"]


def test_gpu_benchmark_without_cuda_writes_a_skipped_entry(monkeypatch):
    from bench import gpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    entry = gpu.run(quick=True)
    assert entry["skipped"] is True and entry["ratio"] is None and entry["figures"] == {}
    assert "no GPU was lent" in entry["notes"][0]
    assert entry["command"] == "python bench/run.py --quick --only gpu"
    json.dumps(entry, allow_nan=False)


def test_sweep_benchmarks_workspace_points_runs_at_the_cache_and_cleans_up(tmp_path, monkeypatch):
    import os

    from bench.sweep_overhead import CACHE_ENV, sweep_storage, workspace

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    before = os.environ.get("PURSUHINT_RUNS")
    with workspace() as folder:
        assert os.environ["PURSUHINT_RUNS"] == str(tmp_path / "cache")
        kw = sweep_storage(folder / "s")
        assert (folder / "s").is_dir() and kw["tracking_uri"] == f"sqlite:///{folder / 's' / 'mlflow.db'}"
        assert not str(folder).startswith(str(ROOT))  # never inside the checkout
    assert os.environ.get("PURSUHINT_RUNS") == before and not folder.exists()
