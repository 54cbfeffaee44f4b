"""The torchdistill export builds and trains with torchdistill's own code (1.1): its fragment's hooks register on
pursuhint's zoo models, its ``WeightedSumLoss`` builds from the registry, one forward and backward step runs,
and where torchdistill has the method's loss the criterion equals pursuhint's own loss."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
import yaml
from torchdistill.core.distillation import DistillationBox
from torchdistill.core.forward_hook import ForwardHookManager
from torchdistill.losses.registry import get_high_level_loss

from pursuhint.distill.kd import kd_loss
from pursuhint.distill.methods import create_method
from pursuhint.export import ShapeProbe, student_layers_of, write_hint_sets
from pursuhint.hints.hintset import HintSet
from pursuhint.hints.layers import candidate_layers
from pursuhint.models import create_model

INPUT = (3, 16, 16)
STUDENT = "layer1.0,layer2.0,layer3.0"  # resnet8's stage ends: 16x16, 8x8, 4x4 at a 16-px input
# resnet56 positions (0-based among its 27 blocks) of the hint points:
ALIGNED = [2, 13, 22]  # layer1.2, layer2.4, layer3.4: every pair the same HxW
STUDENT_LARGER = [10, 14, 22]  # layer2.1 (8x8) with the student's layer1.0 (16x16)
STUDENT_SMALLER = [2, 7, 22]  # layer1.7 (16x16) with the student's layer2.0 (8x8)
BETA = 7.5


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return create_model("resnet56", 10).eval(), create_model("resnet8", 10)


def make_hint_set(teacher, positions, method, **provenance) -> HintSet:
    """A hint set as ``top_hint_sets`` gives export: its layers, score and the trial's provenance."""
    names = [c.name for c in candidate_layers(teacher, "block", input_shape=INPUT)]
    prov = {"sweep": "demo", "trial_id": "t_0001", "method": method, "hint_weight": BETA, "kd_weight": 0.0,
            "ce_weight": 1.0, "lr": 0.05, "baseline": "none", "student_layers": STUDENT, **provenance}
    return HintSet(layers=[names[i] for i in positions], indices=list(positions), n_hints=len(positions),
                   candidates=names, score=91.5, provenance=prov)


def export(hs, models, tmp_path, probe=True) -> tuple[str, dict]:
    teacher, student = models
    (path,) = write_hint_sets([hs], tmp_path, "torchdistill",
                              probe=ShapeProbe(teacher, student, INPUT) if probe else None)
    text = path.read_text()
    return text, yaml.safe_load(text)


def batch(n=6):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, *INPUT, generator=g), torch.randint(0, 10, (n,), generator=g)


def box_step(frag, models):
    """torchdistill's DistillationBox builds the fragment (wrappers, hooks, criterion) and takes one step's
    forward and backward; returns the loss, the student's CE alone, and the box."""
    teacher, student = copy.deepcopy(models)
    box = DistillationBox(teacher, student, {}, {**copy.deepcopy(frag), "num_epochs": 1}, torch.device("cpu"),
                          None, False, 1)
    x, y = batch()
    loss = box.forward_process(x, targets=y)
    loss.backward()
    with torch.no_grad():
        ce = F.cross_entropy(student(x), y)
    return loss, ce, box


def assert_steps(frag, models, hint_term: bool = True):
    loss, ce, box = box_step(frag, models)
    assert torch.isfinite(loss)
    grads = [p.grad for p in box.student_model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    if hint_term:  # the criterion is more than cross-entropy
        assert not math.isclose(loss.item(), ce.item(), rel_tol=1e-4)
    else:
        assert loss.item() == pytest.approx(ce.item(), rel=1e-5)
    return box


def hint_terms(frag) -> dict:
    return {k: v for k, v in frag["criterion"]["kwargs"]["sub_terms"].items() if k not in ("ce", "kd")}


# ----------------------------------------------------------------------------------------------- AT


def test_at_fragment_is_torchdistills_at_with_the_sweeps_weights(models, tmp_path):
    hs = make_hint_set(models[0], ALIGNED, "at")
    text, frag = export(hs, models, tmp_path)
    assert frag["teacher"]["forward_hook"]["output"] == hs.layers
    assert frag["student"]["forward_hook"]["output"] == student_layers_of(hs)
    assert frag["teacher"]["requires_grad"] is False and frag["student"]["requires_grad"] is True
    crit = frag["criterion"]
    assert crit["key"] == "WeightedSumLoss"
    terms = crit["kwargs"]["sub_terms"]
    assert list(terms) == ["ce", "at"] and terms["ce"]["weight"] == 1.0
    at = terms["at"]
    assert at["weight"] == BETA and at["criterion"]["key"] == "ATLoss"
    assert at["criterion"]["kwargs"]["at_pairs"]["pair2"] == {
        "teacher": {"io": "output", "path": "layer2.4"}, "student": {"io": "output", "path": "layer2.0"}, "weight": 1.0}
    assert frag["pursuhint_hint_set"]["layers"] == hs.layers
    assert text.startswith("# pursuhint hint set from sweep demo trial t_0001")
    assert_steps(frag, models)


def test_at_leaves_out_a_pair_of_different_size_and_says_so(models, tmp_path):
    hs = make_hint_set(models[0], STUDENT_LARGER, "at")
    text, frag = export(hs, models, tmp_path)
    assert list(hint_terms(frag)["at"]["criterion"]["kwargs"]["at_pairs"]) == ["pair2", "pair3"]
    assert "# pair1 left out: ATLoss compares attention maps of equal HxW (teacher 8x8, student 16x16)" in text
    # the hooks still cover every pair, for a loss the user supplies
    assert frag["teacher"]["forward_hook"]["output"] == hs.layers
    assert_steps(frag, models)


@pytest.mark.parametrize("method,positions,kd_weight", [
    ("at", ALIGNED, 0.0), ("at", ALIGNED, 0.9), ("rkd", STUDENT_SMALLER, 0.5), ("rkd", STUDENT_LARGER, 0.0)])
def test_criterion_equals_pursuhints_loss(models, tmp_path, method, positions, kd_weight):
    """Hooks by ForwardHookManager, the criterion by torchdistill's registry: the same value as pursuhint's
    CE + KD + β·hint on the same features."""
    teacher, student = copy.deepcopy(models)
    hs = make_hint_set(teacher, positions, method, kd_weight=kd_weight, temperature=3.0)
    _, frag = export(hs, models, tmp_path)
    criterion = get_high_level_loss(frag["criterion"])
    hooks = {"teacher": ForwardHookManager("cpu"), "student": ForwardHookManager("cpu")}
    for side, model in (("teacher", teacher), ("student", student)):
        for path in frag[side]["forward_hook"]["output"]:
            hooks[side].add_hook(model, path, requires_input=False, requires_output=True)
    x, y = batch()
    with torch.no_grad():
        logits_t = teacher(x)
    logits_s = student(x)
    io = {side: {**hooks[side].pop_io_dict(), ".": {"output": out}}
          for side, out in (("teacher", logits_t), ("student", logits_s))}
    loss = criterion(io, {}, y)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in student.parameters())

    students = student_layers_of(hs)
    shapes = ShapeProbe(*models, INPUT).pair_shapes(hs.layers, students)
    method_ = create_method(method, [s for s, _ in shapes], [t for _, t in shapes])
    expected = F.cross_entropy(logits_s, y) + BETA * method_.hint_loss(
        [io["student"][s]["output"] for s in students], [io["teacher"][t]["output"] for t in hs.layers])
    if kd_weight:
        expected = expected + kd_weight * kd_loss(logits_s, logits_t, 3.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() != pytest.approx(F.cross_entropy(logits_s, y).item(), rel=1e-3)


def test_sp_is_torchdistills_spkd_whose_rows_are_l1_normalised(models, tmp_path):
    """SPKDLoss per pair, any sizes; torchdistill's normalize(G, 1) is an L1 row norm (pursuhint: L2), said in
    the fragment and checked here against that formula."""
    teacher, student = models
    hs = make_hint_set(teacher, STUDENT_LARGER, "sp")
    text, frag = export(hs, models, tmp_path)
    terms = hint_terms(frag)
    assert list(terms) == ["sp_pair1", "sp_pair2", "sp_pair3"]
    assert terms["sp_pair1"]["criterion"] == {"key": "SPKDLoss", "kwargs": {
        "student_output_path": "layer1.0", "teacher_output_path": "layer2.1", "reduction": "batchmean"}}
    assert "unit L1 norm" in text
    spkd = get_high_level_loss({"key": "WeightedSumLoss", "kwargs": {"sub_terms": {"sp": terms["sp_pair1"]}}})
    f_s, f_t = torch.randn(6, 16, 16, 16), torch.randn(6, 32, 8, 8)
    value = spkd({"student": {"layer1.0": {"output": f_s}}, "teacher": {"layer2.1": {"output": f_t}}}, {}, None)

    def gram(f, p):
        f = f.reshape(f.shape[0], -1)
        return F.normalize(f @ f.t(), p=p, dim=1)

    assert value.item() == pytest.approx(BETA * (gram(f_t, 1) - gram(f_s, 1)).pow(2).sum().item() / 36, rel=1e-5)
    pursuhint_sp = create_method("sp", [(16, 16, 16)], [(32, 8, 8)]).hint_loss([f_s], [f_t])
    assert pursuhint_sp.item() == pytest.approx((gram(f_t, 2) - gram(f_s, 2)).pow(2).sum().item() / 36, rel=1e-5)
    assert_steps(frag, models)


# ----------------------------------------------------------------------------------------------- FitNet and VID


def test_fitnet_connectors_are_a_student_wrapper(models, tmp_path):
    hs = make_hint_set(models[0], STUDENT_LARGER, "fitnet", kd_weight=0.5)
    text, frag = export(hs, models, tmp_path)
    wrapper = frag["student"]["auxiliary_model_wrapper"]
    assert wrapper["key"] == "Connector4DAB"
    connectors = wrapper["kwargs"]["connectors"]
    # pair1: the student's 16x16 map regressed onto the teacher's 8x8 by a strided 3x3 conv, as pursuhint's ConvReg
    assert connectors["pair1"]["path"] == "student_model.layer1.0"
    assert connectors["pair1"]["conv2d_kwargs"] == {"in_channels": 16, "out_channels": 32, "kernel_size": 3,
                                                    "stride": 2, "padding": 1}
    assert connectors["pair2"]["conv2d_kwargs"]["kernel_size"] == 1
    assert frag["student"]["forward_hook"]["output"] == [
        "student_model.layer1.0", "student_model.layer2.0", "student_model.layer3.0",
        "connector_dict.pair1", "connector_dict.pair2", "connector_dict.pair3"]
    terms = frag["criterion"]["kwargs"]["sub_terms"]
    assert list(terms) == ["ce", "kd", "fitnet_pair1", "fitnet_pair2", "fitnet_pair3"]
    assert terms["kd"]["weight"] == pytest.approx(0.5 * 16)  # kd_weight x T^2 (T = 4, pursuhint's default)
    assert terms["fitnet_pair1"]["weight"] == BETA
    assert terms["fitnet_pair1"]["criterion_wrapper"]["kwargs"]["target"]["module_path"] == hs.layers[0]
    assert "without its final ReLU" in text
    box = assert_steps(frag, models)
    connector = box.student_model.connector_dict["pair1"]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in connector.parameters())


def test_fitnet_pair_with_a_smaller_student_map_is_named_not_built(models, tmp_path):
    hs = make_hint_set(models[0], STUDENT_SMALLER, "fitnet")
    text, frag = export(hs, models, tmp_path)
    assert list(frag["student"]["auxiliary_model_wrapper"]["kwargs"]["connectors"]) == ["pair1", "pair3"]
    assert list(hint_terms(frag)) == ["fitnet_pair1", "fitnet_pair3"]
    assert "# pair2 left out: the student map (8x8) is smaller than the teacher's (16x16)" in text
    assert_steps(frag, models)


def test_vid_regressors_and_loss(models, tmp_path):
    hs = make_hint_set(models[0], STUDENT_LARGER, "vid")
    text, frag = export(hs, models, tmp_path)
    assert frag["student"]["auxiliary_model_wrapper"]["key"] == "VariationalDistributor4VID"
    vid = hint_terms(frag)["vid"]
    assert vid["criterion"]["key"] == "VIDLoss" and vid["weight"] == BETA
    assert list(vid["criterion"]["kwargs"]["feature_pairs"]) == ["pair2", "pair3"]
    assert "# pair1 left out: VIDLoss compares (C, H, W) maps of equal HxW" in text
    assert_steps(frag, models)


def test_without_shapes_the_fragment_still_builds(models, tmp_path):
    """No ShapeProbe (the sweep's models could not be built): AT keeps every pair, FitNet has no connectors;
    the comments say what is unchecked or missing."""
    text, frag = export(make_hint_set(models[0], ALIGNED, "at"), models, tmp_path / "at", probe=False)
    assert list(hint_terms(frag)["at"]["criterion"]["kwargs"]["at_pairs"]) == ["pair1", "pair2", "pair3"]
    assert "feature shapes were not known at export" in text
    assert_steps(frag, models)
    text, frag = export(make_hint_set(models[0], ALIGNED, "fitnet"), models, tmp_path / "fit", probe=False)
    assert "auxiliary_model_wrapper" not in frag["student"] and hint_terms(frag) == {}
    assert frag["student"]["forward_hook"]["output"] == STUDENT.split(",")
    assert "FitNet's connectors need the pairs' channels and sizes" in text
    assert_steps(frag, models, hint_term=False)


# ----------------------------------------------------------------------------------------------- no hint loss


def test_kd_only_is_ce_plus_kd(models, tmp_path):
    hs = make_hint_set(models[0], ALIGNED, "kd_only", kd_weight=0.9, ce_weight=0.1, hint_weight=0.0,
                       student_layers="")
    _, frag = export(hs, models, tmp_path)
    terms = frag["criterion"]["kwargs"]["sub_terms"]
    assert list(terms) == ["ce", "kd"] and terms["ce"]["weight"] == 0.1
    assert terms["kd"]["criterion"]["key"] == "KDLoss" and terms["kd"]["weight"] == pytest.approx(0.9 * 16)
    assert_steps(frag, models)


@pytest.mark.parametrize("method,says", [
    ("nst", "torchdistill 1.1 has no NST loss"), ("cc", "not pursuhint's CC"),
    ("my_plugin", "method 'my_plugin' has no torchdistill loss known to pursuhint")])
def test_methods_torchdistill_lacks_carry_hooks_and_a_comment(models, tmp_path, method, says):
    hs = make_hint_set(models[0], ALIGNED, method)
    text, frag = export(hs, models, tmp_path)
    assert frag["teacher"]["forward_hook"]["output"] == hs.layers
    assert frag["student"]["forward_hook"]["output"] == STUDENT.split(",")
    assert hint_terms(frag) == {}
    comment = next(line for line in text.splitlines() if "hint loss not in this criterion" in line)
    assert comment.startswith("# ") and says in comment and f"weight beta = {BETA:g}" in comment
    assert_steps(frag, models, hint_term=False)


def test_crd_term_is_named_not_built(models, tmp_path):
    text, frag = export(make_hint_set(models[0], ALIGNED, "at+crd"), models, tmp_path)
    assert "at" in hint_terms(frag)
    assert "# the CRD term (weight 0.8 in pursuhint) is not in this criterion" in text
    assert_steps(frag, models)
    tuned = make_hint_set(models[0], ALIGNED, "at+crd")
    tuned.provenance["method_params"] = '{"crd_weight": 1.5}'
    text, _ = export(tuned, models, tmp_path / "tuned")
    assert "# the CRD term (weight 1.5 in pursuhint) is not in this criterion" in text


# ----------------------------------------------------------------------------------------------- shapes


def test_shape_probe_from_config():
    from pursuhint.config import config_from_text

    from conftest import TEACHER_YAML

    cfg = config_from_text(TEACHER_YAML)
    probe = ShapeProbe.from_config(cfg)
    channels, size, _ = probe.input_shape
    shapes = probe.pair_shapes(["layer1.0", "layer3.0"], ["layer1.0", "layer3.0"])
    assert [s[1:] for s, _ in shapes] == [(size, size), (math.ceil(size / 4), math.ceil(size / 4))]
    assert shapes[0][0][0] == 16 and channels >= 1


def test_fragment_refuses_student_layers_that_do_not_match(models, tmp_path):
    from pursuhint.errors import PursuhintError

    hs = make_hint_set(models[0], ALIGNED, "at", student_layers="layer1.0,layer2.0")
    with pytest.raises(PursuhintError, match="3 hint layers but 2 student layers"):
        export(hs, models, tmp_path)


def test_export_command_builds_the_sweeps_models_for_the_shapes(tmp_path, capsys):
    """``pursuhint export --format torchdistill`` reads the sweep's config (here from Tune's folder) and builds
    its teacher and student for the pairs' shapes; without a config it warns and exports unchecked."""
    import json

    from conftest import TEACHER_YAML

    from pursuhint.cli import _shape_probe
    from pursuhint.search.record import SweepRecord
    from pursuhint.search.layout import MARKER

    (tmp_path / "ray" / "t_sweep").mkdir(parents=True)
    (tmp_path / "ray" / "t_sweep" / MARKER).write_text(json.dumps({"name": "t_sweep", "config_yaml": TEACHER_YAML}))
    probe = _shape_probe(SweepRecord("t_sweep", storage_path=str(tmp_path / "ray")))
    assert probe is not None and probe.input_shape[1:] == (16, 16)
    assert (len(probe.teacher.layer1), len(probe.student.layer1)) == (9, 1)  # resnet56 and resnet8
    elsewhere = SweepRecord("t_sweep", tracking_uri=(tmp_path / "mlruns").as_uri(),
                            storage_path=str(tmp_path / "elsewhere"))
    assert _shape_probe(elsewhere) is None
    assert "does not check pair sizes" in capsys.readouterr().err
