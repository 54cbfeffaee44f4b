"""Distillation methods, KD and CRD against hand-computed values, invariances and error messages."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pursuhint.distill import create_method, kd_loss, method_names
from pursuhint.distill.crd import CRDHead, contrast_loss
from pursuhint.distill.methods import ConvReg, METHODS
from pursuhint.errors import PursuhintError

D = torch.float64
HINT_METHODS = ["fitnet", "at", "sp", "nst", "vid", "pkt", "rkd", "cc"]


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=D)


def make(name: str, s_shapes, t_shapes, **params):
    return create_method(name, s_shapes, t_shapes, **params).double()


def smooth_l1(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


# ---------------------------------------------------------------- hand-computed values

def test_at_value_by_hand():
    # mean_c f² per sample: s0 = [1,0,0,0], s1 = [1,1,1,1]; t0 = [0,4/2,0,0] → unit [0,1,0,0], t1 = [1,1,1,1]
    f_s = t([[[[1, 0], [0, 0]], [[1, 0], [0, 0]]], [[[1, 1], [1, 1]], [[1, 1], [1, 1]]]])
    f_t = t([[[[0, 2], [0, 0]], [[0, 0], [0, 0]]], [[[1, 1], [1, 1]], [[-1, -1], [-1, -1]]]])
    at = make("at", [(2, 2, 2)], [(2, 2, 2)])
    # squared differences: sample 0 → 1 + 1, sample 1 → 0; mean over 2·4 entries = 0.25
    assert at.pair_loss(f_s, f_t).item() == pytest.approx(0.25, abs=1e-15)


def test_sp_value_by_hand():
    # G_s = I; G_t = all 2 → rows (1/√2, 1/√2); ‖G_t − G_s‖² = 2((1 − 1/√2)² + 1/2) = 4 − 2√2; / B² = 4
    sp = make("sp", [(2,)], [(2,)])
    value = sp.pair_loss(t([[1, 0], [0, 1]]), t([[1, 1], [1, 1]])).item()
    assert value == pytest.approx(1 - math.sqrt(2) / 2, abs=1e-14)


def test_nst_value_by_hand():
    # one sample, 1×2 maps: student channels e1, e2; teacher one channel (1, 1)/√2
    # mean K(t,t) = 1, mean K(s,s) = mean[[1,0],[0,1]] = 0.5, mean K(s,t) = (1/2 + 1/2)/2 = 0.5 → 1 + 0.5 − 1
    f_s = t([[[[1, 0]], [[0, 1]]]])
    f_t = t([[[[3, 3]]]])
    nst = make("nst", [(2, 1, 2)], [(1, 1, 2)])
    assert nst.pair_loss(f_s, f_t).item() == pytest.approx(0.5, abs=1e-14)


def test_pkt_value_by_hand():
    # P_s = [[2/3, 1/3], [1/3, 2/3]], P_t = all 1/2 → mean of 4 terms (1/2)·log((1/2)/p_s)
    eps = 1e-7
    pkt = make("pkt", [(2,)], [(2,)])
    value = pkt.pair_loss(t([[1, 0], [0, 1]]), t([[1, 0], [1, 0]])).item()
    expected = 2 * (0.5 * math.log((0.5 + eps) / (2 / 3 + eps)) + 0.5 * math.log((0.5 + eps) / (1 / 3 + eps))) / 4
    assert value == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(math.log(1.125) / 4, abs=1e-6)


def test_rkd_value_by_hand():
    s = [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)]
    tt = [(0.0, 0.0), (1.0, 0.0), (2.0, 0.0)]
    # distances normalised by their off-diagonal mean: student 1, 1, √2 over (2 + √2)/3; teacher 1, 2, 1 over 4/3
    ms, mt = (2 + math.sqrt(2)) / 3, 4 / 3
    ds = {(0, 1): 1 / ms, (0, 2): 1 / ms, (1, 2): math.sqrt(2) / ms}
    dt = {(0, 1): 1 / mt, (0, 2): 2 / mt, (1, 2): 1 / mt}
    loss_d = 2 * sum(smooth_l1(ds[p] - dt[p]) for p in ds) / 9

    def cos(points, i, j, k):
        u = [points[j][0] - points[i][0], points[j][1] - points[i][1]]
        v = [points[k][0] - points[i][0], points[k][1] - points[i][1]]
        nu, nv = math.hypot(*u), math.hypot(*v)
        if nu == 0 or nv == 0:
            return 0.0
        return (u[0] * v[0] + u[1] * v[1]) / (nu * nv)

    loss_a = sum(smooth_l1(cos(s, i, j, k) - cos(tt, i, j, k))
                 for i in range(3) for j in range(3) for k in range(3)) / 27
    rkd = make("rkd", [(2,)], [(2,)])
    assert rkd.pair_loss(t(s), t(tt)).item() == pytest.approx(25 * loss_d + 50 * loss_a, abs=1e-6)


def test_cc_value_by_hand():
    # δ = |e_s − e_t| = rows (1,2), (3,4), (0,0): (1·3 + 2·4 + 0)/2 = 5.5
    cc = make("cc", [(2,)], [(2,)])
    assert cc.pair_loss(t([[1, 2], [-3, 4], [0, 0]]), torch.zeros(3, 2, dtype=D)).item() == 5.5


def test_fitnet_pair_loss_is_mse():
    fitnet = make("fitnet", [(2,)], [(2,)])
    assert fitnet.pair_loss(t([[1, 2]]), t([[0, 0]])).item() == 2.5


def test_vid_value_by_hand():
    vid = make("vid", [(1, 1, 2)], [(1, 1, 2)], init_pred_var=5.0)
    for conv in vid.regressors[0]:
        if isinstance(conv, torch.nn.Conv2d):
            torch.nn.init.ones_(conv.weight)  # μ = relu(relu(x)) = x for x ≥ 0
    f_s, f_t = t([[[[1.0, 2.0]]]]), t([[[[0.0, 4.0]]]])
    var = vid.variance(0).item()
    assert var == pytest.approx(5.0, abs=1e-6)  # softplus(α) + eps starts at init_pred_var (α stored in float32)
    expected = (0.5 * (1 / var + math.log(var)) + 0.5 * (4 / var + math.log(var))) / 2
    assert vid.hint_loss([f_s], [f_t]).item() == pytest.approx(expected, abs=1e-10)


# ---------------------------------------------------------------- zeros and invariances

@pytest.mark.parametrize("name", ["at", "sp", "nst", "pkt", "rkd", "cc"])
def test_identical_features_give_exactly_zero(name):
    f = torch.rand(4, 3, 4, 4, dtype=D) + 0.1
    method = make(name, [(3, 4, 4)], [(3, 4, 4)])
    assert method.pair_loss(f, f.clone()).item() == 0.0


def test_at_is_invariant_to_positive_scaling_and_nonzero_for_different_maps():
    g = torch.Generator().manual_seed(0)
    f_s, f_t = torch.randn(3, 4, 5, 5, generator=g, dtype=D), torch.randn(3, 6, 5, 5, generator=g, dtype=D)
    at = make("at", [(4, 5, 5)], [(6, 5, 5)])
    base = at.pair_loss(f_s, f_t).item()
    assert base > 1e-3
    assert at.pair_loss(7.5 * f_s, f_t).item() == pytest.approx(base, rel=1e-12)
    assert at.pair_loss(f_s, 0.01 * f_t).item() == pytest.approx(base, rel=1e-12)


def test_rkd_is_invariant_to_scaling_the_teacher():
    s = torch.randn(5, 8, dtype=D)
    rkd = make("rkd", [(8,)], [(8,)])
    assert rkd.pair_loss(s, 3.0 * s).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name", ["at", "nst"])
def test_larger_map_is_average_pooled_to_the_smaller(name):
    g = torch.Generator().manual_seed(1)
    big, small = torch.rand(2, 3, 8, 8, generator=g, dtype=D), torch.rand(2, 5, 4, 4, generator=g, dtype=D)
    pooled = F.avg_pool2d(big, 2)
    m = make(name, [(3, 8, 8)], [(5, 4, 4)])
    assert m.pair_loss(big, small).item() == pytest.approx(m.pair_loss(pooled, small).item(), rel=1e-12)
    m = make(name, [(5, 4, 4)], [(3, 8, 8)])  # teacher larger this time
    assert m.pair_loss(small, big).item() == pytest.approx(m.pair_loss(small, pooled).item(), rel=1e-12)


def test_vector_methods_flatten_maps():
    f_s, f_t = torch.randn(4, 2, 3, 3, dtype=D), torch.randn(4, 5, 2, 2, dtype=D)
    for name in ("sp", "pkt", "rkd"):
        m = make(name, [(2, 3, 3)], [(5, 2, 2)])
        assert m.pair_loss(f_s, f_t).item() == m.pair_loss(f_s.reshape(4, -1), f_t.reshape(4, -1)).item()


# ---------------------------------------------------------------- KD

def test_kd_loss_against_direct_computation():
    ls, lt = t([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]), t([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    temp = 4.0
    total = 0.0
    for b in range(2):
        ps = [math.exp(v / temp) for v in ls[b].tolist()]
        pt = [math.exp(v / temp) for v in lt[b].tolist()]
        ps = [v / sum(ps) for v in ps]
        pt = [v / sum(pt) for v in pt]
        total += sum(q * math.log(q / p) for p, q in zip(ps, pt))
    assert kd_loss(ls, lt, temp).item() == pytest.approx(total / 2 * temp**2, rel=1e-12)


def test_kd_loss_zero_for_identical_logits_and_t_squared_scaling():
    logits = torch.randn(5, 10, dtype=D)
    assert abs(kd_loss(logits, logits.clone(), 4.0).item()) < 1e-14
    ls, lt = torch.randn(5, 10, dtype=D), torch.randn(5, 10, dtype=D)
    # T² · KL(softmax(lt/T) ‖ softmax(ls/T)) equals T² times the T = 1 loss of the scaled logits
    assert kd_loss(ls, lt, 3.0).item() == pytest.approx(9 * kd_loss(ls / 3, lt / 3, 1.0).item(), rel=1e-12)


def test_kd_loss_errors():
    with pytest.raises(PursuhintError, match="temperature 0"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 3), 0)
    with pytest.raises(PursuhintError, match=r"\(2, 3\) and \(2, 4\)"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 4), 4.0)


# ---------------------------------------------------------------- FitNet connector

@pytest.mark.parametrize(("s_shape", "t_shape"), [
    ((16, 16, 16), (32, 8, 8)),    # student larger (2×): strided 3×3
    ((16, 8, 8), (32, 16, 16)),    # student smaller (2×): transposed 4×4
    ((16, 8, 8), (64, 8, 8)),      # equal: 1×1
    ((8, 10, 10), (8, 4, 4)),      # larger, not 2×: 7×7 valid conv
    ((8, 4, 4), (16, 16, 16)),     # smaller, not 2×: upsample + 3×3 (extension)
    ((12,), (20,)),                # vectors: linear
])
def test_fitnet_connector_output_shapes(s_shape, t_shape):
    out = ConvReg(s_shape, t_shape)(torch.randn(2, *s_shape))
    assert tuple(out.shape) == (2, *t_shape)
    assert (out >= 0).all()  # BN + ReLU as the benchmark's ConvReg


def test_fitnet_connector_kinds():
    assert ConvReg((16, 16, 16), (32, 8, 8)).conv.kernel_size == (3, 3)
    assert isinstance(ConvReg((16, 8, 8), (32, 16, 16)).conv, torch.nn.ConvTranspose2d)
    assert ConvReg((16, 8, 8), (64, 8, 8)).conv.kernel_size == (1, 1)
    with pytest.raises(PursuhintError, match=r"\(16, 8, 8\) onto a teacher feature of shape \(20,\)"):
        ConvReg((16, 8, 8), (20,))


# ---------------------------------------------------------------- gradients

def _features(s_shapes, t_shapes, batch=4):
    g = torch.Generator().manual_seed(2)
    fs = [torch.randn(batch, *s, generator=g, dtype=D, requires_grad=True) for s in s_shapes]
    ft = [torch.randn(batch, *s, generator=g, dtype=D, requires_grad=True) for s in t_shapes]
    return fs, ft


@pytest.mark.parametrize("name", HINT_METHODS)
def test_gradients_flow_to_student_and_learnable_parts_not_teacher(name):
    s_shapes, t_shapes = [(4, 8, 8), (8, 4, 4)], [(6, 4, 4), (12, 8, 8)]
    method = make(name, s_shapes, t_shapes)
    fs, ft = _features(s_shapes, t_shapes)
    loss = method.forward_pairs(fs, ft)["hint"]
    assert set(method.forward_pairs(fs, ft)) == {"hint"}
    loss.backward()
    assert torch.isfinite(loss)
    for f in fs:
        assert f.grad is not None and torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0
    assert all(f.grad is None for f in ft)  # teacher features are detached
    for pname, p in method.named_parameters():
        if pname.startswith("connectors") and "bn" in pname:
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    if name == "vid":
        assert all(p.grad.abs().sum() > 0 for p in method.log_scales)
    if name == "fitnet":
        assert method.connectors[0].conv.weight.grad.abs().sum() > 0
    if name == "cc":
        assert method.embed_t[1].weight.grad.abs().sum() > 0


def test_hint_is_the_sum_of_pair_losses():
    s_shapes, t_shapes = [(4, 8, 8), (8, 4, 4)], [(6, 4, 4), (12, 8, 8)]
    at = make("at", s_shapes, t_shapes)
    fs, ft = _features(s_shapes, t_shapes)
    expected = at.pair_loss(fs[0], ft[0]) + at.pair_loss(fs[1], ft[1])
    assert at.hint_loss(fs, ft).item() == pytest.approx(expected.item(), rel=1e-14)


def test_half_precision_features_give_float32_losses():
    at = create_method("at", [(4, 8, 8)], [(6, 8, 8)])
    loss = at.hint_loss([torch.rand(2, 4, 8, 8, dtype=torch.bfloat16)], [torch.rand(2, 6, 8, 8, dtype=torch.bfloat16)])
    assert loss.dtype == torch.float32


# ---------------------------------------------------------------- CRD

def test_contrast_loss_by_hand():
    # m = 1 negative, Pn·m = 1: −(log(1/(2+ε)) + log(1/(2+ε))) = 2·log(2+ε)
    assert contrast_loss(t([[1.0, 1.0]]), n_data=1).item() == pytest.approx(2 * math.log(2 + 1e-7), rel=1e-12)


def test_crd_loss_finite_grads_and_memory_update():
    torch.manual_seed(0)
    method = create_method("crd", [], [], n_data=20, s_dim=6, t_dim=10, feat_dim=4)
    assert method.uses_crd and method.crd.memory.nce_k == 19  # clamped to n_data − 1
    before_s = method.crd.memory.memory_s.clone()
    before_t = method.crd.memory.memory_t.clone()
    emb_s = torch.randn(3, 6, requires_grad=True)
    emb_t = torch.randn(3, 10, requires_grad=True)
    index = torch.tensor([2, 5, 7])
    terms = method.forward_pairs([], [], emb_s=emb_s, emb_t=emb_t, index=index)
    assert set(terms) == {"hint", "crd"} and terms["hint"].item() == 0.0
    loss = terms["crd"]
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert emb_s.grad.abs().sum() > 0 and emb_t.grad is None
    for embed in (method.crd.embed_s, method.crd.embed_t):
        assert embed.linear.weight.grad.abs().sum() > 0
    mem = method.crd.memory
    changed = (mem.memory_s != before_s).any(dim=1)
    assert changed.nonzero().flatten().tolist() == [2, 5, 7]
    assert (mem.memory_t != before_t).any(dim=1).nonzero().flatten().tolist() == [2, 5, 7]
    assert torch.allclose(mem.memory_s[index].norm(dim=1), torch.ones(3))
    z = (mem.z_s.item(), mem.z_t.item())
    assert z[0] > 0 and z[1] > 0
    method.crd_loss(emb_s.detach(), emb_t.detach(), torch.tensor([0, 1, 3]))
    assert (mem.z_s.item(), mem.z_t.item()) == z  # Z is fixed by the first batch


def test_crd_with_given_contrast_idx_is_deterministic_in_loss():
    head = CRDHead(s_dim=5, t_dim=5, n_data=8, feat_dim=3, nce_k=4)
    state = {k: v.clone() for k, v in head.state_dict().items()}
    emb = torch.randn(2, 5)
    idx = torch.tensor([[0, 1, 2, 3, 4], [1, 5, 6, 7, 0]])
    first = head(emb, emb, torch.tensor([0, 1]), idx)
    head.load_state_dict(state)
    assert head(emb, emb, torch.tensor([0, 1]), idx).item() == first.item()


@pytest.mark.parametrize("base", HINT_METHODS)
def test_every_method_combines_with_crd(base):
    s_shapes, t_shapes = [(4, 8, 8)], [(6, 4, 4)]
    method = create_method(f"{base}+crd", s_shapes, t_shapes, n_data=50, s_dim=7, t_dim=9, nce_k=8)
    fs = [torch.randn(4, 4, 8, 8, requires_grad=True)]
    ft = [torch.randn(4, 6, 4, 4)]
    terms = method.forward_pairs(fs, ft, emb_s=torch.randn(4, 7), emb_t=torch.randn(4, 9), index=torch.arange(4))
    assert set(terms) == {"hint", "crd"}
    assert all(torch.isfinite(v) for v in terms.values())
    assert method.name == f"{base}+crd" and method.uses_crd
    with pytest.raises(PursuhintError, match="pass emb_s, emb_t"):
        method.forward_pairs(fs, ft)


def test_crd_requires_its_sizes():
    with pytest.raises(PursuhintError, match="needs parameter 'n_data'"):
        create_method("at+crd", [(4, 8, 8)], [(6, 4, 4)], s_dim=3, t_dim=3)
    with pytest.raises(PursuhintError, match="parameter 'n_data' is not valid for distillation method 'at'"):
        create_method("at", [(4, 8, 8)], [(6, 4, 4)], n_data=10)
    with pytest.raises(PursuhintError, match="has no CRD term"):
        create_method("at", [(4, 8, 8)], [(6, 4, 4)]).crd_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1))


# ---------------------------------------------------------------- registry and factory

@pytest.mark.parametrize("name", ["kd_only", "none"])
def test_no_hint_methods_return_zero(name):
    method = create_method(name, [(4, 8, 8)], [(6, 4, 4)])
    assert method.num_pairs == 0 and not method.uses_crd
    assert method.hint_loss([torch.randn(2, 4, 8, 8)], [torch.randn(2, 6, 4, 4)]).item() == 0.0
    assert method.forward_pairs([], [])["hint"].item() == 0.0


def test_unknown_method_lists_valid_names():
    with pytest.raises(PursuhintError) as err:
        create_method("attention", [], [])
    msg = str(err.value)
    assert msg.startswith("unknown distillation method 'attention'")
    for name in HINT_METHODS + ["kd_only", "none", "crd", "at+crd"]:
        assert name in msg.split("valid: ")[1].split(", ")
    with pytest.raises(PursuhintError, match=r"unknown distillation method 'fitnets' \(did you mean 'fitnet'\?\)"):
        create_method("fitnets", [], [])
    with pytest.raises(PursuhintError, match="unknown distillation method 'crd\\+crd'"):
        create_method("crd+crd", [], [])
    assert set(HINT_METHODS) <= set(METHODS.names())
    assert "vid+crd" in method_names()


def test_bad_params_and_shapes_are_errors():
    with pytest.raises(PursuhintError, match="parameter 'q' is not valid for distillation method 'at'; valid: p"):
        create_method("at", [(4, 8, 8)], [(6, 4, 4)], q=3)
    with pytest.raises(PursuhintError, match="1 student shapes and 2 teacher shapes"):
        create_method("sp", [(4,)], [(4,), (5,)])
    with pytest.raises(PursuhintError, match="needs \\(C, H, W\\) feature maps but got shape \\(16,\\)"):
        create_method("at", [(16,)], [(16,)])
    with pytest.raises(PursuhintError, match="feature shape \\(4, 8\\) is invalid"):
        create_method("sp", [(4, 8)], [(4,)])
    method = create_method("sp", [(4,)], [(4,)])
    with pytest.raises(PursuhintError, match="built for 1 hint pairs but got 2 student"):
        method.hint_loss([torch.zeros(2, 4)] * 2, [torch.zeros(2, 4)])
    with pytest.raises(PursuhintError, match="needs equal batch sizes of at least 2"):
        method.hint_loss([torch.zeros(1, 4)], [torch.zeros(1, 4)])


# ---------------------------------------------------------------- methods describe themselves

# β of each method in the CRD benchmark's training scripts (RepDistiller train_student.py, -b).
BENCHMARK_BETA = {"fitnet": 100.0, "at": 1000.0, "sp": 3000.0, "nst": 50.0, "vid": 1.0, "pkt": 30000.0,
                  "rkd": 1.0, "cc": 0.02, "crd": 0.0, "kd_only": 0.0, "none": 0.0, "dkd": 0.0,
                  "reviewkd": 1.0, "semckd": 400.0}  # ReviewKD's (mdistiller) and SemCKD's (its repository) published


def test_every_method_says_its_weight_and_whether_it_uses_hints():
    from pursuhint.distill.methods import hint_weight_for, method_class

    # the package's own methods: a plugin another test imported (the golden sweep's toy_method) registers too
    builtin = [name for name in METHODS if METHODS.get(name).__module__.startswith("pursuhint.")]
    assert {name: METHODS.get(name).default_weight for name in builtin} == BENCHMARK_BETA
    assert {name for name in builtin if METHODS.get(name).uses_hints} == set(HINT_METHODS) | {"reviewkd", "semckd"}
    assert not METHODS.get("reviewkd").reads_hint_set({}) and not METHODS.get("semckd").reads_hint_set({})
    assert METHODS.get("semckd").reads_hint_set({"candidates": "hints"}) and METHODS.get("at").reads_hint_set({})
    assert hint_weight_for("pkt+crd", None) == 30000.0 and hint_weight_for("pkt", 2.5) == 2.5
    assert method_class("vid+crd") is METHODS.get("vid")


def test_crd_is_its_own_class_and_always_has_its_head():
    from pursuhint.distill.methods import CRD, NoHint, adds_crd

    assert METHODS.get("crd") is CRD and METHODS.get("kd_only") is NoHint is METHODS.get("none")
    assert adds_crd("crd") and adds_crd("at+crd") and adds_crd("kd_only+crd")
    assert not adds_crd("at") and not adds_crd("kd_only")
    assert "crd+crd" not in method_names()


def test_a_method_without_its_weight_is_refused_at_registration():
    from pursuhint.distill.methods import DistillMethod

    class Unweighted(DistillMethod):
        def pair_loss(self, f_s, f_t, k=0):
            return (f_s - f_t).pow(2).mean()

    class Negative(Unweighted):
        default_weight = -1.0

    before = METHODS.names()
    for cls in (Unweighted, Negative):
        with pytest.raises(TypeError, match=r"must set the class attribute default_weight"):
            METHODS.register("unweighted", cls)
    with pytest.raises(TypeError, match="must be a DistillMethod subclass"):
        METHODS.register("not_a_method", torch.nn.Identity)
    assert METHODS.names() == before  # nothing half-registered


def test_rkd_never_makes_the_device_wait_for_the_host():
    """RKD's distance term divides by the mean off-diagonal distance. It used boolean indexing (``d[mask]``),
    whose data-dependent size forces a host read every step on a GPU; now it is the sum over B(B − 1), the
    same number, and no op of the loss has a data-dependent output size."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from pursuhint.distill.methods.relations import _normalised_distances, pairwise_distances

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.add(str(func.overloadpacket))
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    e = torch.randn(6, 5)
    d = pairwise_distances(e)
    off = ~torch.eye(6, dtype=torch.bool)
    assert torch.allclose(_normalised_distances(e), d / d[off].mean(), rtol=1e-6, atol=0)
    method = create_method("rkd", [(8, 4, 4)], [(8, 4, 4)])
    f_s, f_t = torch.randn(6, 8, 4, 4, requires_grad=True), torch.randn(6, 8, 4, 4)
    with Ops() as ops:
        method.hint_loss([f_s], [f_t]).backward()
    assert not {"aten.nonzero", "aten.masked_select", "aten.index", "aten._local_scalar_dense"} & ops.names, ops.names


def test_connectors_are_placed_in_the_devices_memory_format(monkeypatch):
    """FitNet's and VID's connectors (conv weights) go channels_last where the inputs are, not only ``.to``."""
    from pursuhint.infra import devices

    monkeypatch.setattr(devices, "uses_channels_last", lambda device: True)
    for name in ("fitnet", "vid"):
        method = devices.place_model(create_method(name, [(8, 4, 4)], [(16, 4, 4)]), torch.device("cpu"))
        convs = [p for p in method.parameters() if p.dim() == 4]
        assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs), name
