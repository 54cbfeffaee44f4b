"""Data that does not fit in RAM: the memory-mapped ImageFolder cache, split views that read rows only per
batch, identical batches on every path, and a sweep on the CIFAR-10 subset with the map forced."""

from __future__ import annotations

import os
import pickle
import stat
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pursuhint.config import config_from_text
from pursuhint.data import (DeviceLoader, ImageRows, channel_stats, dataset, imagefolder, load_dataset, probe_images,
                            probe_loader, train_val_loaders)
from pursuhint.data.image_cache import STALE_AFTER_S
from pursuhint.data.loader import choose_placement
from pursuhint.errors import DataError
from pursuhint.train.teacher import dataset_for

from image_folders import write_random_folder
from sweep_helpers import mlflow_db

CLASSES = ("ant", "bee", "cow")


def _write_random_folder(root: Path, train: int = 8, val: int = 3, seed: int = 0) -> Path:
    return write_random_folder(root, CLASSES, train, val, seed)


def _by_hand(root: Path, split: str, size: int) -> np.ndarray:
    """The split decoded one file at a time, as N×3×size×size uint8 (the cache must hold exactly this)."""
    files = [f for cls in CLASSES for f in sorted((root / split / cls).iterdir())]
    return np.stack([imagefolder._decode(f, size).transpose(2, 0, 1) for f in files])


def _cache_folders(base: Path) -> list[Path]:
    return sorted(p for p in base.glob("imagefolder-*") if p.is_dir())


def _no_decoding(monkeypatch) -> None:
    def refuse(*_a, **_k):
        raise AssertionError("decoded although the cache holds these images")

    monkeypatch.setattr(imagefolder, "_decode", refuse)


# ------------------------------------------------------------------------------ the cache


def test_the_cache_is_decoded_once_into_memory_mapped_npy_files_and_read_back_without_decoding(tmp_path,
                                                                                                monkeypatch):
    root = _write_random_folder(tmp_path / "data")
    ds = load_dataset("imagefolder", root=str(root), image_size=8)
    (folder,) = _cache_folders(root / ".pursuhint_cache")
    assert sorted(p.name for p in folder.iterdir()) == [".last_used", "meta.json", "train_x.npy", "train_y.npy",
                                                        "val_x.npy", "val_y.npy"]
    assert not list((root / ".pursuhint_cache").glob(".*"))  # no temporary folder left behind
    mapped = np.load(folder / "train_x.npy", mmap_mode="r")
    assert mapped.dtype == np.uint8 and mapped.shape == (24, 3, 8, 8)
    np.testing.assert_array_equal(mapped, _by_hand(root, "train", 8))
    np.testing.assert_array_equal(np.load(folder / "val_x.npy", mmap_mode="r"), _by_hand(root, "val", 8))
    assert isinstance(ds.train_x, ImageRows) and isinstance(ds.val_x, ImageRows)
    assert ds.train_x.path == str(folder / "train_x.npy") and ds.train_x.shape == (24, 3, 8, 8)
    assert ds.train_y.tolist() == [0] * 8 + [1] * 8 + [2] * 8 and ds.classes == list(CLASSES)
    # the statistics stored with the cache are those of the training images, to the last bit
    assert (ds.mean, ds.std) == channel_stats(torch.from_numpy(_by_hand(root, "train", 8)))

    _no_decoding(monkeypatch)
    again = load_dataset("imagefolder", root=str(root), image_size=8)
    assert torch.equal(again.train_x.materialise(), ds.train_x.materialise())
    assert torch.equal(again.val_y, ds.val_y) and (again.mean, again.std) == (ds.mean, ds.std)


def test_decoding_in_worker_processes_writes_the_same_cache(tmp_path, monkeypatch):
    """Jobs of 5 files in a pool of 2 forked workers, each writing its rows into the file, against one job
    decoded in this process: the same bytes, labels and statistics."""
    root = _write_random_folder(tmp_path / "data", train=9, val=4)
    calls = []
    real = imagefolder._run_decode_jobs
    monkeypatch.setattr(imagefolder, "_run_decode_jobs", lambda jobs: calls.append(len(jobs)) or real(jobs))
    monkeypatch.setattr(imagefolder, "_DECODE_CHUNK", 5)
    monkeypatch.setattr(imagefolder, "_usable_cores", lambda: 2)
    pooled = load_dataset("imagefolder", root=str(root), image_size=8)
    assert calls == [6 + 3]  # 27 training files in 6 jobs, 12 held-out ones in 3
    np.testing.assert_array_equal(pooled.train_x.materialise().numpy(), _by_hand(root, "train", 8))
    np.testing.assert_array_equal(pooled.val_x.materialise().numpy(), _by_hand(root, "val", 8))
    assert (pooled.mean, pooled.std) == channel_stats(pooled.train_x)


def test_an_undecodable_image_in_a_worker_fails_with_its_name_and_leaves_no_cache(tmp_path, monkeypatch):
    root = _write_random_folder(tmp_path / "data", train=6, val=2)
    (root / "train" / "bee" / "004.png").write_bytes(b"not a png")
    monkeypatch.setattr(imagefolder, "_DECODE_CHUNK", 4)
    monkeypatch.setattr(imagefolder, "_usable_cores", lambda: 2)
    with pytest.raises(DataError, match=r"004.png' cannot be decoded"):
        load_dataset("imagefolder", root=str(root), image_size=8)
    assert not list((root / ".pursuhint_cache").iterdir())  # the temporary folder is gone


def test_a_read_only_root_is_cached_under_the_runs_folder(tmp_path, monkeypatch):
    """A data folder without write permission bits is never written into, even by root (who could)."""
    root = _write_random_folder(tmp_path / "data")
    monkeypatch.setenv("PURSUHINT_RUNS", str(tmp_path / "runs"))
    mode = root.stat().st_mode
    root.chmod(stat.S_IMODE(mode) & ~0o222)
    try:
        ds = load_dataset("imagefolder", root=str(root), image_size=8)
        assert not (root / ".pursuhint_cache").exists()
        (folder,) = [p.parent for p in (tmp_path / "runs" / "cache" / "imagefolder").rglob("meta.json")]
        assert ds.train_x.path == str(folder / "train_x.npy")
        _no_decoding(monkeypatch)
        again = load_dataset("imagefolder", root=str(root), image_size=8)
        assert again.train_x.path == ds.train_x.path
    finally:
        root.chmod(stat.S_IMODE(mode))


@pytest.mark.parametrize("damage", ["truncated images", "garbled meta.json", "labels missing", "wrong shape"])
def test_a_damaged_cache_is_rebuilt_in_place(tmp_path, monkeypatch, damage):
    root = _write_random_folder(tmp_path / "data")
    ds = load_dataset("imagefolder", root=str(root), image_size=8)
    want = ds.train_x.materialise()
    (folder,) = _cache_folders(root / ".pursuhint_cache")
    del ds
    if damage == "truncated images":
        with open(folder / "train_x.npy", "r+b") as f:
            f.truncate(1000)
    elif damage == "garbled meta.json":
        (folder / "meta.json").write_text("{ not json")
    elif damage == "labels missing":
        (folder / "val_y.npy").unlink()
    else:
        np.save(folder / "val_x.npy", np.zeros((2, 3, 8, 8), np.uint8))
    decoded = []
    real = imagefolder._decode
    monkeypatch.setattr(imagefolder, "_decode", lambda path, size: decoded.append(path) or real(path, size))
    again = load_dataset("imagefolder", root=str(root), image_size=8)
    assert len(decoded) == 33  # every file again
    assert _cache_folders(root / ".pursuhint_cache") == [folder]
    assert torch.equal(again.train_x.materialise(), want) and again.val_x.shape == (9, 3, 8, 8)


@pytest.mark.parametrize("age", ["unused for two days", "written a minute ago"])
def test_an_old_npz_cache_is_replaced_once_no_sweep_can_still_be_reading_it(tmp_path, age):
    root = _write_random_folder(tmp_path / "data")
    old = root / ".pursuhint_cache" / "imagefolder-8px-0123456789abcdef01234567.npz"
    old.parent.mkdir()
    old.write_bytes(b"an old cache")
    when = time.time() - (2 * STALE_AFTER_S if age == "unused for two days" else 60)
    os.utime(old, (when, when))
    load_dataset("imagefolder", root=str(root), image_size=8)
    assert old.exists() is (age == "written a minute ago")
    assert len(_cache_folders(root / ".pursuhint_cache")) == 1


def test_without_any_writable_cache_folder_the_images_are_decoded_into_memory(tmp_path, monkeypatch):
    root = _write_random_folder(tmp_path / "data")
    (root / ".pursuhint_cache").write_text("a file where the cache folder would go")
    (tmp_path / "runs").write_text("a file where the runs folder would go")
    monkeypatch.setenv("PURSUHINT_RUNS", str(tmp_path / "runs"))
    with pytest.warns(UserWarning, match="could not write an image cache"):
        ds = load_dataset("imagefolder", root=str(root), image_size=8)
    assert type(ds.train_x) is torch.Tensor
    np.testing.assert_array_equal(ds.train_x.numpy(), _by_hand(root, "train", 8))


def test_the_memory_map_setting_reaches_the_data_set_and_not_the_teacher_cache_key(tmp_path):
    root = _write_random_folder(tmp_path / "data")
    text = f"data: {{dataset: imagefolder, root: {root}, image_size: 8, probe_size: 4, val_fraction: 0.2}}"
    mapped, ram = config_from_text(text), config_from_text(text.replace("}", ", memory_map: false}"))
    assert mapped.data.memory_map is True and ram.data.memory_map is False
    assert mapped.section_hash("data") == ram.section_hash("data")  # where images live changes no result
    assert isinstance(dataset_for(mapped).train_x, ImageRows)
    assert type(dataset_for(ram).train_x) is torch.Tensor


# ------------------------------------------------------------------------- split views


def test_subsets_and_the_selection_split_are_views_that_read_no_pixels(tmp_path, monkeypatch):
    root = _write_random_folder(tmp_path / "data", train=20, val=6)
    load_dataset("imagefolder", root=str(root), image_size=8)  # the cache
    reads = []
    real = ImageRows.index_select
    monkeypatch.setattr(ImageRows, "index_select", lambda self, dim, idx: reads.append(len(idx)) or
                        real(self, dim, idx))
    monkeypatch.setattr(dataset, "channel_stats", lambda x: pytest.fail("the statistics are read from the cache"))
    ds = load_dataset("imagefolder", root=str(root), image_size=8, train_samples=45, val_samples=12,
                      val_fraction=0.2, seed=3)
    assert reads == []
    assert all(isinstance(x, ImageRows) for x in (ds.train_x, ds.val_x, ds.test_x))
    assert (len(ds.train_x), len(ds.val_x), len(ds.test_x)) == (36, 9, 12)
    assert ds.train_x.path == ds.val_x.path != ds.test_x.path  # both parts of the training file
    assert not set(ds.train_x.positions().tolist()) & set(ds.val_x.positions().tolist())
    train, _ = train_val_loaders(ds, 8, augment="crop_flip", seed=1)
    assert train.placement == "host"  # on the CPU a mapped split is gathered from the map
    assert sum(b[0].shape[0] for b in train) == 32 and reads == [8, 8, 8, 8]  # one batch's rows at a time


def test_memory_map_false_reads_the_same_splits_into_memory(tmp_path):
    root = _write_random_folder(tmp_path / "data", train=20, val=6)
    kw = dict(root=str(root), image_size=8, train_samples=45, val_fraction=0.2, seed=3)
    mapped = load_dataset("imagefolder", **kw)
    ram = load_dataset("imagefolder", memory_map=False, **kw)
    for split in ("train", "val", "test"):
        x, y = getattr(ram, f"{split}_x"), getattr(ram, f"{split}_y")
        assert type(x) is torch.Tensor
        assert torch.equal(x, getattr(mapped, f"{split}_x").materialise())
        assert torch.equal(y, getattr(mapped, f"{split}_y"))
    assert ram.splits == mapped.splits and (ram.mean, ram.std) == (mapped.mean, mapped.std)
    assert torch.equal(probe_images(ram, 10), probe_images(mapped, 10))
    for a, b in zip(probe_loader(ram, 10, batch_size=4), probe_loader(mapped, 10, batch_size=4)):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_image_rows_index_like_a_tensor_and_pickle_as_a_path(tmp_path):
    x = torch.randint(0, 256, (10, 3, 4, 4), dtype=torch.uint8)
    np.save(tmp_path / "x.npy", x.numpy())
    rows = ImageRows(tmp_path / "x.npy")
    view = rows.select(torch.tensor([7, 2, 5, 9]))
    assert view.shape == (4, 3, 4, 4) and view.dim() == 4 and view.numel() == 4 * 48 and len(view) == 4
    assert torch.equal(view[1], x[2]) and torch.equal(view[-1], x[9]) and torch.equal(view[1:3], x[[2, 5]])
    assert torch.equal(view[torch.tensor([True, False, False, True])], x[[7, 9]])
    assert torch.equal(view[:, 0, 1], x[[7, 2, 5, 9], 0, 1]) and torch.equal(view[2, 1], x[5, 1])
    assert torch.equal(view.select(torch.tensor([3, 0])).materialise(), x[[9, 7]])  # views of views compose
    assert torch.equal(view.to("cpu"), x[[7, 2, 5, 9]]) and torch.equal(rows.materialise(), x)
    assert torch.equal(torch.cat(list(rows.chunks(3))), x)
    assert torch.equal(view.index_select(0, torch.tensor([3, 3])), x[[9, 9]])
    shipped = pickle.dumps(view)
    assert len(shipped) < 2000  # the path and 4 positions, not the pixels
    back = pickle.loads(shipped)
    assert back._base is None and torch.equal(back.materialise(), x[[7, 2, 5, 9]])
    with pytest.raises(IndexError, match="out of range"):
        view[4]
    with pytest.raises(IndexError, match="out of range"):
        rows.select(torch.tensor([10]))
    del rows, view, back  # unmapped before the file is clobbered
    (tmp_path / "x.npy").write_bytes(b"gone")
    with pytest.raises(DataError, match=r"x.npy' cannot be opened .*data.memory_map: false"):
        pickle.loads(shipped).materialise()


# ------------------------------------------------------------------ identical batches


def _record_augment(monkeypatch) -> list:
    """Each ``_augment`` call's uint8 batch before and after it (the loader's gather, then the crop and flip)."""
    seen = []
    real = DeviceLoader._augment

    def spy(self, batch, params):
        out = real(self, batch, params)
        seen.append((batch.cpu().clone(), out.cpu().clone()))
        return out

    monkeypatch.setattr(DeviceLoader, "_augment", spy)
    return seen


def _epochs(loader: DeviceLoader, seen: list) -> list:
    """Two epochs of (yielded images, labels, indices, uint8 batch before augmentation, after it)."""
    out = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        for images, labels, index in loader:
            pre, post = seen.pop(0)
            out.append((images.cpu(), labels.cpu(), index.cpu(), pre, post))
    assert not seen
    return out


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_training_batches_are_identical_on_the_device_host_and_memory_mapped_paths(tmp_path, monkeypatch, device):
    """The same seed gives the same gathered, augmented and normalised batches whether the training split sits
    on the device (budget large), stays in host memory (budget 0; pinned on CUDA) or is memory-mapped. On the
    CPU "on the device" is host memory; the path each loader took is checked."""
    root = _write_random_folder(tmp_path / "data", train=20, val=6)
    kw = dict(root=str(root), image_size=8, val_fraction=0.2, seed=0)
    ram = load_dataset("imagefolder", memory_map=False, **kw)
    mapped = load_dataset("imagefolder", **kw)
    seen = _record_augment(monkeypatch)
    if device == "cuda":
        paths = {"device": (ram, dict(budget_gb=100.0)), "host": (ram, dict(budget_gb=0.0)),
                 "mapped, device": (mapped, dict(budget_gb=100.0)), "mapped, host": (mapped, dict(budget_gb=0.0))}
    else:  # the CPU has no budget: the paths are forced, and auto must keep the mapped split mapped
        paths = {"device": (ram, dict(placement="device")), "host": (ram, dict(placement="host")),
                 "mapped, host": (mapped, {})}
    got = {}
    for name, (ds, how) in paths.items():
        train, _ = train_val_loaders(ds, 16, augment="crop_flip", device=device, seed=5, with_index=True, **how)
        assert train.placement == name.split(", ")[-1], name
        got[name] = _epochs(train, seen)
    ref = got.pop("device")
    assert len(ref) == 2 * (48 // 16)
    for name, batches in got.items():
        assert len(batches) == len(ref), name
        for b_ref, b in zip(ref, batches):
            for t_ref, t in zip(b_ref, b):
                assert torch.equal(t_ref, t), name
    # and they are the training split's rows: before augmentation the gathered rows at the yielded indices
    for _, labels, index, pre, _ in ref:
        assert torch.equal(pre, ram.train_x[index]) and torch.equal(labels, ram.train_y[index])


def test_choose_placement_keeps_a_mapped_split_on_the_host_of_a_cpu():
    assert choose_placement(10**6, "cpu", mapped=True) == "host"
    assert choose_placement(10**6, "cpu") == "device"


# ---------------------------------------------------------------- a sweep on the real photographs


CIFAR_SWEEP = """
name: t_mmap_cifar
seed: 0
data: {{dataset: imagefolder, root: {root}, train_samples: 500, val_samples: 200, probe_size: 100,
        memory_map: true}}
teacher: {{arch: resnet8, train: {{epochs: 1, batch_size: 64, lr: 0.05}}}}
student: {{arch: resnet8}}
selection: {{similarity: r2_cca, n_hints: 2}}
distill: {{method: {{choice: [at]}}, hint_weight: 10}}
train: {{epochs: 1, batch_size: 64, lr: 0.05}}
search: {{num_samples: 1, max_concurrent_trials: 1, baselines: [], confirm: {{top_k: 0}}}}
"""


def _cifar10_subset() -> Path | None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    try:
        from bench.common import cifar10_subset  # importable only once the checkout is on sys.path
    finally:
        sys.path.pop(0)
    return cifar10_subset()


@pytest.mark.slow
def test_a_sweep_on_the_cifar10_subset_trains_from_the_memory_mapped_cache(tmp_path, isolated_runs, local_ray):
    root = _cifar10_subset()
    if root is None:
        pytest.skip("the CIFAR-10 subset is not here: set PURSUHINT_CIFAR10_SUBSET to a folder with train/<class>/ "
                    "and test/<class>/ JPEGs (or put it at ../shared/data/cifar10-subset beside the checkout)")
    from pursuhint.search.sweep import run_sweep  # ray: deferred, the fast tests need not import it

    cfg = config_from_text(CIFAR_SWEEP.format(root=root))
    ds = dataset_for(cfg)  # what the sweep's driver loads and ships to its trials
    assert all(isinstance(x, ImageRows) for x in (ds.train_x, ds.val_x, ds.test_x))
    assert (len(ds.train_x), len(ds.val_x), len(ds.test_x)) == (450, 50, 200)
    assert Path(ds.train_x.path).stat().st_size >= 20_000 * 3 * 32 * 32  # the whole training part is mapped
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_sweep(cfg, tracking_uri=mlflow_db(tmp_path),
                           storage_path=str(tmp_path / "ray_results"), verbose=0, progress=False)
    finally:
        torch.set_num_threads(threads)
    (row,) = result.leaderboard
    assert row.status == "completed" and row.baseline == "none" and 0 <= row.final_val_acc <= 100  # percent
