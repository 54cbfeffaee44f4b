"""Data sets (digits, CIFAR pickles, ImageFolder + cache) and the on-device loader/augmentation."""

from __future__ import annotations

import os
import pickle
import shutil
import time

import numpy as np
import pytest
import torch
from PIL import Image

from pursuhint.data import (
    DATASETS,
    DeviceLoader,
    ImageDataset,
    load_dataset,
    probe_images,
    probe_loader,
    resize_images,
    stratified_indices,
)
from pursuhint.data.image_cache import LAST_USED, STALE_AFTER_S, cache_key
from pursuhint.data.imagefolder import _imagefolder_files
from pursuhint.errors import DataError, PursuhintError

# ----------------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits() -> ImageDataset:
    return load_dataset("digits")


def test_registry_names_and_unknown_name():
    assert set(DATASETS.names()) >= {"digits", "cifar10", "cifar100", "imagefolder"}
    with pytest.raises(DataError, match=r"unknown data set 'cifar1'.*valid: .*cifar10"):
        load_dataset("cifar1")


def test_digits_shapes_dtypes_classes(digits):
    assert digits.train_x.shape == (1438, 1, 16, 16) and digits.val_x.shape == (359, 1, 16, 16)
    assert digits.train_x.dtype == torch.uint8 and digits.train_y.dtype == torch.int64
    assert (digits.channels, digits.image_size, digits.num_classes) == (1, 16, 10)
    assert digits.classes == [str(i) for i in range(10)]
    assert digits.augment == "crop"
    assert int(digits.train_x.max()) == 255 and int(digits.train_x.min()) == 0
    x = digits.train_x.double() / 255
    assert digits.mean[0] == pytest.approx(float(x.mean()), abs=1e-9)
    assert digits.std[0] == pytest.approx(float(x.std(unbiased=False)), abs=1e-9)


def test_digits_are_scikit_learns_read_without_importing_it(monkeypatch):
    """The bundled file, read directly, gives load_digits' arrays to the bit; a worker loading digits imports
    neither scikit-learn nor SciPy; without the file, scikit-learn's own loader answers."""
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from pursuhint.data import digits as digits_module

    images, target = digits_module.digits_arrays()
    raw = load_digits()
    assert images.dtype == raw.images.dtype and np.array_equal(images, raw.images)
    assert target.dtype == np.int64 and np.array_equal(target, raw.target)
    probe = ("import sys; from pursuhint.data import load_dataset; load_dataset('digits'); "
             "print(sorted(m for m in ('sklearn', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    monkeypatch.setattr(digits_module.importlib.util, "find_spec", lambda name: None)
    images, target = digits_module.digits_arrays()
    assert np.array_equal(images, raw.images) and np.array_equal(target, raw.target)


def test_digits_split_is_stratified_and_complete(digits):
    from sklearn.datasets import load_digits  # sklearn: deferred, slow to import

    full = np.bincount(load_digits().target, minlength=10)
    val = np.bincount(digits.val_y.numpy(), minlength=10)
    train = np.bincount(digits.train_y.numpy(), minlength=10)
    np.testing.assert_array_equal(train + val, full)
    assert np.all(np.abs(val - 0.2 * full) < 1)


def test_digits_pixels_are_scaled_originals():
    from sklearn.datasets import load_digits  # sklearn: deferred, slow to import

    ds = load_dataset("digits", image_size=8)
    scaled = np.rint(load_digits().images * 255 / 16).astype(np.uint8)
    originals = {img.tobytes() for img in scaled}
    assert all(img.tobytes() in originals for img in ds.train_x[:, 0].numpy())
    assert all(img.tobytes() in originals for img in ds.val_x[:, 0].numpy())
    assert set(np.unique(ds.train_x.numpy())) <= {round(k * 255 / 16) for k in range(17)}


def test_digits_split_deterministic_per_seed(digits):
    again = load_dataset("digits", seed=0)
    assert torch.equal(again.val_x, digits.val_x) and torch.equal(again.train_y, digits.train_y)
    other = load_dataset("digits", seed=1)
    assert not torch.equal(other.val_x, digits.val_x)


def test_digits_image_size_resize():
    ds = load_dataset("digits", image_size=32, val_samples=20)
    assert ds.train_x.shape[1:] == (1, 32, 32) and ds.image_size == 32


def test_resize_images_bilinear_by_hand():
    x = torch.tensor([[0, 255], [0, 255]], dtype=torch.uint8).view(1, 1, 2, 2)
    out = resize_images(x, 4)
    # half-pixel centers: source columns -0.25, 0.25, 0.75, 1.25 → 0, 63.75, 191.25, 255
    assert out[0, 0].tolist() == [[0, 64, 191, 255]] * 4
    const = torch.full((2, 3, 7, 7), 77, dtype=torch.uint8)
    assert torch.all(resize_images(const, 3) == 77)


def test_stratified_subset_counts(digits):
    ds = load_dataset("digits", train_samples=100, val_samples=50, seed=3)
    assert len(ds.train_y) == 100 and len(ds.val_y) == 50
    full = np.bincount(digits.train_y.numpy(), minlength=10)
    got = np.bincount(ds.train_y.numpy(), minlength=10)
    assert np.all(np.abs(got - 100 * full / full.sum()) < 1)
    same = load_dataset("digits", train_samples=100, val_samples=50, seed=3)
    assert torch.equal(same.train_x, ds.train_x) and torch.equal(same.val_y, ds.val_y)


def test_stratified_indices_largest_remainder_by_hand():
    y = torch.tensor([0] * 6 + [1] * 3 + [2])
    idx = stratified_indices(y, 5, seed=0)
    # exact shares 3, 1.5, 0.5 → floors 3, 1, 0; the one left goes to the tie's lower class (1)
    assert np.bincount(y[idx].numpy(), minlength=3).tolist() == [3, 2, 0]
    assert idx.tolist() == sorted(idx.tolist())


def test_subset_too_large_and_bad_arguments():
    with pytest.raises(DataError, match=r"digits train has 1438 images, fewer than the 5000"):
        load_dataset("digits", train_samples=5000)
    with pytest.raises(DataError, match=r"val_samples 0 is invalid"):
        load_dataset("digits", val_samples=0)
    with pytest.raises(DataError, match=r"image_size 'big' is invalid"):
        load_dataset("digits", image_size="big")


# ------------------------------------------------------------------------------------ CIFAR


def _dump(path, obj, numpy1_names=False):
    data = pickle.dumps(obj, protocol=2)
    if numpy1_names:  # how numpy 1.x (and the official Python 2 archives) name the reconstructor
        data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(data)


def _write_cifar10(root, per_batch=4, test=6):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = []
    for i in range(1, 6):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        batches.append((data, labels))
        _dump(folder / f"data_batch_{i}", {b"batch_label": b"x", b"labels": labels, b"data": data}, i == 3)
    test_data = rng.integers(0, 256, (test, 3072), dtype=np.uint8)
    test_labels = [int(v) for v in rng.integers(0, 10, test)]
    _dump(folder / "test_batch", {b"labels": test_labels, b"data": test_data})
    names = [n.encode() for n in ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]]
    _dump(folder / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    return folder, batches, (test_data, test_labels)


def test_cifar10_labels_and_pixel_layout(tmp_path):
    folder, batches, (test_data, test_labels) = _write_cifar10(tmp_path)
    data = np.concatenate([b[0] for b in batches])
    # a pixel we place: image 5 (2nd batch, 2nd row), channel G, y=7, x=30
    value = 200
    data[5, 1 * 1024 + 7 * 32 + 30] = value
    _dump(folder / "data_batch_2", {b"labels": batches[1][1], b"data": data[4:8]})
    ds = load_dataset("cifar10", root=str(tmp_path))
    assert ds.train_x.shape == (20, 3, 32, 32) and ds.val_x.shape == (6, 3, 32, 32)
    assert int(ds.train_x[5, 1, 7, 30]) == value
    assert int(ds.train_x[5, 0, 7, 30]) == data[5, 7 * 32 + 30]
    np.testing.assert_array_equal(ds.train_x.reshape(20, 3072).numpy(), data)
    assert ds.train_y.tolist() == sum((b[1] for b in batches), [])
    assert ds.val_y.tolist() == test_labels
    assert ds.classes[:3] == ["airplane", "automobile", "bird"] and ds.num_classes == 10
    assert ds.augment == "crop_flip"
    ch = data.reshape(20, 3, 1024).astype(np.float64) / 255
    assert ds.mean == pytest.approx(tuple(ch.mean(axis=(0, 2))), abs=1e-9)
    # root may also be the batches folder itself
    same = load_dataset("cifar10", root=str(folder))
    assert torch.equal(same.train_x, ds.train_x)


def test_cifar10_resize_and_subset(tmp_path):
    _write_cifar10(tmp_path)
    ds = load_dataset("cifar10", root=str(tmp_path), image_size=16, val_samples=3)
    assert ds.train_x.shape == (20, 3, 16, 16) and ds.val_x.shape == (3, 3, 16, 16)


def test_cifar100_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, (12, 3072), dtype=np.uint8)
    fine = [int(v) for v in rng.integers(0, 100, 12)]
    _dump(folder / "train", {b"data": data, b"fine_labels": fine, b"coarse_labels": [0] * 12})
    _dump(folder / "test", {b"data": data[:5], b"fine_labels": fine[:5], b"coarse_labels": [0] * 5})
    _dump(folder / "meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)]})
    ds = load_dataset("cifar100", root=str(tmp_path))
    assert ds.num_classes == 100 and ds.classes[99] == "c99"
    assert ds.train_y.tolist() == fine and ds.val_y.tolist() == fine[:5]
    assert int(ds.train_x[3, 2, 31, 0]) == data[3, 2 * 1024 + 31 * 32 + 0]


def test_cifar_missing_folder_and_files(tmp_path):
    with pytest.raises(DataError, match=r"cifar-10-batches-py.*data_batch_1.*test_batch"):
        load_dataset("cifar10", root=str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"needs root"):
        load_dataset("cifar100")
    folder, _, _ = _write_cifar10(tmp_path)
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match=rf"{folder}.*lacks test_batch"):
        load_dataset("cifar10", root=str(tmp_path))


def test_cifar_malformed_files(tmp_path):
    folder, _, _ = _write_cifar10(tmp_path)
    (folder / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=rf"cannot read data_batch_3 in '{folder}'"):
        load_dataset("cifar10", root=str(tmp_path))
    _dump(folder / "data_batch_3", {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    with pytest.raises(DataError, match=r"data_batch_3 .*expected uint8 N×3072"):
        load_dataset("cifar10", root=str(tmp_path))
    _dump(folder / "data_batch_3", {b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]})
    with pytest.raises(DataError, match=r"train labels .* span 0..10; expected 0..9"):
        load_dataset("cifar10", root=str(tmp_path))


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_pickle_cannot_run_code(tmp_path):
    folder, _, _ = _write_cifar10(tmp_path)
    evil = _Evil()
    evil.marker = tmp_path / "pwned"
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": evil}, protocol=2))
    with pytest.raises(DataError, match=r"test_batch.*not allowed"):
        load_dataset("cifar10", root=str(tmp_path))
    assert not evil.marker.exists()


# ------------------------------------------------------------------------------ ImageFolder

COLORS = {"cat": [(255, 0, 0), (0, 255, 0), (0, 0, 255)], "dog": [(10, 20, 30), (200, 100, 50)]}


def _write_folder(root, split="val"):
    for cls, colors in COLORS.items():
        for i, c in enumerate(colors):
            (root / "train" / cls).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), c).save(root / "train" / cls / f"{i}.png")
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), colors[0]).save(root / split / cls / "v.png")


def test_imagefolder_loads_and_caches(tmp_path, monkeypatch):
    _write_folder(tmp_path)
    ds = load_dataset("imagefolder", root=str(tmp_path), image_size=8)
    assert ds.classes == ["cat", "dog"] and ds.train_y.tolist() == [0, 0, 0, 1, 1]
    assert ds.train_x.shape == (5, 3, 8, 8) and ds.val_x.shape == (2, 3, 8, 8)
    assert ds.train_x[:, :, 3, 4].tolist() == [list(c) for c in COLORS["cat"] + COLORS["dog"]]
    caches = list((tmp_path / ".pursuhint_cache").glob("imagefolder-*"))
    assert len(caches) == 1 and (caches[0] / "train_x.npy").is_file()

    def no_decoding(*a, **k):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(Image, "open", no_decoding)
    again = load_dataset("imagefolder", root=str(tmp_path), image_size=8)
    assert torch.equal(again.train_x.materialise(), ds.train_x.materialise()) and again.classes == ds.classes
    monkeypatch.undo()

    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "train" / "dog" / "new.png")
    calls = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: calls.append(a) or real_open(*a, **k))
    grown = load_dataset("imagefolder", root=str(tmp_path), image_size=8)
    assert len(calls) == 8 and grown.train_y.tolist() == [0, 0, 0, 1, 1, 1]
    # the old cache was opened a moment ago: a sweep of the old data (or another version) may still open it
    assert len(list((tmp_path / ".pursuhint_cache").glob("imagefolder-*"))) == 2
    old = caches[0]
    long_ago = time.time() - STALE_AFTER_S - 60
    os.utime(old / LAST_USED, (long_ago, long_ago))
    Image.new("RGB", (8, 8), (4, 5, 6)).save(tmp_path / "train" / "dog" / "newer.png")
    load_dataset("imagefolder", root=str(tmp_path), image_size=8)
    left = sorted((tmp_path / ".pursuhint_cache").glob("imagefolder-*"))
    assert old not in left and len(left) == 2  # unused for a day: gone; the grown data's cache was just used


def test_imagefolder_cache_key_is_the_datas_content_not_its_timestamps(tmp_path):
    """Copies of one data set on two nodes (made at different times) share a cache key, so they share a cache;
    changed bytes, another file or another size do not."""
    def key(root, size=8):
        _, train, val = _imagefolder_files(root)
        return cache_key(root, train + val, size)

    a, b = tmp_path / "node_a", tmp_path / "node_b"
    _write_folder(a)
    shutil.copytree(a, b)
    for f in b.rglob("*.png"):
        os.utime(f, (1_000_000, 1_000_000))  # another copy time on another node
    assert key(a) == key(b)
    assert key(a, size=16) != key(a)
    first = sorted((b / "train" / "cat").glob("*.png"))[0]
    data = bytearray(first.read_bytes())
    data[40] ^= 0xFF  # same size, other bytes (in the sampled first 4 KiB)
    first.write_bytes(bytes(data))
    assert key(b) != key(a)
    shutil.copy(sorted((a / "train" / "cat").glob("*.png"))[0], first)
    assert key(b) == key(a)
    (b / "train" / "cat" / "0.png").rename(b / "train" / "cat" / "zero.png")
    assert key(b) != key(a)


def test_imagefolder_resize_crop_gray_and_test_split(tmp_path):
    _write_folder(tmp_path, split="test")
    img = np.zeros((8, 12), np.uint8)
    img[:, 2:10] = 90  # 12 wide × 8 high: the center crop keeps columns 2..9
    Image.fromarray(img, mode="L").save(tmp_path / "train" / "cat" / "wide.png")
    ds = load_dataset("imagefolder", root=str(tmp_path), image_size=8)
    assert torch.all(ds.train_x[3] == 90)  # files sorted: 0, 1, 2, wide
    ds4 = load_dataset("imagefolder", root=str(tmp_path), image_size=4)
    assert ds4.train_x.shape == (6, 3, 4, 4) and torch.all(ds4.train_x[0, 0] == 255)


def test_imagefolder_readonly_root_caches_under_the_runs_folder(tmp_path, monkeypatch):
    _write_folder(tmp_path / "data")
    (tmp_path / "data" / ".pursuhint_cache").write_text("a file where the cache folder would go")
    monkeypatch.setenv("PURSUHINT_RUNS", str(tmp_path / "runs"))
    ds = load_dataset("imagefolder", root=str(tmp_path / "data"), image_size=8)
    assert len(list((tmp_path / "runs" / "cache" / "imagefolder").rglob("meta.json"))) == 1
    assert (tmp_path / "data" / ".pursuhint_cache").is_file()  # nothing written into the data folder
    monkeypatch.setattr(Image, "open", lambda *a, **k: 1 / 0)
    again = load_dataset("imagefolder", root=str(tmp_path / "data"), image_size=8)
    assert torch.equal(again.val_x.materialise(), ds.val_x.materialise())


def test_imagefolder_cache_goes_where_the_environment_says(tmp_path, monkeypatch):
    _write_folder(tmp_path / "data")
    monkeypatch.setenv("PURSUHINT_IMAGE_CACHE", str(tmp_path / "fast"))
    monkeypatch.setenv("PURSUHINT_RUNS", str(tmp_path / "runs"))
    (tmp_path / "data").chmod(0o555)  # read-only data: the chosen folder is still the one written
    try:
        ds = load_dataset("imagefolder", root=str(tmp_path / "data"), image_size=8)
    finally:
        (tmp_path / "data").chmod(0o755)
    (meta,) = (tmp_path / "fast").rglob("meta.json")
    assert meta.parent.parent.parent == tmp_path / "fast"  # <folder>/<root id>/imagefolder-8px-<hash>/
    assert not (tmp_path / "data" / ".pursuhint_cache").exists() and not (tmp_path / "runs").exists()
    monkeypatch.setattr(Image, "open", lambda *a, **k: 1 / 0)
    again = load_dataset("imagefolder", root=str(tmp_path / "data"), image_size=8)  # read back, not decoded
    assert torch.equal(again.train_x.materialise(), ds.train_x.materialise())


def test_imagefolder_root_marked_read_only_is_not_written_even_by_root(tmp_path, monkeypatch):
    # root bypasses permission bits: the cache must look at them, not try to write
    _write_folder(tmp_path / "data")
    monkeypatch.setenv("PURSUHINT_RUNS", str(tmp_path / "runs"))
    (tmp_path / "data").chmod(0o555)
    try:
        load_dataset("imagefolder", root=str(tmp_path / "data"), image_size=8)
    finally:
        (tmp_path / "data").chmod(0o755)
    assert not (tmp_path / "data" / ".pursuhint_cache").exists()
    assert len(list((tmp_path / "runs" / "cache" / "imagefolder").rglob("meta.json"))) == 1  # the memory-mapped cache


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataError, match=r"lacks train/ or val/"):
        load_dataset("imagefolder", root=str(tmp_path))
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "val" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match=rf"split '{tmp_path / 'train'}' has no images"):
        load_dataset("imagefolder", root=str(tmp_path))
    Image.new("RGB", (4, 4)).save(tmp_path / "train" / "a" / "x.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "val" / "a" / "x.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "val" / "b.png")  # loose file: ignored
    (tmp_path / "val" / "zebra").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "val" / "zebra" / "z.png")
    with pytest.raises(DataError, match=r"classes \['zebra'\].*valid: \['a'\]"):
        load_dataset("imagefolder", root=str(tmp_path))
    (tmp_path / "val" / "zebra" / "z.png").write_bytes(b"broken")
    (tmp_path / "train" / "zebra").mkdir()
    (tmp_path / "train" / "zebra" / "z.png").write_bytes(b"broken")
    with pytest.raises(DataError, match=r"z.png' cannot be decoded"):
        load_dataset("imagefolder", root=str(tmp_path))


# ----------------------------------------------------------------------------------- loader


def _loader(x, batch=8, **kw):
    kw.setdefault("train", True)
    kw.setdefault("augment", "crop_flip")
    kw.setdefault("mean", (0.0,) * x.shape[1])
    kw.setdefault("std", (1.0,) * x.shape[1])
    return DeviceLoader(x, torch.arange(len(x)), batch, **kw)


def test_loader_lengths_and_eval_order_and_normalisation():
    x = torch.full((10, 3, 8, 8), 100, dtype=torch.uint8)
    x[:, 1] = 0
    dl = DeviceLoader(x, torch.arange(10), 4, train=False, augment="crop_flip", mean=(0.5, 0.2, 0.0), std=(0.25, 0.5, 1.0))
    batches = list(dl)
    assert len(dl) == 3 and [len(b[1]) for b in batches] == [4, 4, 2]
    assert torch.cat([b[1] for b in batches]).tolist() == list(range(10))
    xb = batches[0][0]
    assert xb.dtype == torch.float32 and xb.shape == (4, 3, 8, 8) and xb.is_contiguous()
    assert xb[0, 0, 0, 0].item() == pytest.approx((100 / 255 - 0.5) / 0.25, abs=1e-6)
    assert torch.allclose(xb[:, 1], torch.tensor(-0.4))  # (0 - 0.2) / 0.5
    assert torch.allclose(xb[:, 2], torch.tensor(100 / 255))
    assert len(_loader(x, 4)) == 2 and len(_loader(x, 16)) == 1  # drop_last, but not the only batch
    assert len(_loader(x, 4, drop_last=False)) == 3


def test_loader_default_padding():
    assert _loader(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).padding == 4
    assert _loader(torch.zeros(2, 1, 16, 16, dtype=torch.uint8)).padding == 2


def _all_views(img, p, flips):
    """Every crop (zero padding p) and optional flip of a C×H×W uint8 image, as bytes."""
    h, w = img.shape[1:]
    padded = torch.nn.functional.pad(img, (p, p, p, p))
    views = {}
    for dy in range(2 * p + 1):
        for dx in range(2 * p + 1):
            crop = padded[:, dy : dy + h, dx : dx + w]
            views[crop.numpy().tobytes()] = (dy, dx, False)
            if flips:
                views.setdefault(crop.flip(-1).numpy().tobytes(), (dy, dx, True))
    return views


def _batches_uint8(dl):
    return [(xb * 255).round().to(torch.uint8) for xb, _ in dl]


def test_flip_applied_both_ways():
    img = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    img[..., 4:] = 255
    out = torch.cat(_batches_uint8(_loader(img.repeat(64, 1, 1, 1), padding=0)))
    right = torch.all(out[:, 0, :, 4:] == 255, dim=(1, 2)) & torch.all(out[:, 0, :, :4] == 0, dim=(1, 2))
    left = torch.all(out[:, 0, :, :4] == 255, dim=(1, 2)) & torch.all(out[:, 0, :, 4:] == 0, dim=(1, 2))
    assert torch.all(right | left) and right.any() and left.any()
    assert 16 < int(left.sum()) < 48


def test_crop_flip_outputs_are_shifted_flipped_copies():
    img = torch.randint(1, 256, (3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    views = _all_views(img, 2, flips=True)
    out = torch.cat(_batches_uint8(_loader(img.repeat(1000, 1, 1, 1), batch=128, drop_last=False, padding=2)))
    seen = {views[o.numpy().tobytes()] for o in out}  # KeyError would mean an impossible output
    assert {(dy, dx) for dy, dx, _ in seen} == {(a, b) for a in range(5) for b in range(5)}
    assert {f for _, _, f in seen} == {False, True}
    assert (out[:, :, 0, :] == 0).all(dim=(1, 2)).any()  # some batches show the zero border


def test_crop_only_never_flips():
    img = torch.randint(1, 256, (1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    views = _all_views(img, 1, flips=False)
    out = torch.cat(_batches_uint8(_loader(img.repeat(300, 1, 1, 1), batch=100, augment="crop", padding=1)))
    assert all(o.numpy().tobytes() in views for o in out)
    same = torch.cat(_batches_uint8(_loader(img.repeat(50, 1, 1, 1), augment="crop", padding=0, drop_last=False)))
    assert torch.equal(same, img.expand(50, 1, 8, 8))


def test_same_seed_and_epoch_identical_other_epoch_differs():
    x = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    a, b = _loader(x, seed=7), _loader(x, seed=7)
    a.set_epoch(3)
    b.set_epoch(3)
    first = list(a)
    for (xa, ya), (xb, yb) in zip(first, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert a.epoch == 4  # a pass advances the epoch
    second = list(a)
    assert torch.cat([y for _, y in first]).tolist() != torch.cat([y for _, y in second]).tolist()
    assert sorted(torch.cat([y for _, y in first]).tolist()) == list(range(40))
    c = _loader(x, seed=8)
    c.set_epoch(3)
    assert torch.cat([y for _, y in c]).tolist() != torch.cat([y for _, y in first]).tolist()


def test_loader_errors():
    x = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(DataError, match=r"unknown augmentation 'flip'.*valid: none, crop, crop_flip"):
        _loader(x, augment="flip")
    with pytest.raises(DataError, match=r"need 3 values each"):
        _loader(x, mean=(0.5,))
    with pytest.raises(DataError, match=r"std .* positive"):
        _loader(x, std=(1.0, 0.0, 1.0))
    with pytest.raises(DataError, match=r"batch_size 0 is invalid"):
        _loader(x, batch=0)
    with pytest.raises(DataError, match=r"torch.float32 .*expected a uint8"):
        _loader(x.float())
    with pytest.raises(DataError, match=r"labels have shape \(3,\); expected \(4,\)"):
        DeviceLoader(x, torch.arange(3), 2, train=True, augment="crop", mean=(0,) * 3, std=(1,) * 3)


@pytest.mark.cuda
def test_cuda_matches_cpu_and_is_channels_last():
    x = torch.randint(0, 256, (50, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    cpu = list(_loader(x, seed=5, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4)))
    gpu = list(_loader(x, seed=5, mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4), device="cuda"))
    for (xc, yc), (xg, yg) in zip(cpu, gpu):
        assert xg.is_cuda and xg.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(yc, yg.cpu()) and torch.allclose(xc, xg.cpu(), atol=1e-6)


# ------------------------------------------------------------------------------------ probe


def _tiny(n=10):
    x = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    y = torch.arange(n) % 2
    return ImageDataset("tiny", x, y, x[:2], y[:2], 2, ["a", "b"], (0.0,), (1.0,), "crop")


def test_probe_images_evenly_spaced():
    ds = _tiny()
    # round(i·10/4) for i = 0..3 → 0, 2.5→3, 5, 7.5→8 (halves up)
    assert probe_images(ds, 4)[:, 0, 0, 0].tolist() == [0, 3, 5, 8]
    assert probe_images(ds, 10)[:, 0, 0, 0].tolist() == list(range(10))
    with pytest.raises(DataError, match=r"probe size 11 is invalid for 'tiny'; expected an integer from 1 to 10"):
        probe_images(ds, 11)


def test_probe_loader_eval_order():
    ds = _tiny()
    dl = probe_loader(ds, 5, batch_size=2)
    xs, ys = zip(*dl)
    assert len(dl) == 3 and torch.cat(ys).tolist() == [0, 0, 0, 0, 0]
    assert torch.cat(xs)[:, 0, 0, 0].mul(255).round().tolist() == [0, 2, 4, 6, 8]


def test_image_dataset_validates():
    x = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    y = torch.zeros(2, dtype=torch.int64)
    with pytest.raises(PursuhintError, match=r"names 1 classes but num_classes is 2"):
        ImageDataset("d", x, y, x, y, 2, ["a"], (0.0,), (1.0,), "crop")
    with pytest.raises(DataError, match=r"augment 'rotate'"):
        ImageDataset("d", x, y, x, y, 1, ["a"], (0.0,), (1.0,), "rotate")


def test_with_index_yields_positions_of_the_samples():
    x = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 8, 8).contiguous()
    y = torch.arange(10)
    loader = DeviceLoader(x, y, 4, train=True, augment="none", mean=(0.0,), std=(1 / 255,), seed=1,
                          with_index=True)
    seen = []
    for images, labels, index in loader:
        assert torch.equal(labels, y[index])
        assert torch.equal(images[:, 0, 0, 0], index.float())
        seen += index.tolist()
    assert len(seen) == 8 and len(set(seen)) == 8  # drop_last in train mode
    ev = DeviceLoader(x, y, 4, train=False, augment="none", mean=(0.0,), std=(1.0,), with_index=True)
    assert [b[2].tolist() for b in ev] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
