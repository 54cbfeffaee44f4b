"""Candidate layers: counts, order, stages, sizes from the dummy forward, and the errors a user can hit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pursuhint.errors import ModelError, PursuhintError
from pursuhint.hints.layers import CandidateLayer, candidate_layers, eval_mode, module_device, tapped_module


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ToyNet(nn.Module):
    """Stem, three stages of 2, 2, 1 blocks (widths 4, 8, 16; strides 1, 2, 2), pool, classifier."""

    def __init__(self, in_channels: int = 3, num_classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 4, 3, 1, 1, bias=False)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(Block(4, 4, 1), Block(4, 4, 1))
        self.layer2 = nn.Sequential(Block(4, 8, 2), Block(8, 8, 1))
        self.layer3 = nn.Sequential(Block(8, 16, 2))
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv1(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean(dim=(2, 3)))

    def block_stages(self) -> list[list[str]]:
        return [["layer1.0", "layer1.1"], ["layer2.0", "layer2.1"], ["layer3.0"]]


class NoBlocks(nn.Module):
    """Declares ``late`` before ``early`` but runs ``early`` first: pattern order must follow execution."""

    def __init__(self) -> None:
        super().__init__()
        self.late = nn.Conv2d(6, 6, 3, 2, 1)
        self.early = nn.Conv2d(2, 6, 3, 1, 1)
        self.unused = nn.Conv2d(6, 6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.late(self.early(x))


def test_block_candidates_count_order_stage_and_sizes() -> None:
    layers = candidate_layers(ToyNet())
    assert [layer.name for layer in layers] == ["layer1.0", "layer1.1", "layer2.0", "layer2.1", "layer3.0"]
    assert [layer.index for layer in layers] == [0, 1, 2, 3, 4]
    assert [layer.relative_depth for layer in layers] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert [layer.stage for layer in layers] == [0, 0, 1, 1, 2]
    assert [layer.channels for layer in layers] == [4, 4, 8, 8, 16]
    assert [layer.spatial for layer in layers] == [(32, 32), (32, 32), (16, 16), (16, 16), (8, 8)]
    assert all(isinstance(layer, CandidateLayer) for layer in layers)


def test_input_shape_default_follows_first_conv_and_can_be_overridden() -> None:
    model = ToyNet(in_channels=1)
    assert [layer.spatial for layer in candidate_layers(model)][-1] == (8, 8)  # (1, 32, 32) by default
    layers = candidate_layers(model, input_shape=(1, 20, 12))
    assert [layer.spatial for layer in layers] == [(20, 12), (20, 12), (10, 6), (10, 6), (5, 3)]
    with pytest.raises(PursuhintError, match=r"input_shape \(3, 32, 32\)"):
        candidate_layers(model, input_shape=(3, 32, 32))  # wrong channel count for the stem


def test_training_flags_are_restored_per_module() -> None:
    model = ToyNet().train()
    model.layer2[0].bn1.eval()  # a user's frozen BN stays frozen, everything else stays training
    bn = model.layer1[0].bn1
    before = bn.running_mean.clone()
    candidate_layers(model)
    assert model.training and model.layer1.training and not model.layer2[0].bn1.training
    assert torch.equal(bn.running_mean, before)  # the dummy forward ran in eval mode
    assert bn.num_batches_tracked.item() == 0


def test_pattern_granularity_follows_execution_order_and_groups_by_resolution() -> None:
    layers = candidate_layers(ToyNet(), granularity=r"pattern:layer\d")
    assert [(layer.name, layer.channels, layer.spatial, layer.stage) for layer in layers] == [
        ("layer1", 4, (32, 32), 0),
        ("layer2", 8, (16, 16), 1),
        ("layer3", 16, (8, 8), 2),
    ]
    convs = candidate_layers(ToyNet(), granularity=r"pattern:layer\d\.\d\.conv2")
    assert [layer.stage for layer in convs] == [0, 0, 1, 1, 2]
    assert convs[-1].relative_depth == 1.0

    ordered = candidate_layers(NoBlocks(), "pattern:.*", input_shape=(2, 32, 32))  # "unused" never runs
    assert [(layer.name, layer.stage, layer.spatial) for layer in ordered] == [
        ("early", 0, (32, 32)),
        ("late", 1, (16, 16)),
    ]
    assert [layer.relative_depth for layer in ordered] == [0.5, 1.0]


def test_pattern_uses_fullmatch_and_accepts_2d_outputs() -> None:
    assert [layer.name for layer in candidate_layers(ToyNet(), granularity="pattern:layer1.0")] == ["layer1.0"]
    head = candidate_layers(ToyNet(num_classes=7), granularity="pattern:fc")
    assert (head[0].channels, head[0].spatial) == (7, (1, 1))


def test_errors_name_the_bad_value() -> None:
    with pytest.raises(ModelError, match=r"NoBlocks has no block_stages\(\) method, so granularity 'block' finds no "
                                         r"candidate layers; .*HintModel.*pattern:<regex>"):
        candidate_layers(NoBlocks())
    empty = ToyNet()
    empty.block_stages = lambda: [[], []]
    with pytest.raises(ModelError, match=r"ToyNet.block_stages\(\) names no block, so granularity 'block'"):
        candidate_layers(empty)
    with pytest.raises(PursuhintError, match="'blocks'"):
        candidate_layers(ToyNet(), granularity="blocks")
    with pytest.raises(PursuhintError, match="'pattern:nothing_here'"):
        candidate_layers(ToyNet(), granularity="pattern:nothing_here")
    with pytest.raises(PursuhintError, match=r"pattern '\(' is not a valid regex"):
        candidate_layers(ToyNet(), granularity="pattern:(")
    with pytest.raises(PursuhintError, match="runs 2 times per forward"):
        candidate_layers(ToyNet(), granularity=r"pattern:layer1\.0\.relu")
    with pytest.raises(PursuhintError, match=r"input_shape \(6, 32, 32\) failed"):
        candidate_layers(NoBlocks(), "pattern:.*")  # first declared Conv2d takes 6 channels; forward wants 2
    with pytest.raises(PursuhintError, match="no Conv2d"):
        candidate_layers(nn.Sequential(nn.Linear(3, 3)), granularity="pattern:0")


def test_tapped_module_returns_the_module_or_names_the_missing_path() -> None:
    model = ToyNet()
    assert tapped_module(model, "layer2.1") is model.layer2[1]
    assert tapped_module(model, "layer2.1.conv2") is model.layer2[1].conv2
    with pytest.raises(PursuhintError, match=r"'layer4\.0'.*'layer1\.0'"):
        tapped_module(model, "layer4.0")


def test_module_device_and_eval_mode() -> None:
    assert module_device(nn.ReLU()) == torch.device("cpu")
    model = ToyNet().train()
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize(
    ("name", "count", "stages"),
    [("resnet110", 54, 3), ("resnet56", 27, 3), ("wrn_40_2", 18, 3), ("resnet32x4", 15, 3), ("resnet20", 9, 3),
     ("vgg13", 4, 4)],
)
def test_zoo_candidate_counts_match_the_paper(name: str, count: int, stages: int) -> None:
    from pursuhint.models import create_model

    layers = candidate_layers(create_model(name, num_classes=100))
    assert len(layers) == count
    assert len({layer.stage for layer in layers}) == stages
    assert [layer.stage for layer in layers] == sorted(layer.stage for layer in layers)
    assert layers[-1].relative_depth == 1.0 and layers[0].relative_depth == pytest.approx(1 / count)


def test_resnet20_blocks_sizes_and_default_hints_are_stage_ends() -> None:
    from pursuhint.models import create_model

    layers = candidate_layers(create_model("resnet20", num_classes=10))
    assert [layer.name for layer in layers][2::3] == ["layer1.2", "layer2.2", "layer3.2"]
    assert [(layer.channels, layer.spatial) for layer in layers][::3] == [(16, (32, 32)), (32, (16, 16)), (64, (8, 8))]


def test_torchvision_resnet18_has_eight_blocks_in_four_stages() -> None:
    from pursuhint.models import create_model

    layers = candidate_layers(create_model("torchvision:resnet18", num_classes=10), input_shape=(3, 64, 64))
    assert [layer.stage for layer in layers] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [layer.channels for layer in layers][1::2] == [64, 128, 256, 512]
    assert layers[-1].spatial == (2, 2)
