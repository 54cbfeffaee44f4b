"""The model zoo: CRD-benchmark layouts (names, shapes, parameter counts), hint-point stages, torchvision."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pursuhint.errors import ModelError
from pursuhint.models import (MODELS, HintModel, available_models, create_model, model_block_stages, model_classifier,
                              require_block_stages, require_classifier)
from pursuhint.models.shufflenet import channel_shuffle
from pursuhint.models.wrn import WideBasic

# Exact parameter counts at 100 classes. Each equals the count of the corresponding RepDistiller
# model (verified key-for-key and shape-for-shape against its models/*.py); resnet8 by hand:
# conv1 432 + bn1 32 + layer1 4672 + layer2 14528 + layer3 57728 + fc 6500 = 83892.
PARAMS_100 = {
    "resnet8": 83_892, "resnet14": 181_108, "resnet20": 278_324, "resnet32": 472_756,
    "resnet44": 667_188, "resnet56": 861_620, "resnet110": 1_736_564,
    "resnet8x4": 1_233_540, "resnet32x4": 7_433_860,
    "wrn_16_1": 180_916, "wrn_16_2": 703_284, "wrn_40_1": 569_780, "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028, "vgg11": 9_277_284, "vgg13": 9_462_180, "vgg16": 14_774_436, "vgg19": 20_086_692,
    "mobilenetv2": 812_836, "shufflev1": 949_258, "shufflev2": 1_355_528, "resnet50": 23_705_252,
}
STAGE_SIZES = {
    "resnet8": [1, 1, 1], "resnet14": [2, 2, 2], "resnet20": [3, 3, 3], "resnet32": [5, 5, 5],
    "resnet44": [7, 7, 7], "resnet56": [9, 9, 9], "resnet110": [18, 18, 18],
    "resnet8x4": [1, 1, 1], "resnet32x4": [5, 5, 5],
    "wrn_16_1": [2, 2, 2], "wrn_16_2": [2, 2, 2], "wrn_40_1": [6, 6, 6], "wrn_40_2": [6, 6, 6],
    "vgg8": [1, 1, 1, 1], "vgg11": [1, 1, 1, 1], "vgg13": [1, 1, 1, 1], "vgg16": [1, 1, 1, 1], "vgg19": [1, 1, 1, 1],
    "mobilenetv2": [3, 3, 7, 4], "shufflev1": [4, 8, 4], "shufflev2": [4, 8, 4], "resnet50": [3, 4, 6, 3],
}
CLASSIFIER = {
    **{n: "fc" for n in STAGE_SIZES if n.startswith(("resnet", "wrn")) and n != "resnet50"},
    **{n: "classifier" for n in STAGE_SIZES if n.startswith("vgg")},
    "mobilenetv2": "classifier.0", "shufflev1": "linear", "shufflev2": "linear", "resnet50": "linear",
}
ZOO = list(PARAMS_100)
_cache: dict[str, nn.Module] = {}


def zoo_model(name: str) -> nn.Module:
    """One 100-class instance per architecture for the whole module (building the big ones takes time)."""
    if name not in _cache:
        _cache[name] = create_model(name, 100).eval()
    return _cache[name]


def test_registry_lists_exactly_the_zoo_in_order() -> None:
    assert available_models() == ZOO
    assert set(MODELS.names()) == set(ZOO)


@pytest.mark.parametrize("name", ZOO)
def test_logits_shape_at_several_input_sizes(name: str) -> None:
    model = zoo_model(name)
    with torch.no_grad():
        for size in (32, 16, 8, 40):
            out = model(torch.randn(2, 3, size, size))
            assert isinstance(out, torch.Tensor) and out.shape == (2, 100), (name, size)
            assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ZOO)
def test_parameter_count_matches_benchmark(name: str) -> None:
    assert sum(p.numel() for p in zoo_model(name).parameters()) == PARAMS_100[name]


@pytest.mark.parametrize("name", ZOO)
def test_block_stages_are_real_modules_in_execution_order(name: str) -> None:
    model = zoo_model(name)
    stages = model.block_stages()
    assert [len(s) for s in stages] == STAGE_SIZES[name]
    assert model_block_stages(model) == stages
    flat = [p for s in stages for p in s]
    modules = dict(model.named_modules())
    order: list[str] = []
    sizes: dict[str, tuple[int, int]] = {}

    def hook(path: str):
        def record(mod, args, out) -> None:
            order.append(path)
            sizes[path] = tuple(out.shape[-2:])

        return record

    handles = [modules[p].register_forward_hook(hook(p)) for p in flat]
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    for h in handles:
        h.remove()
    assert order == flat  # each runs exactly once, in depth order
    # one resolution per stage, shrinking from stage to stage (VGG's block3 and block4 share 4×4 at 32 px)
    per_stage = [{sizes[p] for p in s} for s in stages]
    assert all(len(r) == 1 for r in per_stage), per_stage
    heights = [next(iter(r))[0] for r in per_stage]
    assert heights == sorted(heights, reverse=True) and heights[0] > heights[-1]
    if not name.startswith("vgg"):
        assert len(set(heights)) == len(heights)


@pytest.mark.parametrize("name", ZOO)
def test_classifier_path_names_the_final_linear_on_the_embedding(name: str) -> None:
    model = zoo_model(name)
    assert model.classifier_path == CLASSIFIER[name] == model_classifier(model)
    head = model.get_submodule(model.classifier_path)
    assert isinstance(head, nn.Linear) and head.out_features == 100
    seen: list[torch.Size] = []
    handle = head.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape))
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    handle.remove()
    assert seen == [torch.Size([2, head.in_features])]


@pytest.mark.parametrize("name", ["resnet20", "wrn_16_2", "vgg8", "mobilenetv2", "shufflev1", "shufflev2", "resnet50"])
def test_in_channels_changes_only_the_first_conv(name: str) -> None:
    gray = create_model(name, 7, in_channels=1).eval()
    rgb_state = create_model(name, 7).state_dict()
    gray_state = gray.state_dict()
    assert list(gray_state) == list(rgb_state)
    differing = [k for k in rgb_state if rgb_state[k].shape != gray_state[k].shape]
    assert len(differing) == 1 and gray_state[differing[0]].shape[1] == 1 and rgb_state[differing[0]].shape[1] == 3
    with torch.no_grad():
        assert gray(torch.randn(2, 1, 16, 16)).shape == (2, 7)


def test_resnet20_state_dict_keys() -> None:
    state = zoo_model("resnet20").state_dict()
    for key in ("conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer1.2.bn2.bias",
                "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_var",
                "layer3.2.bn2.num_batches_tracked", "fc.weight", "fc.bias"):
        assert key in state, key
    assert "layer1.0.downsample.0.weight" not in state  # 16 → 16 channels: identity shortcut
    assert state["layer2.0.downsample.0.weight"].shape == (32, 16, 1, 1)
    assert state["fc.weight"].shape == (100, 64)
    assert not any(k.endswith("bias") and "conv" in k for k in state)  # convs have no bias
    assert len(state) == 128


def test_resnet8x4_projects_in_the_first_stage() -> None:
    state = zoo_model("resnet8x4").state_dict()
    assert state["conv1.weight"].shape == (32, 3, 3, 3)
    assert state["layer1.0.downsample.0.weight"].shape == (64, 32, 1, 1)
    assert state["fc.weight"].shape == (100, 256)


def test_wrn_16_2_state_dict_keys() -> None:
    state = zoo_model("wrn_16_2").state_dict()
    assert state["conv1.weight"].shape == (16, 3, 3, 3)
    assert state["block1.layer.0.bn1.weight"].shape == (16,)
    assert state["block1.layer.0.convShortcut.weight"].shape == (32, 16, 1, 1)
    assert "block1.layer.1.convShortcut.weight" not in state
    assert state["block3.layer.1.conv2.weight"].shape == (128, 128, 3, 3)
    assert state["bn1.running_var"].shape == (128,)
    assert state["fc.weight"].shape == (100, 128) and "fc.bias" in state
    assert len(state) == 83


def test_vgg13_state_dict_keys() -> None:
    state = zoo_model("vgg13").state_dict()
    assert state["block0.0.weight"].shape == (64, 3, 3, 3) and state["block0.0.bias"].shape == (64,)
    assert state["block0.1.running_mean"].shape == (64,)
    assert state["block0.3.weight"].shape == (64, 64, 3, 3) and "block0.4.weight" in state
    assert "block0.6.weight" not in state
    assert state["block4.4.num_batches_tracked"].shape == ()
    assert state["classifier.weight"].shape == (100, 512)
    assert len(state) == 72


def test_mobilenetv2_state_dict_keys() -> None:
    state = zoo_model("mobilenetv2").state_dict()
    assert state["conv1.0.weight"].shape == (16, 3, 3, 3)
    assert state["blocks.0.0.conv.0.weight"].shape == (16, 16, 1, 1)  # t = 1 in the first stage
    assert state["blocks.1.0.conv.3.weight"].shape == (48, 1, 3, 3)  # depthwise, 8 × 6 channels
    assert state["blocks.6.0.conv.7.running_var"].shape == (160,)
    assert state["conv2.0.weight"].shape == (1280, 160, 1, 1)
    assert state["classifier.0.weight"].shape == (100, 1280)
    assert len(state) == 320


def test_shufflenet_and_resnet50_state_dict_keys() -> None:
    v1 = zoo_model("shufflev1").state_dict()
    assert v1["layer1.0.conv1.weight"].shape == (54, 24, 1, 1)  # the stem's 24 channels are not grouped
    assert v1["layer1.1.conv1.weight"].shape == (60, 80, 1, 1)  # groups = 3
    assert v1["linear.weight"].shape == (100, 960)
    v2 = zoo_model("shufflev2").state_dict()
    assert v2["layer1.0.conv5.weight"].shape == (58, 58, 1, 1) and v2["layer1.3.bn3.bias"].shape == (58,)
    assert v2["conv2.weight"].shape == (1024, 464, 1, 1) and v2["linear.weight"].shape == (100, 1024)
    r50 = zoo_model("resnet50").state_dict()
    assert r50["layer1.0.shortcut.0.weight"].shape == (256, 64, 1, 1)
    assert "layer1.1.shortcut.0.weight" not in r50
    assert r50["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1) and r50["linear.weight"].shape == (100, 2048)


def _zero_convs_identity_bn(module: nn.Module) -> None:
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()  # mean 0, var 1, weight 1, bias 0 → identity up to eps


def test_resnet_block_output_is_relu_of_sum_and_its_relu_child_sees_the_preact() -> None:
    block = create_model("resnet8", 10).layer1[0].eval()
    _zero_convs_identity_bn(block)
    x = torch.randn(2, 16, 8, 8)
    seen: list[torch.Tensor] = []
    block.relu.register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))
    with torch.no_grad():
        out = block(x)
    assert torch.equal(out, F.relu(x))  # residual branch is zero: output = ReLU(identity shortcut)
    assert torch.equal(seen[-1], x)  # the last call of ``relu`` receives the pre-activation sum


def test_wrn_shortcut_uses_raw_input_when_widths_match_and_activated_input_otherwise() -> None:
    same = WideBasic(8, 8, 1).eval()
    change = WideBasic(8, 16, 2).eval()
    _zero_convs_identity_bn(same)
    _zero_convs_identity_bn(change)
    with torch.no_grad():
        nn.init.ones_(change.convShortcut.weight)
        x = torch.randn(2, 8, 6, 6)
        assert torch.equal(same(x), x)  # no ReLU on the identity path
        expected = F.relu(x / (1 + 1e-5) ** 0.5)[:, :, ::2, ::2].sum(1, keepdim=True).expand(2, 16, 3, 3)
        torch.testing.assert_close(change(x), expected)


def test_vgg_block_outputs_are_post_relu() -> None:
    model = zoo_model("vgg8")
    outs: list[torch.Tensor] = []
    handles = [model.get_submodule(p).register_forward_hook(lambda m, a, o: outs.append(o))
               for s in model.block_stages() for p in s]
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    for h in handles:
        h.remove()
    assert len(outs) == 4 and all(o.min() >= 0 for o in outs) and all((o == 0).any() for o in outs)


def test_channel_shuffle_by_hand() -> None:
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    assert channel_shuffle(x, 3).flatten().tolist() == [0, 2, 4, 1, 3, 5]


def test_unknown_architecture_and_bad_sizes_are_model_errors() -> None:
    with pytest.raises(ModelError, match=r"unknown architecture 'resnet_20' \(did you mean 'resnet20'\?\); valid: resnet8"):
        create_model("resnet_20", 10)
    with pytest.raises(ModelError, match=r"num_classes must be a positive integer, got 0"):
        create_model("resnet20", 0)
    with pytest.raises(ModelError, match=r"in_channels must be a positive integer, got 2.5"):
        create_model("resnet20", 10, in_channels=2.5)


def test_torchvision_resnet18_has_stages_and_takes_gray_images() -> None:
    model = create_model("torchvision:resnet18", 10).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert model_block_stages(model) == [[f"layer{s}.{i}" for i in range(2)] for s in range(1, 5)]
    assert model_classifier(model) == "fc" and model.fc.out_features == 10
    gray = create_model("torchvision:resnet18", 10, in_channels=1).eval()
    assert gray.conv1.weight.shape == (64, 1, 7, 7)
    assert (gray.conv1.stride, gray.conv1.padding, gray.conv1.bias) == ((2, 2), (3, 3), None)
    with torch.no_grad():
        assert gray(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    restored = pickle.loads(pickle.dumps(gray))  # Ray ships models by pickling
    assert restored.block_stages() == gray.block_stages()
    assert isinstance(restored, type(gray))


def test_other_torchvision_models_have_no_stages_but_a_classifier() -> None:
    model = create_model("torchvision:mobilenet_v3_small", 5, in_channels=4)
    assert model_block_stages(model) == []
    assert model_classifier(model) == "classifier.3"
    assert model.features[0][0].weight.shape[1] == 4
    assert model_block_stages(nn.Linear(2, 2)) == [] and model_classifier(nn.ReLU()) is None
    assert not isinstance(model, HintModel) and require_classifier(model, "CRD") == "classifier.3"
    with pytest.raises(ModelError, match=r"cannot find the classifier of ReLU for CRD; give the model a "
                                         r"`classifier_path` attribute"):
        require_classifier(nn.ReLU(), "CRD")


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "vgg8", "mobilenetv2", "shufflev1", "shufflev2", "resnet50",
                                  "torchvision:resnet18"])
def test_the_zoo_and_torchvision_resnets_offer_what_a_teacher_or_student_needs(name: str) -> None:
    model = create_model(name, 10)
    assert isinstance(model, HintModel)
    assert require_block_stages(model) == model.block_stages() and require_classifier(model, "CRD") == model.classifier_path


def test_unknown_torchvision_name_lists_valid_ones() -> None:
    with pytest.raises(ModelError, match=r"unknown torchvision architecture 'resnet19'; valid names include torchvision:resnet1"):
        create_model("torchvision:resnet19", 10)
