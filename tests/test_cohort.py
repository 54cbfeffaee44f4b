"""Cohorts: students trained together on one loader pass and one teacher forward end exactly as they end alone
(bitwise, on the CPU at one thread); a member that diverges or fails ends alone; a killed cohort resumes every
member where it was."""

from __future__ import annotations

import pytest
import torch

from pursuhint.train.student import CohortMember, cohort_key, train_cohort, train_student
from pursuhint.errors import PursuhintError

from conftest import tiny_distillation

TINY = """
seed: 3
data: {dataset: digits, image_size: 8, train_samples: 160, val_samples: 60}
teacher: {arch: resnet14}
student: {arch: resnet8}
distill: {method: at, kd_weight: 0.5}
train: {epochs: 3, batch_size: 32, lr: 0.02, lr_schedule: step, milestones: [2]}
"""


@pytest.fixture(scope="module")
def tiny():
    return tiny_distillation(TINY, "resnet14")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def arms(cfg, hs):
    """Three arms of one seed: AT with a calibrated β through the hints, CRD (random negatives: it draws from
    the random state during training), and KD only."""
    return [(cfg, hs), (cfg.with_values({"distill.method": "crd", "distill.hint_weight": None}), None),
            (cfg.with_values({"distill.method": "kd_only"}), None)]


def metrics(result):
    return [(h.epoch, h.lr, h.losses, h.train_acc, h.val_acc, h.val_top5, h.extra) for h in result.fit.history]


def assert_same(a, b):
    assert a.status == b.status and metrics(a) == metrics(b)
    sa, sb = a.student.state_dict(), b.student.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.weights == b.weights


def test_a_cohort_trains_each_member_exactly_as_alone(tiny, tmp_path):
    cfg, ds, teacher, sha, hs = tiny
    alone = [train_student(c, h, teacher, ds, teacher_sha256=sha, evaluate_test=True) for c, h in arms(cfg, hs)]
    seen = []
    members = [CohortMember(c, h, callbacks=[seen.append] if i == 0 else []) for i, (c, h) in enumerate(arms(cfg, hs))]
    together = train_cohort(members, teacher, ds, teacher_sha256=sha, evaluate_test=True)
    for a, b in zip(alone, together):
        assert_same(a, b)
    assert [r.method for r in together] == ["at", "crd", "kd_only"]
    assert isinstance(together[0].weights["hint"], float)  # calibrated in the cohort as alone
    assert "test_acc" in together[0].fit.history[-1].extra
    assert [s.epoch for s in seen] == [1, 2, 3]  # the first member's callback, once per epoch


def test_one_member_diverging_or_failing_ends_alone(tiny):
    cfg, ds, teacher, sha, hs = tiny
    boom = cfg.with_values({"distill.hint_weight": 1.0e30})  # AT with an absurd β: the loss is not finite

    def fail(stats):
        raise RuntimeError("the tracking store refused the epoch")

    members = [CohortMember(boom, hs), CohortMember(*arms(cfg, hs)[1], callbacks=[fail]),
               CohortMember(*arms(cfg, hs)[2])]
    diverged, failed, fine = train_cohort(members, teacher, ds, teacher_sha256=sha)
    assert diverged.status == "diverged" and "loss became" in diverged.fit.message and not diverged.fit.history
    assert failed.status == "error" and isinstance(failed.fit.error, RuntimeError)
    assert "refused the epoch" in failed.fit.message and len(failed.fit.history) == 1
    assert_same(fine, train_student(*arms(cfg, hs)[2], teacher, ds, teacher_sha256=sha))


def test_a_killed_cohort_resumes_every_member_where_it_was(tiny, tmp_path):
    cfg, ds, teacher, sha, hs = tiny
    whole = train_cohort([CohortMember(c, h) for c, h in arms(cfg, hs)], teacher, ds, teacher_sha256=sha)

    def kill_at_epoch_2(stats):
        if stats.epoch == 2:
            raise KeyboardInterrupt  # after the first two members saved epoch 2, before the third did

    dirs = [tmp_path / f"m{i}" for i in range(3)]
    members = [CohortMember(c, h, d, callbacks=[kill_at_epoch_2] if i == 1 else [])
               for i, ((c, h), d) in enumerate(zip(arms(cfg, hs), dirs))]
    with pytest.raises(KeyboardInterrupt):
        train_cohort(members, teacher, ds, teacher_sha256=sha)
    epochs = [torch.load(d / "student_state.pt", weights_only=True)["epoch"] for d in dirs]
    assert epochs == [2, 2, 1]  # the members stopped at different epochs
    resumed = train_cohort([CohortMember(c, h, d) for (c, h), d in zip(arms(cfg, hs), dirs)], teacher, ds,
                           teacher_sha256=sha)
    for a, b in zip(whole, resumed):
        assert_same(a, b)


def test_students_that_cannot_share_a_pass_are_refused(tiny):
    cfg, ds, teacher, sha, hs = tiny
    other = cfg.with_values({"train.lr": 0.05, "seed": 4})
    assert cohort_key(cfg) == cohort_key(cfg.with_values({"distill.method": "kd_only", "student.arch": "resnet8"}))
    assert cohort_key(cfg) != cohort_key(other)
    with pytest.raises(PursuhintError, match=r"must share the teacher, data, recipe and seed; these 2 differ in "
                                             r"train, seed"):
        train_cohort([CohortMember(cfg, hs), CohortMember(other, hs)], teacher, ds, teacher_sha256=sha)
