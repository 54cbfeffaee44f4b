"""A confirmation cohort with a member that cannot be built (its hints cannot pair with the student): that member
ends ``invalid`` on its own MLflow run and the others train, each on its own run, exactly as a cohort without it.

``run_cohort`` runs in this process with a fake Tune (no Ray): a real shared work (a tiny digits teacher), a real
sqlite MLflow store and parent run, no duplicate index.
"""

from __future__ import annotations

import json
import os
import types
from pathlib import Path

import pytest
import ray
import torch

from pursuhint import tracking
from pursuhint.config import config_from_text
from pursuhint.search import trial as trial_module
from pursuhint.search import tune_trainable
from pursuhint.search.confirm import Candidate, cohorts, plan
from pursuhint.search.parent_run import ParentRun
from pursuhint.search.results import rows_from_mlflow
from pursuhint.search.shared import prepare_shared
from pursuhint.search.trial_keys import BASELINE_KEY, COHORT_KEY, MEMBERS_KEY
from pursuhint.search.sync import MLFLOW_KEY
from pursuhint.search.trial import SweepInfo

from sweep_helpers import mlflow_db

NAME = "t_cohort_invalid"
# stage_ends needs one hint per student stage (resnet8: 3): the default hints (one per teacher stage) pair, the
# uniform baseline at the confirmed K = 2 cannot.
CONFIG = f"""
name: {NAME}
seed: 0
data: {{dataset: digits, image_size: 8, train_samples: 300, val_samples: 120, probe_size: 150}}
teacher: {{arch: resnet14, train: {{epochs: 2, batch_size: 64, lr: 0.05, lr_schedule: cosine}}}}
student: {{arch: resnet8}}
selection: {{similarity: r2_cca, n_hints: 2}}
distill: {{method: at, hint_weight: 10, mapping: stage_ends}}
train: {{epochs: 1, batch_size: 64, lr: 0.05, lr_schedule: cosine}}
"""
SEED = 1


class FakeTune:
    """What the trainable uses of ``ray.tune``: the trial's id, no checkpoint to restore, and the reports (each
    with the names of the files its checkpoint folder held when it was sent, as Tune would copy them)."""

    def __init__(self, trial_id: str) -> None:
        self.trial_id = trial_id
        self.reports: list[tuple[dict, list[str] | None]] = []
        self.Checkpoint = types.SimpleNamespace(from_directory=Path)

    def get_context(self):
        return types.SimpleNamespace(get_trial_id=lambda: self.trial_id)

    def get_checkpoint(self):
        return None

    def report(self, metrics, checkpoint=None):
        files = None if checkpoint is None else sorted(
            str(p.relative_to(checkpoint)) for p in checkpoint.rglob("*") if p.is_file())
        self.reports.append((dict(metrics), files))

    def members(self) -> dict[str, list[dict]]:
        """Every member's results over all reports, in order."""
        out: dict[str, list[dict]] = {}
        for line, _ in self.reports:
            for i, results in json.loads(line[MEMBERS_KEY]).items():
                out.setdefault(i, []).extend(results)
        return out


@pytest.fixture(scope="module")
def shared():
    return prepare_shared(CONFIG, progress=False)  # the teacher trains once, cached under PURSUHINT_RUNS


@pytest.fixture(autouse=True)
def worker_settings(monkeypatch):
    """What a trial worker changes in its process (threads, MLflow's HTTP settings) is undone after the test;
    outside Ray the node id is a fixed name (Ray's own would connect to, or start, a cluster)."""
    threads = torch.get_num_threads()
    for key, value in tracking.FAIL_FAST_HTTP.items():
        monkeypatch.setenv(key, os.environ.get(key, value))
    monkeypatch.setattr(ray, "get_runtime_context",
                        lambda: types.SimpleNamespace(get_node_id=lambda: "test-node"))
    yield
    torch.set_num_threads(threads)


def planned_specs() -> list[dict]:
    """The confirmation plan's baselines of an AT candidate with K = 2 for one seed: the default hints, the
    uniform hints at K = 2 (cannot pair: stage_ends) and KD only; the three share one cohort."""
    cfg = config_from_text(CONFIG)
    cand = Candidate(trial_id="search-1", sampled={"selection.n_hints": 2, "distill.method": "at",
                                                   "distill.hint_weight": 10.0},
                     score=50.0, method="at", n_hints=2, hint_layers="a,b", weights=(10.0, 1.0, 0.0, 1.0), lr=0.05)
    specs = [s for s in plan(cfg, [cand], [SEED], ["default", "uniform", "kd_only"]) if s[BASELINE_KEY]]
    assert [s[BASELINE_KEY] for s in specs] == ["default", "uniform", "kd_only"]
    (cohort,) = cohorts(specs, 3)
    return list(cohort[COHORT_KEY])


def fake_tune(trial_id: str, monkeypatch) -> FakeTune:
    """A :class:`FakeTune` for trial ``trial_id``, put where the trainable and the trial look Tune up."""
    fake = FakeTune(trial_id)
    monkeypatch.setattr(tune_trainable, "tune", fake)
    monkeypatch.setattr(trial_module, "tune", fake)
    return fake


def run(specs, shared, sweep, trial_id, monkeypatch) -> FakeTune:
    fake = fake_tune(trial_id, monkeypatch)
    tune_trainable.run_cohort(specs, shared, sweep)
    return fake


@pytest.mark.slow  # trains a teacher (~10 s) and five students: not in `make test-fast`
def test_an_invalid_member_ends_alone_and_the_others_train_as_without_it(shared, tmp_path, monkeypatch):
    uri = mlflow_db(tmp_path)
    parent = ParentRun.open(uri, NAME, str(tmp_path / "sweep"))
    sweep = SweepInfo(NAME, uri, parent.experiment_id, parent.run_id, duplicates_actor=None, cpus_per_trial=1)
    specs = planned_specs()

    fake = run(specs, shared, sweep, "cohort-a", monkeypatch)

    runs = {r.data.tags[tracking.TRIAL_TAG]: r
            for r in tracking.find_runs(uri, parent.experiment_id, **{tracking.PARENT_TAG: parent.run_id})}
    assert sorted(runs) == ["cohort-a-m0", "cohort-a-m1", "cohort-a-m2"]  # each member its own run
    assert all(r.data.tags[tracking.COHORT_TAG] == "cohort-a" for r in runs.values())
    bad = runs["cohort-a-m1"]
    assert bad.data.tags[tracking.STATUS_TAG] == "invalid" and bad.info.status == "FAILED"
    assert bad.data.tags[tracking.BASELINE_TAG] == "uniform"
    for tag in ("pursuhint.error", tracking.REASON_TAG):
        assert "stage_ends mapping needs one teacher hint per student stage" in bad.data.tags[tag]
    assert "test_acc" not in bad.data.metrics
    # filed under the confirmation stage, as a trained arm is: never among the search stage's rows
    assert bad.data.tags[tracking.ROLE_TAG] == "confirm" and bad.data.tags["pursuhint.seed"] == str(SEED)
    assert bad.data.tags["pursuhint.confirms"] == "uniform"
    assert bad.info.run_name == f"confirm-baseline-uniform-k2-at-seed{SEED}"
    assert rows_from_mlflow(uri, parent.run_id) == []
    good = {i: runs[f"cohort-a-m{i}"] for i in (0, 2)}
    assert {i: r.data.tags[tracking.BASELINE_TAG] for i, r in good.items()} == {0: "default", 2: "kd_only"}
    for r in good.values():
        assert r.data.tags[tracking.STATUS_TAG] == "completed" and r.info.status == "FINISHED"
        assert 0.0 <= r.data.metrics["test_acc"] <= 100.0
        assert r.data.tags[tracking.ROLE_TAG] == "confirm" and r.data.tags["pursuhint.seed"] == str(SEED)

    # Tune: one report after the epoch (with the checkpoint: the trained members' folders), then the final one
    (epoch_line, files), (final_line, final_files) = fake.reports
    assert epoch_line["status"] == "running" and final_line["status"] == "ended" and final_files is None
    assert {f.split("/")[0] for f in files} == {"m0", "m2"}
    final = {i: v[-1] for i, v in json.loads(final_line[MEMBERS_KEY]).items()}
    assert {i: v["status"] for i, v in final.items()} == {"0": "completed", "1": "invalid", "2": "completed"}
    assert "stage_ends" in final["1"]["error"] and final["1"]["epoch"] == 0
    # the cohort's own val_acc (Tune's progress table): the mean of the members that trained, the invalid one
    # left out rather than counted as 0
    assert final_line["val_acc"] == (final["0"]["val_acc"] + final["2"]["val_acc"]) / 2
    invalid = fake.members()["1"]  # its one result (the final report repeats every member's last)
    assert all(v == final["1"] for v in invalid)
    record = json.loads(final["1"][MLFLOW_KEY])  # what `report --sync` writes if MLflow never saw the member
    assert record["tags"][tracking.STATUS_TAG] == "invalid" and record["tags"][tracking.COHORT_TAG] == "cohort-a"
    for i in (0, 2):
        assert final[str(i)]["test_acc"] == good[i].data.metrics["test_acc"]

    # the same two members in a cohort of their own: bitwise the same students
    alone = run([specs[0], specs[2]], shared, sweep, "cohort-b", monkeypatch)
    last = {i: v[-1] for i, v in json.loads(alone.reports[-1][0][MEMBERS_KEY]).items()}
    c = tracking.client(uri)
    for i, j in ((0, "0"), (2, "1")):
        assert last[j]["status"] == "completed"
        assert last[j]["test_acc"] == final[str(i)]["test_acc"]
        assert last[j]["val_acc"] == final[str(i)]["val_acc"]
        assert last[j]["train_loss"] == final[str(i)]["train_loss"]
        other = tracking.find_runs(uri, parent.experiment_id, **{tracking.TRIAL_TAG: f"cohort-b-m{j}"})[0]
        assert other.data.metrics["test_acc"] == good[i].data.metrics["test_acc"]
        assert [m.value for m in c.get_metric_history(other.info.run_id, "train_loss")] == \
            [m.value for m in c.get_metric_history(good[i].info.run_id, "train_loss")]
    assert not ray.is_initialized()  # no cluster was started or joined


@pytest.mark.slow  # trains the shared tiny teacher's students: not in `make test-fast`
def test_a_cohort_trains_its_arms_as_separate_trials_would(shared, tmp_path, monkeypatch):
    """``cohort: off`` against a cohort: the same two planned arms (default hints and KD only, one seed) trained
    as two single trials and as one cohort give bitwise the same test and final accuracy, per-epoch losses, and
    MLflow runs with the same params and metrics, the cohort's carrying ``pursuhint.cohort``. (The golden sweep
    trains its confirmation in cohorts on a real Ray; this checks the arithmetic against trials trained apart.)"""
    uri = mlflow_db(tmp_path)
    parent = ParentRun.open(uri, NAME, str(tmp_path / "sweep"))
    sweep = SweepInfo(NAME, uri, parent.experiment_id, parent.run_id, duplicates_actor=None, cpus_per_trial=1)
    specs = planned_specs()
    pair = [specs[0], specs[2]]  # default hints, KD only

    for i, spec in enumerate(pair):
        fake_tune(f"alone-{i}", monkeypatch)
        trial_module.run_one(spec, shared, sweep)
    run(pair, shared, sweep, "together", monkeypatch)

    def record(trial_id):
        (r,) = tracking.find_runs(uri, parent.experiment_id, **{tracking.TRIAL_TAG: trial_id})
        history = [m.value for m in tracking.client(uri).get_metric_history(r.info.run_id, "train_loss")]
        return r, (r.data.metrics["test_acc"], r.data.metrics["final_val_acc"], r.info.status, history,
                   sorted(r.data.params), sorted(r.data.metrics))

    for i in range(2):
        apart, a = record(f"alone-{i}")
        together, t = record(f"together-m{i}")
        assert a == t, (i, a, t)  # bit for bit, and the same params and metrics
        assert tracking.COHORT_TAG not in apart.data.tags and together.data.tags[tracking.COHORT_TAG] == "together"
        assert apart.data.tags[tracking.BASELINE_TAG] == together.data.tags[tracking.BASELINE_TAG]
        assert apart.data.params == {**together.data.params}  # the same values too


def test_a_cohorts_val_acc_counts_only_members_with_a_result():
    from pursuhint.search.tune_trainable import cohort_val_acc

    last = {0: {"val_acc": 50.0, "status": "completed"}, 1: {"val_acc": 0.0, "status": "invalid"},
            2: {"val_acc": 31.0, "status": "error"}, 3: {"val_acc": 40.0, "status": "running"}, 4: {"epoch": 0}}
    assert cohort_val_acc(last) == 45.0
    assert cohort_val_acc({1: last[1]}) == 0.0 and cohort_val_acc({}) == 0.0
