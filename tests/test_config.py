"""Configuration: validation, one-sentence errors, search-space leaves and their defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from pursuhint.config import Config, config_from_text, load_config
from pursuhint.config.grammar import default_for, describe_defaults
from pursuhint.preflight import check_names
from pursuhint.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_the_benchmark_recipe():
    cfg = config_from_text("name: x")
    assert cfg.train.lr == 0.05 and cfg.train.momentum == 0.9 and cfg.train.weight_decay == 5e-4
    assert cfg.train.epochs == 240 and cfg.train.batch_size == 64
    assert cfg.train.resolved_milestones() == [150, 180, 210]
    assert cfg.selection.similarity == "r2_cca" and cfg.selection.algorithm == "pursuhint"
    assert cfg.selection.center == "mean_index" and cfg.selection.n_hints is None
    assert cfg.distill.temperature == 4.0
    assert cfg.search.baselines == ["default", "kd_only"]


def test_milestones_scale_with_epochs():
    cfg = config_from_text("train: {epochs: 8}")
    assert cfg.train.resolved_milestones() == [5, 6, 7]


def test_embedded_config_loads_and_names_exist():
    cfg = load_config(ROOT / "search_spaces" / "digits_quick.yaml")
    check_names(cfg)
    assert cfg.name == "digits_quick"
    assert set(cfg.space) >= {"selection.similarity", "selection.n_hints", "distill.method"}
    # Non-sweep commands use the paper's defaults for searched selection keys.
    assert cfg.selection.similarity == "r2_cca"
    assert cfg.selection.algorithm == "pursuhint"
    assert cfg.selection.center == "mean_index"
    assert cfg.selection.n_hints is None
    assert cfg.distill.method == "at"


def test_missing_file():
    with pytest.raises(ConfigError, match=r"config file 'nope.yaml' does not exist"):
        load_config("nope.yaml")


def test_invalid_yaml_names_the_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ndata:\n  dataset: [digits\n  image_size: 16\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML at line \d+"):
        load_config(p)


def test_top_level_must_be_mapping():
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        config_from_text("- a\n- b\n")


def test_unknown_key_suggests_nearest():
    with pytest.raises(ConfigError) as exc:
        config_from_text("selection: {simlarity: r2_cca}")
    msg = str(exc.value)
    assert "unknown key 'selection.simlarity'" in msg
    assert "did you mean 'selection.similarity'" in msg
    assert "\n" not in msg


def test_unknown_top_level_key():
    with pytest.raises(ConfigError, match=r"unknown key 'trian' \(did you mean 'train'\?\)"):
        config_from_text("trian: {epochs: 3}")


def test_bad_value_names_key_and_value():
    with pytest.raises(ConfigError, match=r"selection.n_hints = 0 is invalid"):
        config_from_text("selection: {n_hints: 0}")
    with pytest.raises(ConfigError, match=r"search.num_samples = 0 is invalid"):
        config_from_text("search: {num_samples: 0}")


@pytest.mark.parametrize("spec,fragment", [
    ("{loguniform: [0, 0.1]}", "loguniform bounds must be > 0"),
    ("{loguniform: [-1, 0.1]}", "loguniform bounds must be > 0"),
    ("{uniform: [0.2, 0.1]}", "must be smaller than high"),
    ("{choice: []}", "choice needs a non-empty list"),
    ("{quniform: [0.01, 0.1, 0]}", "step q must be > 0"),
    ("{uniform: [0.1]}", "needs a list of 2 numbers"),
])
def test_malformed_search_specs(spec, fragment):
    with pytest.raises(ConfigError, match="invalid search space") as exc:
        config_from_text(f"train: {{lr: {spec}}}")
    assert fragment in str(exc.value)


def test_randint_low_above_high():
    with pytest.raises(ConfigError, match="low 5 is greater than high 2"):
        config_from_text("selection: {n_hints: {randint: [5, 2]}}")


def test_every_choice_is_validated():
    # 0 hints can never be valid, so a space that could sample it is refused up front.
    with pytest.raises(ConfigError, match=r"selection.n_hints = 0 is invalid \(a value the search space"):
        config_from_text("selection: {n_hints: {choice: [3, 0]}}")


def test_unknown_names_in_choices_are_refused():
    cfg = config_from_text("selection: {similarity: {choice: [r2_cca, cka]}}")
    with pytest.raises(ConfigError, match=r"selection.similarity: unknown value 'cka'.*valid: .*cka_linear"):
        check_names(cfg)


@pytest.mark.parametrize("yaml_text,key", [
    ("data: {dataset: imagenet21k}", "data.dataset"),
    ("teacher: {arch: resnet57}", "teacher.arch"),
    ("student: {arch: {choice: [resnet8, lenet]}}", "student.arch"),
    ("selection: {algorithm: dbscan}", "selection.algorithm"),
    ("selection: {center: middle}", "selection.center"),
    ("distill: {method: fitnett}", "distill.method"),
])
def test_unknown_registry_names(yaml_text, key):
    cfg = config_from_text(yaml_text)
    with pytest.raises(ConfigError, match=rf"{key}: unknown value .*; valid: "):
        check_names(cfg)


def test_defaults_for_specs():
    assert default_for("selection.similarity", {"choice": ["cka_linear", "r2_cca"]}) == "r2_cca"
    assert default_for("selection.similarity", {"choice": ["cka_linear", "cka_rbf"]}) == "cka_linear"
    assert default_for("selection.n_hints", {"randint": [2, 4]}) is None
    assert default_for("distill.method", {"choice": ["fitnet", "at"]}) == "fitnet"
    assert default_for("train.lr", {"loguniform": [0.01, 1.0]}) == pytest.approx(0.1)
    assert default_for("distill.hint_weight", {"uniform": [0.0, 2.0]}) == 1.0
    assert default_for("x.y", {"randint": [3, 9]}) == 3


def test_describe_defaults_says_what_was_used():
    cfg = config_from_text("selection: {n_hints: {randint: [2, 4]}}\ndistill: {method: {choice: [fitnet, at]}}")
    lines = describe_defaults(cfg)
    assert any("selection.n_hints is searched" in l and "student's number of stages" in l for l in lines)
    assert any("distill.method is searched" in l and "'fitnet'" in l for l in lines)


def test_with_values_and_hash():
    cfg = config_from_text("selection: {n_hints: {randint: [2, 4]}}")
    trial = cfg.with_values({"selection.n_hints": 3, "train.lr": 0.1})
    assert trial.selection.n_hints == 3 and trial.train.lr == 0.1
    assert cfg.section_hash("teacher") == trial.section_hash("teacher")
    assert cfg.section_hash("train") != trial.section_hash("train")
    with pytest.raises(ConfigError):
        cfg.with_values({"selection.n_hints": -1})


def test_to_yaml_round_trip_keeps_space():
    cfg = config_from_text("selection: {similarity: {choice: [r2_cca, cka_linear]}}")
    again = config_from_text(cfg.to_yaml())
    assert again.space == cfg.space
    assert isinstance(again, Config)


def test_yaml_python_tags_are_refused(tmp_path):
    """safe_load: a YAML tag that would construct a Python object (and run code) is refused, not run."""
    from pursuhint.errors import PursuhintError
    from pursuhint.hints.hintset import HintSet

    marker = tmp_path / "ran"
    payload = f"!!python/object/apply:os.system ['touch {marker}']"
    with pytest.raises(ConfigError, match="not valid YAML"):
        config_from_text(f"name: {payload}\n")
    bad = tmp_path / "hints.yaml"
    bad.write_text(f"schema_version: {payload}\n")
    with pytest.raises(PursuhintError):
        HintSet.load(bad)
    assert not marker.exists()
