"""Three splits: training, selection (carved from the training data) and test (the held-out part)."""

from __future__ import annotations

import pytest
import torch

from pursuhint.config import config_from_text
from pursuhint.data import ImageDataset, load_dataset, train_val_loaders
from pursuhint.data.splits import carve_selection_split, split_hash
from pursuhint.errors import ConfigError, DataError


def _tagged(n_train: int, n_held: int, classes: int = 5) -> ImageDataset:
    """Images whose first two pixels spell their id (train ids 0.., held-out ids 10 000..)."""
    def images(ids: torch.Tensor) -> torch.Tensor:
        x = torch.zeros(len(ids), 1, 8, 8, dtype=torch.uint8)
        x[:, 0, 0, 0] = (ids // 256).to(torch.uint8)
        x[:, 0, 0, 1] = (ids % 256).to(torch.uint8)
        return x

    train_ids, held_ids = torch.arange(n_train), 10_000 + torch.arange(n_held)
    return ImageDataset("tagged", images(train_ids), train_ids % classes, images(held_ids), held_ids % classes,
                        classes, [str(c) for c in range(classes)], (0.0,), (1 / 255,), "none")


def _ids(x: torch.Tensor) -> set[int]:
    return set((x[:, 0, 0, 0].long() * 256 + x[:, 0, 0, 1].long()).tolist())


def test_splits_are_disjoint_stratified_and_stable_for_a_seed():
    ds = carve_selection_split(_tagged(500, 100), 0.1, seed=3)
    train, sel, test = _ids(ds.train_x), _ids(ds.val_x), _ids(ds.test_x)
    assert len(sel) == 50 and len(train) == 450 and len(test) == 100
    assert not (train & sel) and not (train & test) and not (sel & test)
    assert train | sel == set(range(500))
    assert torch.bincount(ds.val_y).tolist() == [10] * 5  # stratified: 10 % of each class
    again = carve_selection_split(_tagged(500, 100), 0.1, seed=3)
    assert _ids(again.val_x) == sel and again.splits == ds.splits
    other = carve_selection_split(_tagged(500, 100), 0.1, seed=4)
    assert _ids(other.val_x) != sel and other.splits["selection"]["hash"] != ds.splits["selection"]["hash"]
    assert ds.splits["train"]["size"] == 450 and ds.splits["selection"]["size"] == 50
    assert ds.splits["test"] == {"size": 100, "hash": split_hash(torch.arange(100))}


def test_training_batches_never_hold_a_selection_or_test_image():
    ds = carve_selection_split(_tagged(300, 60), 0.2, seed=0)
    held_out = _ids(ds.val_x) | _ids(ds.test_x)
    train, _ = train_val_loaders(ds, 32, augment="none", seed=1, with_index=True)
    seen = set()
    for epoch in range(2):
        train.set_epoch(epoch)
        for images, _labels, index in train:
            raw = torch.round(images * 1.0).to(torch.int64)  # mean 0, std 1/255: back to the byte values
            ids = set((raw[:, 0, 0, 0] * 256 + raw[:, 0, 0, 1]).tolist())
            assert not ids & held_out
            assert ids == _ids(ds.train_x[index])  # the loader's indices are positions in the training part
            seen |= ids
    assert seen <= _ids(ds.train_x) and len(seen) >= 224  # 240 training images, 7 full batches of 32 an epoch


def test_digits_get_three_splits_with_the_default_fraction():
    cfg = config_from_text("data: {dataset: digits}")
    assert cfg.data.val_fraction == 0.1
    ds = load_dataset("digits", seed=0, val_fraction=cfg.data.val_fraction)
    assert ds.test_x.shape[0] == 359  # the fixed stratified 20 % held out
    assert ds.val_x.shape[0] == round(0.1 * 1438) and ds.train_x.shape[0] == 1438 - ds.val_x.shape[0]
    assert set(ds.splits) == {"train", "selection", "test"}


@pytest.mark.parametrize("value", [0, 0.5, 0.7, -0.1])
def test_val_fraction_outside_the_open_interval_is_refused(value):
    with pytest.raises(ConfigError, match=rf"data.val_fraction = {value!r} is invalid: expected a number strictly "
                                          r"between 0 and 0.5"):
        config_from_text(f"data: {{val_fraction: {value}}}")
    with pytest.raises(DataError, match="strictly between 0 and 0.5"):
        carve_selection_split(_tagged(100, 10), value, seed=0)


def test_a_split_too_small_to_hold_every_class_is_refused():
    with pytest.raises(DataError, match=r"the selection split of 'tagged' \(4 images\) lacks class"):
        carve_selection_split(_tagged(40, 20, classes=5), 0.1, seed=0)
