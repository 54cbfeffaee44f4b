"""DKD (decoupled KD): its two terms against hand computation, the decomposition of classic KD, gradients, the
warm-up, its checkpointed step, its parameters, and a short training run."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from pursuhint.distill import create_method, kd_loss
from pursuhint.distill.methods import check_params
from pursuhint.distill.methods.dkd import dkd_terms
from pursuhint.errors import PursuhintError


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def by_hand(z_s: list[float], z_t: list[float], gt: int, t: float) -> tuple[float, float]:
    """TCKD and NCKD of one sample, written out: the binary target/rest split, then the non-target softmax."""
    p_s, p_t = softmax(np.array(z_s) / t), softmax(np.array(z_t) / t)
    b_s, b_t = np.array([p_s[gt], 1 - p_s[gt]]), np.array([p_t[gt], 1 - p_t[gt]])
    tckd = float(np.sum(b_t * np.log(b_t / b_s))) * t * t
    rest = [i for i in range(len(z_s)) if i != gt]
    q_s, q_t = softmax(np.array(z_s)[rest] / t), softmax(np.array(z_t)[rest] / t)
    nckd = float(np.sum(q_t * np.log(q_t / q_s))) * t * t
    return tckd, nckd


@pytest.mark.parametrize("t", [1.0, 4.0])
def test_the_two_terms_equal_the_hand_computed_ones(t):
    z_s, z_t, gt = [2.0, -1.0, 0.5, 3.0], [1.0, 0.0, -0.5, 4.0], 3
    tckd, nckd = dkd_terms(torch.tensor([z_s], dtype=torch.float64), torch.tensor([z_t], dtype=torch.float64),
                           torch.tensor([gt]), t)
    want = by_hand(z_s, z_t, gt, t)
    assert (float(tckd), float(nckd)) == pytest.approx(want, rel=1e-9)
    # the mask moves with the label: another target class gives other terms
    other = dkd_terms(torch.tensor([z_s], dtype=torch.float64), torch.tensor([z_t], dtype=torch.float64),
                      torch.tensor([0]), t)
    assert (float(other[0]), float(other[1])) == pytest.approx(by_hand(z_s, z_t, 0, t), rel=1e-9)


def test_classic_kd_is_tckd_plus_the_teachers_non_target_mass_times_nckd():
    """The published decomposition: KD = TCKD + (1 − p_t,gt) · NCKD, per sample; so α = β = 1 DKD differs from
    KD exactly by NCKD's factor (1 − p_t,gt)."""
    torch.manual_seed(0)
    z_s, z_t = torch.randn(6, 10, dtype=torch.float64) * 3, torch.randn(6, 10, dtype=torch.float64) * 3
    labels = torch.randint(0, 10, (6,))
    for i in range(6):
        s, t_, y = z_s[i:i + 1], z_t[i:i + 1], labels[i:i + 1]
        tckd, nckd = dkd_terms(s, t_, y, 4.0)
        p_gt = torch.softmax(t_ / 4.0, dim=1)[0, y[0]]
        assert float(kd_loss(s, t_, 4.0)) == pytest.approx(float(tckd + (1 - p_gt) * nckd), rel=1e-9)
        assert float(tckd + nckd) - float(kd_loss(s, t_, 4.0)) == pytest.approx(float(p_gt * nckd), rel=1e-7)


def test_gradients_match_finite_differences_and_the_teacher_gets_none():
    torch.manual_seed(1)
    z_t = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 3, 4, 1])
    def dkd(z: torch.Tensor) -> torch.Tensor:
        tckd, nckd = dkd_terms(z, z_t.detach(), labels, 4.0)
        return 1.0 * tckd + 8.0 * nckd

    assert torch.autograd.gradcheck(dkd, (torch.randn(4, 5, dtype=torch.float64, requires_grad=True),))
    method = create_method("dkd", [], [], alpha=1.0, beta=8.0, temperature=4.0, warmup=0)
    z_s = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    method.logit_loss(z_s, z_t, labels).backward()  # the method computes in float32 and never reaches the teacher
    want = torch.autograd.grad(dkd(z_s), z_s)[0]
    assert torch.allclose(z_s.grad, want, rtol=1e-4, atol=1e-6) and z_t.grad is None


def test_the_warm_up_scales_with_the_runs_epochs_and_survives_a_checkpoint():
    method = create_method("dkd", [], [], alpha=1.0, beta=1.0)
    method.set_schedule(steps_per_epoch=10, epochs=24)  # 20 of 240 epochs → 2 of 24
    assert method.warmup_epochs == pytest.approx(2.0)
    z_s, z_t, y = torch.randn(3, 5), torch.randn(3, 5), torch.tensor([0, 1, 2])
    full = float(sum(dkd_terms(z_s, z_t, y, 4.0)))
    assert float(method.logit_loss(z_s, z_t, y)) == pytest.approx(0.5 * full, rel=1e-6)  # epoch 1 of 2
    for _ in range(9):
        method.logit_loss(z_s, z_t, y)
    assert method.step == 10 and method.warmup_factor() == 1.0  # epoch 2
    method.eval()
    method.logit_loss(z_s, z_t, y)
    assert method.step == 10  # evaluation takes no step
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    fresh = create_method("dkd", [], [])
    fresh.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    assert fresh.step == 10  # a resumed run goes on from its step, not from the warm-up's start


def test_dkd_parameters_are_checked():
    check_params(["dkd"], {"alpha": 2.0, "beta": 4.0, "temperature": 2.0, "warmup": 10})
    with pytest.raises(PursuhintError, match=r"'gamma' is not a parameter of distillation method 'dkd'; valid: alpha, "
                                             r"beta, temperature, warmup, warmup_of"):
        check_params(["dkd"], {"gamma": 1.0})
    with pytest.raises(ValueError, match="dkd's temperature must be > 0"):
        create_method("dkd", [], [], temperature=0)


def test_a_dkd_student_trains_from_the_logits_alone():
    """Two epochs of resnet8 ← resnet14 on 8-px digits with no hint set: the loss is finite and falls, the DKD
    term is there, no hint term, and the method is DKD (not KD only)."""
    from conftest import tiny_distillation
    from test_trainer import TINY

    from pursuhint.train.student import train_student

    cfg, ds, teacher, sha, _ = tiny_distillation(TINY, "resnet14")
    cfg = cfg.with_values({"distill.method": "dkd", "train.epochs": 2, "distill.params": {"warmup": 0}})
    result = train_student(cfg, None, teacher, ds, teacher_sha256=sha)
    assert result.status == "completed" and result.method == "dkd" and result.pairs == []
    first, second = result.fit.history
    assert "logit" in first.losses and "hint" not in first.losses
    assert all(math.isfinite(s.losses["total"]) for s in (first, second))
    assert second.losses["total"] < first.losses["total"]
