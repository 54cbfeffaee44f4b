"""HintSet: selection from a similarity matrix, collisions, JSON/YAML round trips, refusals, default hints, the recipe."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from pursuhint.errors import HintSetError, PursuhintError
from pursuhint.hints.hintset import SCHEMA_VERSION, HintSet, default_hints, select_hints
from pursuhint.hints.layers import CandidateLayer
from pursuhint.hints.similarity import SimilarityMatrix, similarity_matrix
from pursuhint.models.checkpoint import weights_sha256


def blocks(sizes: list[int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(len(sizes)), sizes)
    s = np.where(truth[:, None] == truth[None, :], 0.9, 0.1) + rng.uniform(-0.05, 0.05, (len(truth),) * 2)
    s = (s + s.T) / 2
    np.fill_diagonal(s, 1.0)
    return s


NAMES = [f"layer{1 + i // 4}.{i % 4}" for i in range(12)]
COLLIDING = np.array([[1, 1, 0.8, 0.1], [1, 1, 0.8, 0.1], [0.8, 0.8, 1, 0.2], [0.1, 0.1, 0.2, 1.0]])


def paper_hint_set() -> HintSet:
    m = SimilarityMatrix(blocks([4, 5, 3]), "cka_linear", NAMES,
                         {"n_samples": 1000, "teacher_arch": "resnet56", "teacher_sha256": "ab" * 32})
    return select_hints(m, 3)


def test_select_hints_from_a_similarity_matrix():
    hs = paper_hint_set()
    assert hs.indices == [1, 6, 10]
    assert hs.layers == ["layer1.1", "layer2.2", "layer3.2"]
    assert hs.positions_1based() == [2, 7, 11]
    assert hs.membership == [0] * 4 + [1] * 5 + [2] * 3
    assert hs.candidates == NAMES and hs.n_hints == 3
    assert (hs.similarity, hs.algorithm, hs.center, hs.seed) == ("cka_linear", "pursuhint", "mean_index", 0)
    assert (hs.teacher_arch, hs.teacher_sha256, hs.probe_size) == ("resnet56", "ab" * 32, 1000)
    assert hs.paper_mode is True and hs.warnings == [] and hs.granularity == "block"


@pytest.mark.parametrize(
    "metric, algorithm, center, paper",
    [
        ("r2_cca", "pursuhint", "mean_index", True),
        ("cka_rbf", "pursuhint", "mean_index", True),
        ("cka_linear_debiased", "pursuhint", "mean_index", False),
        ("cka_linear", "pursuhint", "medoid", False),
        ("cka_linear", "kmedoids", "mean_index", False),
    ],
)
def test_paper_mode_flag(metric, algorithm, center, paper):
    m = SimilarityMatrix(blocks([4, 5, 3]), metric, NAMES)
    hs = select_hints(m, 3, algorithm=algorithm, center=center)
    assert hs.paper_mode is paper
    assert hs.membership == [0] * 4 + [1] * 5 + [2] * 3 and (hs.similarity, hs.center) == (metric, center)


def test_plain_array_needs_no_names_and_is_not_paper_mode():
    hs = select_hints(blocks([4, 5, 3]), 3)
    assert hs.layers == ["1", "6", "10"] and hs.similarity is None and hs.paper_mode is False


def test_end_to_end_from_representations():
    g = torch.Generator().manual_seed(0)
    base = [torch.randn(200, 6, generator=g, dtype=torch.float64) for _ in range(2)]
    reps = [base[0] + 0.05 * torch.randn(200, 6, generator=g, dtype=torch.float64) for _ in range(3)]
    reps += [base[1] + 0.05 * torch.randn(200, 6, generator=g, dtype=torch.float64) for _ in range(3)]
    hs = select_hints(similarity_matrix(reps, "r2_cca", names=[f"b{i}" for i in range(6)]), 2)
    assert hs.membership == [0, 0, 0, 1, 1, 1] and hs.layers == ["b1", "b4"] and hs.probe_size == 200


def test_same_seed_gives_identical_hint_sets():
    s = blocks([3, 3, 6, 2], seed=7)
    for algorithm in ("pursuhint", "agglomerative", "spectral", "kmedoids"):
        a = select_hints(s, 4, algorithm=algorithm, seed=11)
        b = select_hints(s, 4, algorithm=algorithm, seed=11)
        assert a.to_json() == b.to_json()


def test_collision_is_an_error_by_default_and_a_warning_on_request():
    with pytest.raises(HintSetError, match=r"clusters 0 and 1 collided at layer 1 .*ask for fewer than 3 hints"):
        select_hints(COLLIDING, 3)
    hs = select_hints(COLLIDING, 3, on_collision="warn")
    assert hs.indices == [1, 3] and hs.n_hints == 2 and hs.membership == [0, 0, 0, 1]
    assert len(hs.warnings) == 1 and "collided at layer 1" in hs.warnings[0]
    assert HintSet.from_dict(json.loads(hs.to_json())) == hs


def test_select_hints_errors():
    s = np.eye(3) * 0.5 + 0.5
    with pytest.raises(HintSetError, match="n_hints 5 is larger than the 3 candidate layers of this teacher; use 1..3"):
        select_hints(s, 5)
    with pytest.raises(HintSetError, match="on_collision must be one of error, warn, got 'ignore'"):
        select_hints(s, 2, on_collision="ignore")
    with pytest.raises(PursuhintError, match="unknown clustering 'kmean'"):
        select_hints(s, 2, algorithm="kmean")
    with pytest.raises(PursuhintError, match="names must be 3 strings"):
        select_hints(s, 2, names=["a", "b"])


# ---------------------------------------------------------------- serialisation


def test_json_and_yaml_round_trip(tmp_path):
    hs = paper_hint_set()
    hs.score = 71.25
    hs.provenance.update(method="fitnet", hint_weight=100.0, sweep="demo", trial_id="t_0003")
    hs.save(tmp_path / "a" / "hints.json")
    back = HintSet.load(tmp_path / "a" / "hints.json")
    assert back == hs
    assert json.loads((tmp_path / "a" / "hints.json").read_text())["schema_version"] == SCHEMA_VERSION
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["hints.json"]  # no temp file left
    hs.save(tmp_path / "hints.yaml")
    assert HintSet.load(tmp_path / "hints.yaml") == hs
    assert yaml.safe_load(hs.to_yaml())["layers"] == ["layer1.1", "layer2.2", "layer3.2"]


def test_newer_schema_is_refused(tmp_path):
    d = paper_hint_set().to_dict()
    d["schema_version"] = 3
    with pytest.raises(HintSetError, match=r"schema_version 3 is newer than this pursuhint supports \(1\); upgrade pursuhint"):
        HintSet.from_dict(d)
    path = tmp_path / "new.json"
    path.write_text(json.dumps(d))
    with pytest.raises(HintSetError, match="new.json'.*schema_version 3 is newer"):
        HintSet.load(path)


def test_unreadable_files_name_the_path(tmp_path):
    with pytest.raises(HintSetError, match="missing.json' does not exist"):
        HintSet.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"layers": [')
    with pytest.raises(HintSetError, match="bad.json' is not valid JSON"):
        HintSet.load(bad)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"indices": [1, 6, 12]}, "index 12 is out of range for its 12 candidates"),
        ({"indices": [6, 1, 10], "layers": ["layer2.2", "layer1.1", "layer3.2"]}, "must be strictly increasing"),
        ({"layers": ["layer1.1", "layer2.3", "layer3.2"]}, "layer 'layer2.3' does not match candidate 6, which is 'layer2.2'"),
        ({"n_hints": 4}, "n_hints 4 must equal the number of indices"),
        ({"indices": "1,6,10"}, "'indices' must be a list of integers"),
        ({"membership": [0] * 11}, "'membership' must be null or a list of 12 integers"),
        ({"membership": [0] * 11 + [3]}, "membership values must lie in 0..2"),
        ({"teacher_sha256": "xyz"}, "'teacher_sha256' must be null or 64 lowercase hex digits"),
        ({"paper_mode": False}, "paper_mode False contradicts algorithm 'pursuhint'"),
        ({"score": "high"}, "'score' must be null or a finite number"),
        ({"provenance": {"sweep": [1, 2]}}, "provenance field 'sweep' must be a string, number"),
        ({"colour": "red"}, "unknown key 'colour'"),
        ({"schema_version": "1"}, "schema_version must be a positive integer"),
    ],
)
def test_malformed_hint_sets_are_refused(change, message):
    d = paper_hint_set().to_dict()
    d.update(change)
    with pytest.raises(HintSetError, match=message):
        HintSet.from_dict(d)


def test_missing_required_key_is_named():
    d = paper_hint_set().to_dict()
    del d["candidates"]
    with pytest.raises(HintSetError, match="missing the required key 'candidates'"):
        HintSet.from_dict(d)
    with pytest.raises(HintSetError, match="must be a JSON object, got list"):
        HintSet.from_dict([1, 2])


def test_hand_written_minimal_hint_set_gets_defaults():
    hs = HintSet.from_dict({"schema_version": 1, "layers": ["b"], "indices": [1], "n_hints": 1,
                            "candidates": ["a", "b", "c"], "algorithm": "manual", "center": None})
    assert hs.paper_mode is False and hs.seed == 0 and hs.membership is None and hs.positions_1based() == [2]


# ---------------------------------------------------------------- teacher check


def test_wrong_teacher_is_refused():
    torch.manual_seed(0)
    teacher, other = nn.Linear(3, 2), nn.Linear(3, 2)
    hs = paper_hint_set()
    hs.teacher_sha256 = weights_sha256(teacher.state_dict())
    hs.check_teacher(teacher)  # passes
    hs.check_teacher(hs.teacher_sha256.upper())
    with pytest.raises(HintSetError) as err:
        hs.check_teacher(other)
    want = (f"hint set was made for teacher resnet56 sha256 {hs.teacher_sha256[:12]}…, "
            f"but this teacher's weights hash to {weights_sha256(other.state_dict())[:12]}…")
    assert str(err.value) == want
    hs.teacher_sha256 = None
    hs.check_teacher(other)  # no hash recorded: anything passes


# ---------------------------------------------------------------- default hints


def test_default_hints_are_the_last_block_of_each_stage():
    cands = [CandidateLayer(f"layer{s + 1}.{b}", 3 * s + b, (3 * s + b + 1) / 9, s, 16 * 2**s, (32 >> s,) * 2)
             for s in range(3) for b in range(3)]
    hs = default_hints(list(reversed(cands)))  # order of the input does not matter
    assert hs.layers == ["layer1.2", "layer2.2", "layer3.2"]
    assert hs.indices == [2, 5, 8] and hs.positions_1based() == [3, 6, 9]
    assert hs.membership == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert (hs.algorithm, hs.center, hs.similarity, hs.paper_mode) == ("default", None, None, False)
    assert HintSet.from_dict(hs.to_dict()) == hs
    with pytest.raises(HintSetError, match="non-empty list of CandidateLayer"):
        default_hints([])


def test_an_exported_hint_set_gives_its_recipe_back_in_either_form():
    """``distill --hints`` reads the recipe an exported hint set carries: once under its own names, or (hint sets
    exported by earlier versions) as recipe_* beside older plain copies, which then are not read."""
    plain = {"method": "at", "hint_weight_setting": "auto", "hint_ratio": 0.5, "hint_weight": 31.3, "kd_weight": 0.0,
             "ce_weight": 1.0, "lr": 0.05, "epochs": 6, "seed": 0, "sweep": "s"}
    want = {"distill.method": "at", "distill.hint_weight": "auto", "distill.hint_ratio": 0.5,
            "distill.kd_weight": 0.0, "distill.ce_weight": 1.0, "train.lr": 0.05, "train.epochs": 6, "train.seed": 0}
    assert HintSet(layers=["a"], indices=[0], n_hints=1, candidates=["a"], provenance=plain).recipe == want
    old = {"method": "fitnet", "lr": 0.1, **{f"recipe_{k}": v for k, v in plain.items() if k not in ("sweep",)}}
    assert HintSet(layers=["a"], indices=[0], n_hints=1, candidates=["a"], provenance=old).recipe == want
    given = dict(plain, hint_weight_setting=10.0)  # a β given as a number: the ratio played no part
    recipe = HintSet(layers=["a"], indices=[0], n_hints=1, candidates=["a"], provenance=given).recipe
    assert recipe["distill.hint_weight"] == 10.0 and "distill.hint_ratio" not in recipe
    assert HintSet(layers=["a"], indices=[0], n_hints=1, candidates=["a"]).recipe == {}
