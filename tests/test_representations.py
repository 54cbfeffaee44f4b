"""The probe pass: GAP'd outputs equal a manual computation, one forward per batch, preact, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pursuhint.errors import DataError, PursuhintError
from pursuhint.hints.layers import candidate_layers
from pursuhint.hints.representations import layer_representations


class Block(nn.Module):
    """A residual block whose final activation is the in-place child ``relu`` (used twice)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def preact(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(out)) + self.shortcut(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.preact(x))


class FunctionalBlock(Block):
    """The CIFAR-zoo style: the final ReLU is applied functionally, so it cannot be hooked."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__(cin, cout, stride)
        del self.relu

    def preact(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + self.shortcut(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.preact(x))


class ToyNet(nn.Module):
    def __init__(self, block: type[Block] = Block) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, 1, 1, bias=False)
        self.layer1 = nn.Sequential(block(4, 4, 1), block(4, 4, 1))
        self.layer2 = nn.Sequential(block(4, 8, 2), block(8, 8, 1))
        self.fc = nn.Linear(8, 5)
        for module in self.modules():  # non-trivial BN statistics so eval vs train mode matters
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(F.relu(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))

    def block_stages(self) -> list[list[str]]:
        return [["layer1.0", "layer1.1"], ["layer2.0", "layer2.1"]]


@pytest.fixture()
def model() -> ToyNet:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return ToyNet()


def batches(n: int = 3, size: int = 4) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(size, 3, 16, 16, generator=gen) for _ in range(n)]


def manual(model: nn.Module, name: str, images: list[torch.Tensor], preact: bool = False) -> torch.Tensor:
    """GAP of one module's output (or of the block's pre-activation), computed without the library."""
    module = model.get_submodule(name)
    captured: list[torch.Tensor] = []
    if preact:
        handle = module.register_forward_hook(lambda m, a, o: captured.append(m.preact(a[0]).mean(dim=(2, 3))))
    else:
        handle = module.register_forward_hook(lambda m, a, o: captured.append(o if o.dim() == 2 else o.mean(dim=(2, 3))))
    model.eval()
    with torch.no_grad():
        for x in images:
            model(x)
    handle.remove()
    return torch.cat(captured)


def test_matches_a_manual_hook_for_several_layers(model: ToyNet) -> None:
    names = ["layer1.0", "layer2.1", "layer2.0.conv2", "fc"]
    reps = layer_representations(model, batches(), names)
    assert [tuple(r.shape) for r in reps] == [(12, 4), (12, 8), (12, 8), (12, 5)]
    assert all(r.dtype == torch.float32 and not r.is_inference() for r in reps)
    for name, rep in zip(names, reps):
        torch.testing.assert_close(rep, manual(model, name, batches()), rtol=1e-5, atol=1e-6)
    reps[0] -= reps[0].mean(dim=0)  # callers may center in place


def test_candidate_layers_and_tuples_give_the_same_result(model: ToyNet) -> None:
    layers = candidate_layers(model, input_shape=(3, 16, 16))
    plain = layer_representations(model, batches(), [layer.name for layer in layers])
    labelled = [(x, torch.zeros(len(x), dtype=torch.long)) for x in batches()]
    tupled = layer_representations(model, iter(labelled), layers, progress=True)  # a one-shot iterator too
    assert len(tupled) == 4
    for a, b in zip(plain, tupled):
        assert torch.equal(a, b)


def test_exactly_one_forward_per_batch(model: ToyNet) -> None:
    calls = []
    handle = model.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))
    layer_representations(model, batches(n=5, size=3), ["layer1.0", "layer1.1", "layer2.0", "layer2.1"])
    handle.remove()
    assert calls == [3, 3, 3, 3, 3]
    assert not model.layer1[0]._forward_hooks and not model._forward_pre_hooks  # our hooks are gone


def test_eval_mode_is_used_and_training_flags_restored(model: ToyNet) -> None:
    model.train()
    model.layer2[1].bn2.eval()
    bn = model.layer1[0].bn1
    before = bn.running_mean.clone()
    layer_representations(model, batches(), ["layer1.0"])
    assert torch.equal(bn.running_mean, before)
    assert model.training and model.layer1[0].bn1.training and not model.layer2[1].bn2.training


def test_preact_taps_the_sum_before_the_final_relu(model: ToyNet) -> None:
    names = ["layer1.1", "layer2.0"]
    pre = layer_representations(model, batches(), names, preact=True)
    post = layer_representations(model, batches(), names)
    for name, p, q in zip(names, pre, post):
        torch.testing.assert_close(p, manual(model, name, batches(), preact=True), rtol=1e-5, atol=1e-6)
        assert (q >= p - 1e-6).all() and (q - p).max() > 1e-3  # mean(relu(z)) >= mean(z), strictly somewhere


def test_preact_without_a_relu_child_is_refused() -> None:
    functional = ToyNet(block=FunctionalBlock)
    with pytest.raises(PursuhintError, match="preact is not supported for layer 'layer1.0'"):
        layer_representations(functional, batches(), ["layer1.0"], preact=True)
    assert not functional.layer1[0]._forward_hooks
    assert layer_representations(functional, batches(n=1), ["layer1.0"])[0].shape == (4, 4)


def test_errors(model: ToyNet) -> None:
    with pytest.raises(PursuhintError, match=r"unknown layer 'layer9\.0'.*'layer1\.0', 'layer1\.1'"):
        layer_representations(model, batches(), ["layer1.0", "layer9.0"])
    with pytest.raises(DataError, match="no batches"):
        layer_representations(model, [], ["layer1.0"])
    with pytest.raises(PursuhintError, match="no layers"):
        layer_representations(model, batches(), [])
    with pytest.raises(DataError, match="batches must be image tensors"):
        layer_representations(model, [{"x": 1}], ["layer1.0"])
    with pytest.raises(PursuhintError, match=r"'layer1\.0\.relu' ran 2 times"):
        layer_representations(model, batches(), ["layer1.0.relu"])
    with pytest.raises(PursuhintError, match="differs from the model's device"):
        layer_representations(model, batches(), ["layer1.0"], device="meta")
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_zoo_and_torchvision_blocks_support_preact_where_a_relu_child_ends_the_block() -> None:
    from pursuhint.models import create_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        tv = create_model("torchvision:resnet18", num_classes=10)  # BasicBlock calls self.relu twice
        wrn = create_model("wrn_16_2", num_classes=10)  # pre-activation blocks: no final ReLU child
    images = [torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))]
    block = tv.layer2[0]
    inputs: list[torch.Tensor] = []
    handle = block.register_forward_pre_hook(lambda m, a: inputs.append(a[0].clone()))
    tv.eval()
    with torch.no_grad():
        tv(images[0])
        x = inputs[0]
        expected = [(block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x))))) + block.downsample(x)).mean((2, 3))]
    handle.remove()
    pre = layer_representations(tv, images, ["layer2.0"], preact=True)[0]
    torch.testing.assert_close(pre, expected[0], rtol=1e-5, atol=1e-5)  # the LAST relu input, not the first
    with pytest.raises(PursuhintError, match="preact is not supported for layer 'block1.layer.0'"):
        layer_representations(wrn, images, ["block1.layer.0"], preact=True)
