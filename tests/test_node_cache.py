"""ImageFolder on a cluster whose nodes each hold their own copy of the data and their own cache: the cache is
found by the data's content (not its path), built once however many processes ask for it at once, and a split
shipped to a node without the driver's cache file finds or builds that node's own cache, with the same rows.
The checks before a sweep list the files and decode a sample, and refuse a cache folder the trials cannot write."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import shutil
import stat
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pursuhint.config import config_from_text
from pursuhint.data import ImageRows, imagefolder, load_dataset, survey_dataset, train_val_loaders
from pursuhint.data.image_cache import IMAGE_CACHE_ENV, LAST_USED, STALE_AFTER_S, cache_spec, content_ids
from pursuhint.errors import DataError
from pursuhint.preflight import check_image_cache, check_splits

from image_folders import write_random_folder

CLASSES = ("ant", "bee")


def _write_folder(root: Path, train: int = 10, val: int = 4, seed: int = 0) -> Path:
    return write_random_folder(root, CLASSES, train, val, seed)


def _by_hand(root: Path, split: str, size: int = 8) -> np.ndarray:
    files = [f for cls in CLASSES for f in sorted((root / split / cls).iterdir())]
    return np.stack([imagefolder._decode(f, size).transpose(2, 0, 1) for f in files])


def _caches(folder: Path) -> list[Path]:
    """Every cache folder (one holding meta.json) under ``folder``."""
    return sorted(p.parent for p in folder.rglob("meta.json"))


def _count_decodes(monkeypatch, marker: Path) -> None:
    """Append a line to ``marker`` each time a process fills a cache (forked children inherit the patch)."""
    real = imagefolder._decode_into

    def counted(folder, *args, **kw):
        with open(marker, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(0.5)  # a slow decode: a racing process arrives while this one holds the lock
        return real(folder, *args, **kw)

    monkeypatch.setattr(imagefolder, "_decode_into", counted)


def _decodes(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


@pytest.fixture(autouse=True)
def _fresh_node_cache():
    imagefolder.node_cache.cache_clear()  # a process remembers where its node's cache is: each test is a new node
    yield
    imagefolder.node_cache.cache_clear()


# --------------------------------------------------------------------------- one build, wherever the data lie


def _load_in_child(root: str, barrier, out) -> None:
    barrier.wait()
    ds = load_dataset("imagefolder", root=root, image_size=8)
    out.put((ds.train_x.materialise().numpy(), ds.val_x.materialise().numpy(), ds.train_x.path))


def test_two_processes_racing_for_the_cache_decode_the_data_once(tmp_path, monkeypatch):
    root = _write_folder(tmp_path / "data")
    monkeypatch.setenv(IMAGE_CACHE_ENV, str(tmp_path / "cache"))
    marker = tmp_path / "decodes.txt"
    _count_decodes(monkeypatch, marker)
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_load_in_child, args=(str(root), barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    got = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert _decodes(marker) == 1  # the second waited on the lock, then opened what the first built
    (a_train, a_val, a_path), (b_train, b_val, b_path) = got
    assert a_path == b_path and len(_caches(tmp_path / "cache")) == 1
    np.testing.assert_array_equal(a_train, _by_hand(root, "train"))
    np.testing.assert_array_equal(b_train, a_train)
    np.testing.assert_array_equal(b_val, a_val)
    assert not list((tmp_path / "cache").rglob(".*.lock"))  # the builder removed its lock file


def test_two_copies_of_the_data_at_different_paths_share_one_cache(tmp_path, monkeypatch):
    a = _write_folder(tmp_path / "node_a" / "data")
    b = tmp_path / "elsewhere" / "copy"
    shutil.copytree(a, b)
    for f in b.rglob("*.png"):
        os.utime(f, (1_000_000, 1_000_000))  # copied at another time
    monkeypatch.setenv(IMAGE_CACHE_ENV, str(tmp_path / "cache"))
    specs = []
    for root in (a, b):
        _, train, val = imagefolder._imagefolder_files(root)
        data_id, key = content_ids(root, train + val, 8)
        specs.append(cache_spec(root, "imagefolder-8px-", 8, data_id, key))
    assert specs[0].write == specs[1].write == (tmp_path / "cache" / specs[0].data_id,)
    assert specs[0].name == specs[1].name and specs[0].root != specs[1].root
    ds_a = load_dataset("imagefolder", root=str(a), image_size=8)
    marker = tmp_path / "decodes.txt"
    _count_decodes(monkeypatch, marker)
    ds_b = load_dataset("imagefolder", root=str(b), image_size=8)
    assert _decodes(marker) == 0 and ds_b.train_x.path == ds_a.train_x.path
    assert Path(ds_a.train_x.path).parent.parent == tmp_path / "cache" / specs[0].data_id
    # without the variable, read-only copies are cached under the runs folder by the same data id
    monkeypatch.delenv(IMAGE_CACHE_ENV)
    monkeypatch.setenv("PURSUHINT_RUNS", str(tmp_path / "runs"))
    modes = {r: r.stat().st_mode for r in (a, b)}
    for r in (a, b):
        r.chmod(stat.S_IMODE(modes[r]) & ~0o222)
    try:
        first = load_dataset("imagefolder", root=str(a), image_size=8)
        second = load_dataset("imagefolder", root=str(b), image_size=8)
    finally:
        for r in (a, b):
            r.chmod(stat.S_IMODE(modes[r]))
    assert _decodes(marker) == 1 and first.train_x.path == second.train_x.path
    assert Path(first.train_x.path).parent.parent == tmp_path / "runs" / "cache" / "imagefolder" / specs[0].data_id


def test_a_cache_in_the_former_folder_named_by_the_data_path_is_still_read(tmp_path, monkeypatch):
    root = _write_folder(tmp_path / "data")
    monkeypatch.setenv(IMAGE_CACHE_ENV, str(tmp_path / "cache"))
    ds = load_dataset("imagefolder", root=str(root), image_size=8)
    built = Path(ds.train_x.path).parent
    del ds
    spec_read = cache_spec(root, "imagefolder-8px-", 8, built.parent.name, built.name.rsplit("-", 1)[1]).read
    legacy = spec_read[1]  # <folder>/<root id>, where a cache of this data folder was kept before
    legacy.mkdir(parents=True)
    built.rename(legacy / built.name)
    marker = tmp_path / "decodes.txt"
    _count_decodes(monkeypatch, marker)
    again = load_dataset("imagefolder", root=str(root), image_size=8)
    assert _decodes(marker) == 0 and again.train_x.path == str(legacy / built.name / "train_x.npy")
    np.testing.assert_array_equal(again.train_x.materialise().numpy(), _by_hand(root, "train"))


@pytest.mark.parametrize("age", ["unused for two days", "used a minute ago"])
def test_the_cache_of_a_data_folders_former_data_goes_once_unused(tmp_path, monkeypatch, age):
    root = _write_folder(tmp_path / "data")
    monkeypatch.setenv(IMAGE_CACHE_ENV, str(tmp_path / "cache"))
    old = Path(load_dataset("imagefolder", root=str(root), image_size=8).train_x.path).parent
    when = time.time() - (2 * STALE_AFTER_S if age == "unused for two days" else 60)
    os.utime(old / LAST_USED, (when, when))
    Image.new("RGB", (10, 10), (1, 2, 3)).save(root / "train" / "ant" / "new.png")  # the data changed
    new = Path(load_dataset("imagefolder", root=str(root), image_size=8).train_x.path).parent
    assert new.parent != old.parent  # another data id
    assert old.parent.exists() is (age == "used a minute ago")
    assert _caches(tmp_path / "cache") == sorted([new] + ([old] if age == "used a minute ago" else []))


# -------------------------------------------------------------------- a split shipped to another node


def _batches(ds) -> list[tuple[torch.Tensor, ...]]:
    train, val = train_val_loaders(ds, 8, augment="crop_flip", seed=3, with_index=True)
    out = []
    for epoch in range(2):
        train.set_epoch(epoch)
        out += [tuple(t.clone() for t in b) for b in train]
    return out + [tuple(t.clone() for t in b) for b in val]


def test_a_split_whose_cache_file_is_missing_builds_this_nodes_cache_and_yields_the_same_batches(tmp_path,
                                                                                                  monkeypatch):
    root = _write_folder(tmp_path / "data")
    monkeypatch.setenv("DATA_ROOT", str(root))
    monkeypatch.setenv(IMAGE_CACHE_ENV, str(tmp_path / "driver_cache"))
    ds = load_dataset("imagefolder", root="${DATA_ROOT}", image_size=8, val_fraction=0.25, seed=0)
    want, want_test = _batches(ds), ds.test_x.materialise()
    shipped = pickle.dumps(ds)
    assert len(shipped) < 20_000  # paths, positions and where to find the data: no pixels
    del ds
    shutil.rmtree(tmp_path / "driver_cache")  # the driver's cache path does not exist on this node
    (tmp_path / "node_cache").mkdir()
    monkeypatch.setenv(IMAGE_CACHE_ENV, str(tmp_path / "node_cache"))
    marker = tmp_path / "decodes.txt"
    _count_decodes(monkeypatch, marker)
    trial = pickle.loads(shipped)
    assert not Path(trial.train_x.path).exists()
    got = _batches(trial)
    assert _decodes(marker) == 1  # train, selection and test views all found the one cache built here
    assert len(got) == len(want)
    for b_want, b_got in zip(want, got):
        for t_want, t_got in zip(b_want, b_got):
            assert torch.equal(t_want, t_got)
    assert torch.equal(trial.test_x.materialise(), want_test)
    (cache,) = _caches(tmp_path / "node_cache")
    assert {trial.train_x.path, trial.val_x.path, trial.test_x.path} == {str(cache / "train_x.npy"),
                                                                          str(cache / "val_x.npy")}


def test_a_split_refuses_a_file_with_other_rows_than_it_was_made_from(tmp_path):
    x = torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8)
    np.save(tmp_path / "x.npy", x.numpy())
    shipped = pickle.dumps(ImageRows(tmp_path / "x.npy").select(torch.tensor([5, 0])))
    np.save(tmp_path / "x.npy", x[:5].numpy())  # one row fewer: position 5 would read past the end
    with pytest.raises(DataError, match=r"x.npy' are \(5, 3, 4, 4\), not the \(6, 3, 4, 4\) this split was made"):
        pickle.loads(shipped)[0]


def test_a_node_with_other_data_or_without_its_variable_is_refused_in_one_sentence(tmp_path, monkeypatch):
    root = _write_folder(tmp_path / "data")
    monkeypatch.setenv("DATA_ROOT", str(root))
    monkeypatch.setenv(IMAGE_CACHE_ENV, str(tmp_path / "driver_cache"))
    shipped = pickle.dumps(load_dataset("imagefolder", root="${DATA_ROOT}", image_size=8))
    shutil.rmtree(tmp_path / "driver_cache")
    other = _write_folder(tmp_path / "other", seed=1)  # same names and sizes of folders, other pixels
    monkeypatch.setenv("DATA_ROOT", str(other))
    monkeypatch.setenv(IMAGE_CACHE_ENV, str(tmp_path / "node_cache"))
    with pytest.raises(DataError, match=r"holds other data than the sweep was prepared with .*identical copy$"):
        pickle.loads(shipped).train_x[0]
    assert not _caches(tmp_path / "node_cache")
    monkeypatch.delenv("DATA_ROOT")
    with pytest.raises(DataError, match=r"names the environment variable DATA_ROOT, which is not set on this"):
        pickle.loads(shipped).train_x[0]


# ------------------------------------------------------------------------------ checks before a sweep


def _config(root: str, **data) -> object:
    extra = "".join(f", {k}: {v}" for k, v in data.items())
    return config_from_text(f"data: {{dataset: imagefolder, root: '{root}', image_size: 8{extra}}}")


def test_the_checks_before_a_sweep_list_the_files_and_decode_a_sample_only(tmp_path, monkeypatch):
    root = _write_folder(tmp_path / "data", train=30, val=5)
    monkeypatch.setenv("DATA_ROOT", str(root))
    decoded = []
    real = imagefolder._decode
    monkeypatch.setattr(imagefolder, "_decode", lambda path, size: decoded.append(path) or real(path, size))
    check_splits(_config("${DATA_ROOT}", val_fraction=0.2))
    assert 0 < len(decoded) <= imagefolder.SURVEY_SAMPLE and not (root / ".pursuhint_cache").exists()
    survey = survey_dataset("imagefolder", "${DATA_ROOT}", 8, val_samples=6, seed=0, val_fraction=0.2)
    loaded = load_dataset("imagefolder", str(root), 8, val_samples=6, seed=0, val_fraction=0.2)
    assert survey.splits == loaded.splits and survey.classes == loaded.classes  # the same splits, same hashes
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(survey, f"{split}_y"), getattr(loaded, f"{split}_y"))
    with pytest.raises(DataError, match=r"the selection split of 'imagefolder' \(1 images\) lacks class"):
        check_splits(_config(str(root), train_samples=20, val_fraction=0.05))
    with pytest.raises(DataError, match=r"has 10 images, fewer than the 11 requested"):
        check_splits(_config(str(root), val_samples=11))
    bad = root / "train" / "ant" / "000.png"  # the first file of the listing is in the sample
    bad.write_bytes(b"not an image")
    with pytest.raises(DataError, match=rf"image '{bad}' cannot be decoded"):
        check_splits(_config(str(root)))


def test_an_image_cache_folder_the_trials_cannot_write_is_refused_before_the_sweep(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    folder.mkdir()
    monkeypatch.setenv(IMAGE_CACHE_ENV, str(folder))
    cfg = _config(str(tmp_path / "data"))
    check_image_cache(cfg)  # writable: passes, and leaves nothing behind
    assert not list(folder.iterdir())
    mode = folder.stat().st_mode
    folder.chmod(stat.S_IMODE(mode) & ~0o222)
    try:
        with pytest.raises(DataError, match=rf"^the image cache folder '{folder}' \(PURSUHINT_IMAGE_CACHE\) is not "
                                            r"writable \(.*\); make it writable for the user the trials run as, "
                                            r"or point PURSUHINT_IMAGE_CACHE at a writable folder$"):
            check_image_cache(cfg)
    finally:
        folder.chmod(stat.S_IMODE(mode))
    (tmp_path / "file").write_text("a file, not a folder")
    monkeypatch.setenv(IMAGE_CACHE_ENV, str(tmp_path / "file" / "cache"))
    with pytest.raises(DataError, match="is not writable"):
        check_image_cache(cfg)
    check_image_cache(config_from_text("data: {dataset: digits}"))  # no ImageFolder: nothing to check
