"""Checkpoints: the benchmark's formats load strictly, mismatches and bad files are clear errors,
saving is atomic, and the weights' sha256 is stable."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
import torch

from pursuhint.errors import CheckpointError
from pursuhint.models import create_model, load_checkpoint, load_state, save_checkpoint, weights_sha256


def _trained_like(name: str = "resnet8", seed: int = 0) -> torch.nn.Module:
    """A model whose BN statistics are not the defaults, so eval logits depend on every buffer."""
    model = create_model(name, 10)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if key.endswith("running_var"):
                value.copy_(torch.rand(value.shape, generator=gen) + 0.5)
            elif value.is_floating_point():
                value.copy_(torch.randn(value.shape, generator=gen) * 0.2)
    return model.eval()


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def test_save_then_load_gives_same_logits_metadata_and_hash(tmp_path: Path) -> None:
    model = _trained_like()
    path = tmp_path / "sub" / "teacher.pth"
    sha = save_checkpoint(path, model, {"arch": "resnet8", "epoch": 240, "acc": 74.31, "tags": ["a", None]})
    assert sha == weights_sha256(model.state_dict()) and len(sha) == 64
    assert sorted(p.name for p in path.parent.iterdir()) == ["teacher.pth"]  # no temp file left behind
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"model", "meta"}
    fresh = create_model("resnet8", 10)
    meta = load_checkpoint(fresh, path, arch="resnet8")
    assert meta == {"arch": "resnet8", "epoch": 240, "acc": 74.31, "tags": ["a", None]}
    assert torch.equal(_logits(fresh, X), _logits(model, X))
    assert weights_sha256(load_state(path)) == sha


@pytest.mark.parametrize("layout", ["benchmark", "module_prefix", "raw", "state_dict"])
def test_benchmark_and_common_layouts_load_strictly(tmp_path: Path, layout: str) -> None:
    model = _trained_like("wrn_16_1")
    state = model.state_dict()
    payload = {
        "benchmark": {"epoch": 240, "model": state, "best_acc": torch.tensor(73.25), "optimizer": {"state": {}}},
        "module_prefix": {"model": {f"module.{k}": v for k, v in state.items()}},
        "raw": state,
        "state_dict": {"state_dict": state},
    }[layout]
    path = tmp_path / "ckpt.pth"
    torch.save(payload, path)
    assert list(load_state(path)) == list(state)
    fresh = create_model("wrn_16_1", 10)
    meta = load_checkpoint(fresh, path)
    assert torch.equal(_logits(fresh, X), _logits(model, X))
    if layout == "benchmark":  # the benchmark's scalar entries become the metadata
        assert meta["epoch"] == 240 and meta["best_acc"] == pytest.approx(73.25) and "optimizer" not in meta
    else:
        assert meta == {}


def test_wrong_architecture_names_shapes_and_keys(tmp_path: Path) -> None:
    path = tmp_path / "r8.pth"
    save_checkpoint(path, create_model("resnet8", 10), {})
    with pytest.raises(CheckpointError, match=r"does not fit architecture 'resnet8x4'.*shape mismatch.*"
                                              r"conv1\.weight \(16, 3, 3, 3\) vs \(32, 3, 3, 3\)"):
        load_checkpoint(create_model("resnet8x4", 10), path, arch="resnet8x4")
    with pytest.raises(CheckpointError, match=r"'resnet14': 36 missing key\(s\) \(layer1\.1\.conv1\.weight"):
        load_checkpoint(create_model("resnet14", 10), path, arch="resnet14")
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\) \(layer1\.0\.conv1\.weight"):
        load_checkpoint(create_model("wrn_16_1", 10), path)
    with pytest.raises(CheckpointError, match=r"model CifarResNet.*fc\.weight \(10, 64\) vs \(100, 64\)"):
        load_checkpoint(create_model("resnet8", 100), path)


def test_unreadable_files_name_the_path(tmp_path: Path) -> None:
    good = tmp_path / "good.pth"
    save_checkpoint(good, create_model("resnet8", 10), {})
    data = good.read_bytes()
    cases = {
        "truncated.pth": data[: len(data) // 2],
        "notes.txt": b"teacher trained for 240 epochs\n",
        "empty.pth": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    torch.save({"epoch": 3, "acc": 0.5}, tmp_path / "no_weights.pth")
    for name in [*cases, "no_weights.pth", "missing.pth"]:
        path = tmp_path / name
        with pytest.raises(CheckpointError) as info:
            load_state(path)
        assert repr(str(path)) in str(info.value), name
    with pytest.raises(CheckpointError, match="is unreadable: it is truncated"):
        load_state(tmp_path / "truncated.pth")
    with pytest.raises(CheckpointError, match="holds no model weights"):
        load_checkpoint(create_model("resnet8", 10), tmp_path / "no_weights.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state(tmp_path / "missing.pth")


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "whole_model.pth"
    torch.save(create_model("resnet8", 10), path)  # a pickled module, not a state_dict
    with pytest.raises(CheckpointError, match="holds objects other than tensors"):
        load_state(path)


def test_weights_sha256_format_is_pinned() -> None:
    state = {"b": torch.tensor([1.0, -2.0]), "a": torch.tensor([[3]], dtype=torch.int64)}
    digest = hashlib.sha256()
    digest.update(b"a|torch.int64|(1, 1)\n" + struct.pack("<q", 3))
    digest.update(b"b|torch.float32|(2,)\n" + struct.pack("<2f", 1.0, -2.0))
    assert weights_sha256(state) == digest.hexdigest()


def test_weights_sha256_sees_every_value_key_and_dtype_but_not_order() -> None:
    state = _trained_like().state_dict()
    sha = weights_sha256(state)
    assert weights_sha256(dict(reversed(list(state.items())))) == sha
    changed = dict(state)
    changed["fc.bias"] = state["fc.bias"].clone()
    changed["fc.bias"][3] += 1e-6
    assert weights_sha256(changed) != sha
    renamed = {("head." + k[3:] if k.startswith("fc.") else k): v for k, v in state.items()}
    assert weights_sha256(renamed) != sha
    assert weights_sha256({"w": torch.zeros(2)}) != weights_sha256({"w": torch.zeros(2, dtype=torch.float64)})
    assert weights_sha256({"w": torch.zeros(2)}) != weights_sha256({"w": torch.zeros(1, 2)})
    transposed = {"w": torch.arange(6.0).view(2, 3).t()}  # non-contiguous: hashed in logical order
    assert weights_sha256(transposed) == weights_sha256({"w": transposed["w"].contiguous()})


@pytest.mark.cuda
def test_hash_and_load_are_device_independent(tmp_path: Path) -> None:
    model = _trained_like()
    sha_cpu = weights_sha256(model.state_dict())
    model.cuda()
    assert weights_sha256(model.state_dict()) == sha_cpu
    assert save_checkpoint(tmp_path / "c.pth", model, {}) == sha_cpu
    target = create_model("resnet8", 10).cuda()
    load_checkpoint(target, tmp_path / "c.pth")
    assert next(target.parameters()).is_cuda
    assert weights_sha256(target.state_dict()) == sha_cpu


def test_bad_metadata_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "m.pth"
    with pytest.raises(CheckpointError, match=r"checkpoint metadata meta\.paths\[0\] is a PosixPath"):
        save_checkpoint(path, create_model("resnet8", 10), {"paths": [tmp_path]})
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.pth"
    old_sha = save_checkpoint(path, _trained_like(seed=1), {"v": 1})
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _trained_like(seed=2), {"v": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["t.pth"]
    assert weights_sha256(load_state(path)) == old_sha
