"""The command line: bad input is one sentence, exit 2, no traceback, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pursuhint.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def assert_refused(code, err, *fragments):
    assert code == 2
    assert err.startswith("pursuhint: error: ")
    assert err.count("\n") == 1, err  # one sentence on one line
    assert "Traceback" not in err
    for f in fragments:
        assert f in err, err


def test_missing_config(capsys, tmp_path):
    code, _, err = run(["train-teacher", str(tmp_path / "nope.yaml")], capsys)
    assert_refused(code, err, "nope.yaml", "does not exist")


def test_malformed_yaml(capsys, tmp_path):
    code, _, err = run(["train-teacher", write(tmp_path, "name: [x\n")], capsys)
    assert_refused(code, err, "is not valid YAML at line")


def test_unknown_key(capsys, tmp_path):
    code, _, err = run(["select", write(tmp_path, "teacher: {arch: resnet20, chekpoint: a.pt}")], capsys)
    assert_refused(code, err, "unknown key 'teacher.chekpoint'", "did you mean 'teacher.checkpoint'")


@pytest.mark.parametrize("text,fragments", [
    ("data: {dataset: mnist}", ["data.dataset: unknown value 'mnist'", "cifar100", "digits"]),
    ("teacher: {arch: resnet111}", ["teacher.arch: unknown value 'resnet111'", "resnet110"]),
])
def test_unknown_names(capsys, tmp_path, text, fragments):
    code, _, err = run(["train-teacher", write(tmp_path, text)], capsys)
    assert_refused(code, err, *fragments)


def test_missing_data_folder_writes_nothing(capsys, tmp_path, isolated_runs):
    before = set(isolated_runs.rglob("*"))
    missing = tmp_path / "no_cifar_here"
    code, _, err = run(["train-teacher", write(tmp_path, f"data: {{dataset: cifar10, root: {missing}}}")], capsys)
    assert_refused(code, err, str(missing))
    assert set(isolated_runs.rglob("*")) == before


@pytest.mark.parametrize("text,fragments", [
    ("data: {dataset: digits, image_size: 8, train_samples: 40}", ["selection split of 'digits' (4 images) lacks class",
                                                                   "raise data.val_fraction (0.1)"]),
    ("data: {dataset: digits, val_fraction: 0.6}", ["data.val_fraction = 0.6 is invalid", "strictly between 0 and 0.5"]),
    ("search: {confirm: {top_k: 2, seeds: 1}}", ["cannot give a confidence interval"]),
    ("search: {confirm: {top_k: -1}}", ["search.confirm.top_k = -1 is invalid"]),
    ("search: {baselines: [default, sorted]}", ["search.baselines.1 = 'sorted' is invalid"]),
    ("search: {confirm: {seeds: {min: 1, max: 4}}}", ["seeds.min: 1 cannot give a confidence interval"]),
    ("search: {confirm: {seeds: {min: 5, max: 4}}}", ["seeds.max: 4 is below seeds.min: 5"]),
    ("search: {confirm: {seeds: {min: 3, maximum: 9}}}", ["unknown key 'maximum' under seeds", "min, max"]),
    ("search: {confirm: {margin: 0}}", ["search.confirm.margin = 0 is invalid", "margin must be > 0"]),
    ("search: {confirm: {budget_hours: -1}}", ["search.confirm.budget_hours = -1 is invalid", "> 0 trial-hours"]),
    ("search: {confirm: {cohort: 0}}", ["search.confirm.cohort = 0 is invalid", "a cohort trains at least 1 student"]),
    ("search: {confirm: {cohort: some}}", ["search.confirm.cohort = 'some' is invalid", "expected auto, off or a number"]),
])
def test_bad_splits_and_confirmation_settings_are_refused_before_any_work(capsys, tmp_path, isolated_runs, text,
                                                                           fragments):
    before = set(isolated_runs.rglob("*"))
    code, _, err = run(["sweep", write(tmp_path, text), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
                        "--storage-path", str(tmp_path / "ray")], capsys)
    assert_refused(code, err, *fragments)
    assert set(isolated_runs.rglob("*")) == before
    assert not (tmp_path / "m.db").exists() and not (tmp_path / "ray").exists()


def test_checkpoint_that_is_not_a_checkpoint(capsys, tmp_path):
    bogus = tmp_path / "teacher.pth"
    bogus.write_text("definitely not a checkpoint")
    cfg = write(tmp_path, f"data: {{dataset: digits, image_size: 8}}\nteacher: {{arch: resnet8, checkpoint: {bogus}}}")
    code, _, err = run(["select", cfg], capsys)
    assert_refused(code, err, str(bogus))


def test_checkpoint_for_another_architecture(capsys, tmp_path):
    from pursuhint.models import create_model, save_checkpoint

    ckpt = tmp_path / "resnet20.pth"
    save_checkpoint(ckpt, create_model("resnet20", 10, in_channels=1), {})
    cfg = write(tmp_path, f"data: {{dataset: digits, image_size: 8}}\nteacher: {{arch: resnet8, checkpoint: {ckpt}}}")
    code, _, err = run(["select", cfg], capsys)
    assert_refused(code, err, "resnet8")


def test_missing_checkpoint_file(capsys, tmp_path):
    cfg = write(tmp_path, "data: {dataset: digits, image_size: 8}\nteacher: {arch: resnet8, checkpoint: /no/such.pth}")
    code, _, err = run(["select", cfg], capsys)
    assert_refused(code, err, "/no/such.pth", "does not exist")


def test_console_script_prints_no_traceback(tmp_path):
    exe = Path(sys.executable).parent / "pursuhint"
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "pursuhint.cli"]
    proc = subprocess.run(argv + ["train-teacher", write(tmp_path, "seed: [1")], capture_output=True, text=True,
                          env={**os.environ, "PURSUHINT_RUNS": str(tmp_path / "runs")})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "not valid YAML" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_train_teacher_cli_reports_cached_teacher(capsys, trained_teacher, digits_config_path, tmp_path):
    out = tmp_path / "copy" / "teacher.pt"
    code, stdout, _ = run(["train-teacher", str(digits_config_path), "-q", "-o", str(out)], capsys)
    assert code == 0
    assert "already trained" in stdout and "val_acc" in stdout
    assert torch.load(out, weights_only=True)["model"].keys()
    assert out.with_suffix(".json").exists()


def test_select_prints_table_saves_hint_set_and_atlas(capsys, trained_teacher, digits_config_path, tmp_path):
    from PIL import Image

    from pursuhint.hints import HintSet

    out, png = tmp_path / "hints.json", tmp_path / "atlas.png"
    code, stdout, err = run(["select", str(digits_config_path), "-q", "-o", str(out), "--plot", str(png),
                             "--n-hints", "3"], capsys)
    assert code == 0, err
    lines = stdout.splitlines()
    header = next(i for i, l in enumerate(lines) if l.startswith("#"))
    table = lines[header + 1: header + 28]
    assert [l.split()[1] for l in table] == [f"layer{s}.{b}" for s in (1, 2, 3) for b in range(9)]
    assert sum(l.rstrip().endswith("o") for l in table) == 3  # default hints: stage ends 9, 18, 27
    hs = HintSet.load(out)
    assert hs.n_hints == 3 and len(hs.indices) == 3 and hs.indices == sorted(hs.indices)
    assert hs.similarity == "r2_cca" and hs.algorithm == "pursuhint" and hs.paper_mode
    assert hs.teacher_arch == "resnet56" and len(hs.candidates) == 27
    assert sum("*" in l.split()[6:7] for l in table if len(l.split()) > 6) == 3
    assert f"positions {', '.join(str(i + 1) for i in hs.indices)}" in stdout
    assert "positions 9, 18, 27" in stdout
    assert Image.open(png).size == (840, 960)


def test_select_reuses_cached_matrix(capsys, trained_teacher, digits_config_path, tmp_path, monkeypatch):
    run(["select", str(digits_config_path), "-q", "-o", str(tmp_path / "a.json"), "--similarity", "cka_linear"],
        capsys)

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr("pursuhint.hints.pipeline.layer_representations", boom)
    monkeypatch.setattr("pursuhint.hints.pipeline.similarity_matrix", boom)
    code, _, err = run(["select", str(digits_config_path), "-q", "-o", str(tmp_path / "b.json"),
                        "--similarity", "cka_linear", "--algorithm", "kmedoids", "--center", "medoid"], capsys)
    assert code == 0, err
    from pursuhint.hints import HintSet

    assert HintSet.load(tmp_path / "b.json").algorithm == "kmedoids"
    assert not HintSet.load(tmp_path / "b.json").paper_mode


def test_select_refuses_too_many_hints(capsys, trained_teacher, digits_config_path):
    code, _, err = run(["select", str(digits_config_path), "-q", "--n-hints", "28"], capsys)
    assert_refused(code, err, "28", "27")


def test_distill_with_default_hints_writes_student_and_result(capsys, trained_teacher, digits_config_path, tmp_path):
    import json

    out = tmp_path / "student"
    code, stdout, err = run(["distill", str(digits_config_path), "-q", "--hints", "default", "--epochs", "1",
                             "-o", str(out)], capsys)
    assert code == 0, err
    res = json.loads((out / "result.json").read_text())
    assert res["method"] == "at" and res["status"] == "completed" and res["epochs"] == 1
    assert [p["teacher"] for p in res["hint_pairs"]] == ["layer1.8", "layer2.8", "layer3.8"]
    assert [p["student"] for p in res["hint_pairs"]] == ["layer1.0", "layer2.0", "layer3.0"]
    assert 0 <= res["final_val_acc"] <= 100 and res["seconds"] > 0
    # hint_weight: auto (the default) — the calibrated β is what trained, and the result says how it was chosen
    assert res["weights"]["hint"] == res["calibration"]["weight"] > 0 and res["calibration"]["ratio"] == 1.0
    assert "layer1.8→layer1.0" in stdout
    assert torch.load(out / "student.pt", weights_only=True)["meta"]["student_arch"] == "resnet8"
    assert not (out / "student_state.pt").exists()
    # Running it again reuses the finished result instead of training twice.
    code, stdout, _ = run(["distill", str(digits_config_path), "-q", "--hints", "default", "--epochs", "1",
                           "-o", str(out)], capsys)
    assert code == 0 and "already trained" in stdout


def test_distill_none_is_kd_only(capsys, trained_teacher, digits_config_path, tmp_path):
    import json

    out = tmp_path / "kd"
    code, _, err = run(["distill", str(digits_config_path), "-q", "--hints", "none", "--epochs", "1",
                        "-o", str(out)], capsys)
    assert code == 0, err
    res = json.loads((out / "result.json").read_text())
    assert res["method"] == "kd_only" and res["hint_pairs"] == []
    assert res["weights"]["kd"] == 0.9 and res["weights"]["ce"] == 0.1


def test_distill_refuses_bad_hint_files(capsys, trained_teacher, digits_config_path, tmp_path):
    from pursuhint.hints import HintSet

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = run(["distill", str(digits_config_path), "-q", "--hints", str(bad)], capsys)
    assert_refused(code, err, str(bad))
    other = HintSet(layers=["layer1.8"], indices=[8], n_hints=1, candidates=[f"layer1.{i}" for i in range(9)],
                    algorithm="default", center=None, teacher_arch="resnet56", teacher_sha256="a" * 64)
    other.save(tmp_path / "other.json")
    code, _, err = run(["distill", str(digits_config_path), "-q", "--hints", str(tmp_path / "other.json")], capsys)
    assert_refused(code, err, "hint set was made for teacher resnet56")


def test_select_on_the_embedded_config(capsys, trained_teacher, tmp_path):
    from pursuhint.hints import HintSet
    from pursuhint.train.teacher import teacher_cache_dir
    from pursuhint.config import load_config

    embedded = ROOT / "search_spaces" / "digits_quick.yaml"
    assert teacher_cache_dir(load_config(embedded)) == trained_teacher[1].parent  # the shared teacher
    out, png = tmp_path / "h.json", tmp_path / "a.png"
    code, stdout, err = run(["select", str(embedded), "-q", "-o", str(out), "--plot", str(png)], capsys)
    assert code == 0, err
    assert "selection.similarity is searched in this config; using 'r2_cca'" in err
    hs = HintSet.load(out)
    assert hs.paper_mode and hs.n_hints == 3 and hs.similarity == "r2_cca"  # K = resnet8's 3 stages
    assert png.stat().st_size > 10_000


def test_select_may_pick_more_hints_than_the_student_has_stages(capsys, trained_teacher, digits_config_path,
                                                                  tmp_path):
    from pursuhint.hints import HintSet

    code, _, err = run(["select", str(digits_config_path), "-q", "--n-hints", "5", "-o", str(tmp_path / "h.json"),
                        "--algorithm", "kmedoids", "--center", "medoid"], capsys)
    assert code == 0, err
    assert HintSet.load(tmp_path / "h.json").n_hints == 5
    code, _, err = run(["distill", str(digits_config_path), "-q", "--hints", str(tmp_path / "h.json")], capsys)
    assert code == 2 and "5 teacher hints cannot be paired" in err


UNTRAINABLE = ("student: {arch: resnet8}\nselection: {n_hints: {choice: [2]}}\ndistill: {mapping: stage_ends}\n"
               "search: {num_samples: 2}")


def test_a_space_with_nothing_trainable_is_refused_before_any_work(capsys, tmp_path, isolated_runs):
    before = set(isolated_runs.rglob("*"))
    code, _, err = run(["sweep", write(tmp_path, UNTRAINABLE), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
                        "--storage-path", str(tmp_path / "ray")], capsys)
    assert_refused(code, err, "the search space has nothing that can be trained",
                   "selection.n_hints 2 with distill.mapping stage_ends", "student resnet8, which has 3",
                   "use n_hints 3 (or null), or distill.mapping: auto")
    assert set(isolated_runs.rglob("*")) == before and not (tmp_path / "m.db").exists()
    # a config without a space is checked the same way (the sentence says "config")
    code, _, err = run(["sweep", write(tmp_path, "student: {arch: resnet8}\nselection: {n_hints: 5}"),
                        "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"], capsys)
    assert_refused(code, err, "the config has nothing that can be trained",
                   "selection.n_hints 5 exceeds the student resnet8's 3 candidate layers", "at most 3")


def test_a_partly_untrainable_space_starts_and_says_which_part_ends_invalid(capsys, tmp_path):
    text = UNTRAINABLE.replace("choice: [2]", "randint: [2, 4]")
    # an unreachable MLflow stops the sweep right after the checks, so the test trains nothing
    code, _, err = run(["sweep", write(tmp_path, text), "--tracking-uri", "http://127.0.0.1:9"], capsys)
    notes = [line for line in err.splitlines() if "cannot be trained" in line]
    assert len(notes) == 1, err
    assert ("part of the search space cannot be trained, so its trials will end invalid: selection.n_hints 2 with "
            "distill.mapping stage_ends") in notes[0]
    assert "selection.n_hints 4 exceeds the student resnet8's 3 candidate layers" in notes[0]
    assert "n_hints 3 " not in notes[0]  # the trainable part is not listed
    assert code == 2 and "127.0.0.1:9" in err  # it went on to the sweep itself
