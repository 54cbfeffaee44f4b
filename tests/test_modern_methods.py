"""ReviewKD and SemCKD: their losses against hand-computed cases, the layers they choose, the modules built for
the published pairs and torchvision ResNets, a short training run each, and the inputs they refuse."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pursuhint.config import config_from_text
from pursuhint.distill.methods import create_method, method_class
from pursuhint.distill.methods.reviewkd import hcl_loss
from pursuhint.distill.methods.semckd import gram_rows
from pursuhint.train.student import method_layers, train_student
from pursuhint.errors import ConfigError, PursuhintError
from pursuhint.models import create_model
from pursuhint.preflight import check_published

from conftest import tiny_distillation


def checkerboard(size: int) -> torch.Tensor:
    idx = torch.arange(size)
    return ((idx[:, None] + idx[None, :]) % 2 * 2 - 1).float().expand(1, 1, size, size).clone()


def test_hcl_weighs_the_pooled_levels_by_halves():
    # f_s = 0 against a ±1 checkerboard: the full map's MSE is 1 and every pooled level's is 0, so the loss is
    # 1 / (1 + 1/2 + 1/4 + 1/8) on 8×8 (levels 4, 2, 1) and 1 / (1 + 1/2 + 1/4) on 4×4 (level 4 is skipped)
    assert hcl_loss(torch.zeros(1, 1, 8, 8), checkerboard(8)).item() == pytest.approx(1 / 1.875)
    assert hcl_loss(torch.zeros(1, 1, 4, 4), checkerboard(4)).item() == pytest.approx(1 / 1.75)
    assert hcl_loss(torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 8, 8)).item() == pytest.approx(1.0)  # every level 1
    assert hcl_loss(torch.zeros(1, 1, 8, 8), checkerboard(8), levels=(1,)).item() == pytest.approx(1 / 1.5)


def test_reviewkd_fuses_deepest_first_and_its_warm_up_ramps():
    s_shapes, t_shapes = [(4, 8, 8), (8, 4, 4)], [(6, 8, 8), (10, 4, 4)]
    torch.manual_seed(0)
    method = create_method("reviewkd", s_shapes, t_shapes, warmup=20, warmup_of=240)
    assert [abf.attention is not None for abf in method.abfs] == [True, False]  # the deepest level fuses nothing
    assert method.abfs[0].reduce[0].out_channels == 8  # mid = min(512, the deepest student stage's channels)
    feats_s = [torch.randn(2, *s, requires_grad=True) for s in s_shapes]
    feats_t = [torch.randn(2, *t) for t in t_shapes]
    method.set_schedule(steps_per_epoch=10, epochs=24)  # a warm-up of 20 of 240 epochs → 2 of 24
    first = method.hint_loss(feats_s, feats_t)  # epoch 1 of a 2-epoch warm-up: half the loss
    with torch.no_grad():  # the fusion by hand, deepest level first (training mode: batch statistics)
        out1, below = method.abfs[1](feats_s[1])
        out0, _ = method.abfs[0](feats_s[0], below)
        full = hcl_loss(out0, feats_t[0]) + hcl_loss(out1, feats_t[1])
    assert first.item() == pytest.approx(0.5 * full.item(), rel=1e-5)
    first.backward()
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in feats_s)
    assert method.abfs[0].attention[0].weight.grad is not None  # the fusion learns
    method.ramp.step = 10
    assert method.ramp.current() == 1.0  # epoch 2: the whole loss


def test_semckd_weighs_each_pairs_mse_by_its_attention():
    torch.manual_seed(0)
    s_shapes, t_shapes = [(4, 8, 8)], [(6, 8, 8), (10, 4, 4)]
    method = create_method("semckd", s_shapes, t_shapes, batch_size=4)
    feats_s = [torch.randn(4, *s_shapes[0], requires_grad=True)]
    feats_t = [torch.randn(4, *t) for t in t_shapes]
    loss = method.hint_loss(feats_s, feats_t)
    att = method.attention(feats_s, feats_t)
    assert att.shape == (4, 1, 2) and torch.allclose(att.sum(-1), torch.ones(4, 1))
    by_hand = 0.0
    for j, f_t in enumerate(feats_t):  # the larger map pooled to the smaller: 8×8 student → 4×4 for teacher 2
        src = F.adaptive_avg_pool2d(feats_s[0], f_t.shape[2:]) if f_t.shape[2] < 8 else feats_s[0]
        per_sample = (method.projectors[0][j](src) - f_t).pow(2).flatten(1).mean(1)
        by_hand = by_hand + (att[:, 0, j] * per_sample).sum()
    assert loss.item() == pytest.approx((by_hand / (4 * 1)).item(), rel=1e-5)
    loss.backward()
    assert feats_s[0].grad.abs().sum() > 0 and method.queries[0].first.weight.grad is not None
    assert method.keys[1].first.weight.grad is not None and method.projectors[0][1][0].weight.grad is not None
    gram = gram_rows(torch.ones(3, 2, 1, 1), 5)  # a smaller last batch: zero-padded to the built width
    assert gram.shape == (3, 5) and gram[:, :3].eq(2).all() and gram[:, 3:].eq(0).all()


def test_one_teacher_candidate_makes_semckd_plain_mse_through_the_projector():
    torch.manual_seed(1)
    method = create_method("semckd", [(4, 4, 4)], [(6, 4, 4)], batch_size=2)
    f_s, f_t = torch.randn(2, 4, 4, 4), torch.randn(2, 6, 4, 4)
    expected = F.mse_loss(method.projectors[0][0](f_s), f_t)
    assert method.hint_loss([f_s], [f_t]).item() == pytest.approx(expected.item(), rel=1e-5)


PAIRS = [("resnet110", "resnet20"), ("resnet32x4", "resnet8x4"), ("wrn_40_2", "wrn_16_2"),
         ("torchvision:resnet34", "torchvision:resnet18")]


@pytest.mark.parametrize("teacher_arch,student_arch", PAIRS)
def test_the_published_pairs_build_and_train_a_step(teacher_arch, student_arch):
    ds = tiny_distillation("data: {dataset: digits, image_size: 32, train_samples: 100, val_samples: 40}",
                           "resnet8")[1]
    torch.manual_seed(0)
    teacher = create_model(teacher_arch, 10, in_channels=1).eval()
    student = create_model(student_arch, 10, in_channels=1)
    images = ds.train_x[:4].float().div(255)
    for name in ("reviewkd", "semckd"):
        t_layers, s_layers = method_layers(name, {}, None, teacher, student, ds, "block", "auto")
        assert len(s_layers) in (3, 4) and len(t_layers) == len(s_layers)  # stage ends both
        method = create_method(name, [(s.channels, *s.spatial) for s in s_layers],
                               [(t.channels, *t.spatial) for t in t_layers],
                               **({"batch_size": 4} if name == "semckd" else {}))
        from pursuhint.models.hooks import taps

        with taps(teacher, [t.name for t in t_layers]) as tt, taps(student, [s.name for s in s_layers]) as st:
            with torch.no_grad():
                teacher(images)
            student(images)
            loss = method.hint_loss(st.outputs, tt.outputs)
        assert math.isfinite(loss.item()) and loss.item() > 0, (name, teacher_arch)
        loss.backward()


def test_semckd_over_the_hint_sets_layers_and_reviewkd_ignoring_them():
    cfg, ds, teacher, sha, hs = tiny_distillation(TINY, "resnet14")
    student = create_model("resnet8", ds.num_classes, in_channels=ds.channels)
    t_layers, s_layers = method_layers("semckd", {"candidates": "hints"}, hs, teacher, student, ds, "block", "auto")
    assert [t.name for t in t_layers] == hs.layers and [s.name for s in s_layers] == ["layer1.0", "layer2.0",
                                                                                      "layer3.0"]
    uniform = hs.__class__.from_dict({**hs.to_dict(), "indices": [0, 1], "layers": ["layer1.0", "layer1.1"],
                                      "n_hints": 2, "membership": None})
    t_two, _ = method_layers("semckd", {"candidates": "hints"}, uniform, teacher, student, ds, "block", "auto")
    assert [t.name for t in t_two] == ["layer1.0", "layer1.1"]  # any number of candidates
    t_rev, _ = method_layers("reviewkd", {}, uniform, teacher, student, ds, "block", "auto")
    assert [t.name for t in t_rev] == ["layer1.1", "layer2.1", "layer3.1"]  # its own: the teacher's stage ends
    with pytest.raises(PursuhintError, match="semckd with candidates: hints needs a hint set"):
        method_layers("semckd", {"candidates": "hints"}, None, teacher, student, ds, "block", "auto")
    assert not method_class("reviewkd").reads_hint_set({})


TINY = """
seed: 2
data: {dataset: digits, image_size: 8, train_samples: 160, val_samples: 60}
teacher: {arch: resnet14}
student: {arch: resnet8}
distill: {method: reviewkd, hint_weight: null}
train: {epochs: 2, batch_size: 32, lr: 0.02, lr_schedule: constant}
"""


@pytest.mark.parametrize("method", ["reviewkd", "semckd"])
def test_each_method_trains_with_a_finite_falling_hint_loss(method):
    cfg, ds, teacher, sha, hs = tiny_distillation(TINY, "resnet14")
    cfg = cfg.with_values({"distill.method": method, "distill.params": {"warmup": 0} if method == "reviewkd" else {}})
    result = train_student(cfg, None, teacher, ds, teacher_sha256=sha)  # neither needs a hint set
    assert result.status == "completed" and result.method == method, result.fit.message
    first, second = (h.losses["hint"] for h in result.fit.history)
    assert math.isfinite(first) and 0 < second < first
    assert result.weights["hint"] == {"reviewkd": 1.0, "semckd": 400.0}[method]  # the published weight
    assert [p.student.name for p in result.pairs] == (["layer1.0", "layer2.0", "layer3.0"])


@pytest.mark.parametrize("text,fragment", [
    ("teacher: {arch: torchvision:resnet18}\nstudent: {arch: resnet20}\ndistill: {method: reviewkd}",
     "teacher torchvision:resnet18 has 4 (layer1.1, layer2.1, layer3.1, layer4.1) and the student resnet20 3"),
    ("distill: {method: semckd, params: {candidates: hints}}\nsearch: {confirm: {baselines: [default, semckd]}}",
     "semckd with distill.params candidates: hints needs a hint set"),
])
def test_bad_pairs_are_refused_before_any_work(text, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        check_published(config_from_text(text))


def test_unknown_and_wired_parameters_are_refused():
    from pursuhint.distill.methods import check_params

    with pytest.raises(PursuhintError, match="'levelz' is not a parameter of distillation method 'reviewkd'; "
                                             "valid: levels, mid_channels, warmup, warmup_of"):
        check_params(["reviewkd"], {"levelz": [4]})
    with pytest.raises(PursuhintError, match="'batch_size' is not a parameter of distillation method 'semckd'; "
                                             "valid: factor, temperature, candidates"):
        check_params(["semckd"], {"batch_size": 8})  # set from train.batch_size
    with pytest.raises(ValueError, match="semckd's candidates must be one of stage_ends, hints"):
        create_method("semckd", [(4, 4, 4)], [(4, 4, 4)], candidates="all")


def test_a_sweep_trains_the_published_methods_with_their_recipes_and_layers(golden_sweep):
    """DKD, ReviewKD and SemCKD in the golden sweep (its confirmation baselines: the same trainable a searched
    trial runs): each trains with its published recipe; DKD on the logits alone; ReviewKD and SemCKD pick their
    own layers, one per stage whatever the selection keys say, paired with the student's stages."""
    from golden import NAME, STUDENT_STAGE_STARTS, TEACHER_STAGE_ENDS
    from sweep_helpers import children

    _, runs = children(golden_sweep.uri, NAME)
    by_kind = {}
    for run in runs:
        by_kind.setdefault(run.data.tags["pursuhint.baseline"], []).append(run)
    assert by_kind["dkd"]
    for run in by_kind["dkd"]:
        p = run.data.params
        assert (p["method"], p["hint_layers"], p["kd_weight"]) == ("dkd", "", "0.0")
        assert "loss_logit" in run.data.metrics and run.data.tags["pursuhint.status"] == "completed"
    for kind, weight, kd in (("reviewkd", "1.0", "0.0"), ("semckd", "400.0", "1.0")):  # their published recipes
        assert by_kind[kind], kind
        for run in by_kind[kind]:
            p = run.data.params
            assert (p["method"], p["hint_weight"], p["kd_weight"]) == (kind, weight, kd), run.info.run_name
            # the method's own three pairs, though the selection asks for K = 2: with no hint set, the teacher layers
            # it chose are its hint layers
            assert (p["hint_layers"], p["n_hints"], p["student_layers"]) == (TEACHER_STAGE_ENDS, "3",
                                                                           STUDENT_STAGE_STARTS)
            assert run.data.tags["pursuhint.confirms"] == kind and p["hint_indices"] == ""
            assert "loss_hint" in run.data.metrics and run.data.tags["pursuhint.status"] == "completed"
