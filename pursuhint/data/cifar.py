"""The built-in ``cifar10`` and ``cifar100`` data sets, from the official "python version" archives unpacked
by the user, read through an unpickler that builds numpy arrays and plain containers only."""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .dataset import DATASETS, ImageDataset, dataset_with_stats, expand_root
from .pixels import resize_images


_NUMPY_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # how Python 3 writes bytes in protocol-2 pickles; harmless
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler for the CIFAR batch files: only numpy arrays and plain containers may be built.

    The official archives are pickles (written by Python 2, hence ``encoding="bytes"``); refusing
    every other global means a tampered file cannot run code.
    """

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's own signature
        if module.startswith("numpy.core"):  # numpy 1.x spelling of the same module
            module = "numpy._core" + module[len("numpy.core") :]
        if (module, name) not in _NUMPY_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR file")
        if module == "numpy._core.multiarray":
            try:
                return getattr(importlib.import_module(module), name)
            except ImportError:  # numpy < 2 has only numpy.core
                return getattr(importlib.import_module("numpy.core.multiarray"), name)
        return super().find_class(module, name)


def _read_pickle(path: Path, folder: Path, expected: str) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - unreadable, truncated, not a pickle, or a forbidden global
        raise DataError(
            f"cannot read {path.name} in {str(folder)!r} ({type(e).__name__}: {e}); expected {expected}"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(f"{path.name} in {str(folder)!r} is not a CIFAR pickle dict; expected {expected}")
    return obj


def _cifar_arrays(path: Path, folder: Path, label_key: bytes, expected: str) -> tuple[np.ndarray, np.ndarray]:
    obj = _read_pickle(path, folder, expected)
    data, labels = obj.get(b"data"), obj.get(label_key)
    if data is None or labels is None:
        raise DataError(
            f"{path.name} in {str(folder)!r} lacks the keys b'data' and {label_key!r}; expected {expected}"
        )
    data = np.asarray(data)
    labels = np.asarray(labels)
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8 or labels.shape != (len(data),):
        raise DataError(
            f"{path.name} in {str(folder)!r} holds data {data.dtype} {data.shape} with {labels.shape} labels; "
            "expected uint8 N×3072 rows (R, G, B planes of 32×32) and N labels"
        )
    return data, labels.astype(np.int64)


def _cifar_folder(root: str | None, sub: str, marker: str, expected: str, name: str) -> Path:
    if root is None:
        raise DataError(f"data set {name!r} needs root, a folder holding {sub}/ ({expected})")
    base = expand_root(root)
    for candidate in (base / sub, base):
        if (candidate / marker).is_file():
            return candidate
    raise DataError(
        f"neither {str(base / sub)!r} nor {str(base)!r} is a {name} folder holding {marker}; expected {expected}"
    )


def _load_cifar(
    name: str,
    root: str | None,
    image_size: int | None,
    sub: str,
    train_files: list[str],
    test_file: str,
    meta_file: str,
    label_key: bytes,
    names_key: bytes,
    num_classes: int,
) -> ImageDataset:
    expected = f"{', '.join(train_files + [test_file])} and {meta_file} from the official python archive"
    folder = _cifar_folder(root, sub, train_files[0], expected, name)
    missing = [f for f in train_files + [test_file] if not (folder / f).is_file()]
    if missing:
        raise DataError(f"CIFAR folder {str(folder)!r} lacks {', '.join(missing)}; expected {expected}")
    parts = [_cifar_arrays(folder / f, folder, label_key, expected) for f in train_files]
    train_data = np.concatenate([p[0] for p in parts])
    train_labels = np.concatenate([p[1] for p in parts])
    val_data, val_labels = _cifar_arrays(folder / test_file, folder, label_key, expected)

    classes = [f"class_{i}" for i in range(num_classes)]
    if (folder / meta_file).is_file():
        meta = _read_pickle(folder / meta_file, folder, expected)
        names = meta.get(names_key)
        if not isinstance(names, list) or len(names) != num_classes:
            raise DataError(
                f"{meta_file} in {str(folder)!r} lacks {names_key!r} with {num_classes} names; expected {expected}"
            )
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    for split, labels in (("train", train_labels), ("test", val_labels)):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise DataError(
                f"{name} {split} labels in {str(folder)!r} span {labels.min()}..{labels.max()}; "
                f"expected 0..{num_classes - 1}"
            )

    def images(data: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32))
        return resize_images(x, image_size) if image_size else x

    return dataset_with_stats(
        name,
        images(train_data),
        torch.from_numpy(train_labels),
        images(val_data),
        torch.from_numpy(val_labels),
        classes,
        "crop_flip",
    )


@DATASETS.register("cifar10")
def load_cifar10(root: str | None, image_size: int | None, seed: int) -> ImageDataset:
    """CIFAR-10 from ``root/cifar-10-batches-py/`` (or that folder itself); the test batch is the val split."""
    files = [f"data_batch_{i}" for i in range(1, 6)]
    return _load_cifar(
        "cifar10", root, image_size, "cifar-10-batches-py", files, "test_batch", "batches.meta",
        b"labels", b"label_names", 10,
    )


@DATASETS.register("cifar100")
def load_cifar100(root: str | None, image_size: int | None, seed: int) -> ImageDataset:
    """CIFAR-100 (fine labels) from ``root/cifar-100-python/`` (or that folder itself); test is the val split."""
    return _load_cifar(
        "cifar100", root, image_size, "cifar-100-python", ["train"], "test", "meta",
        b"fine_labels", b"fine_label_names", 100,
    )
