"""Data sets as uint8 images (in memory, or memory-mapped) and the on-device batching/augmentation pipeline."""

from .imagefolder import (
    AUGMENTATIONS,
    DATASETS,
    ImageDataset,
    channel_stats,
    load_dataset,
    resize_images,
    stratified_indices,
)
from .mapped import ImageRows
from .loader import DeviceLoader, probe_images, probe_loader, resolve_augment, train_val_loaders

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "DeviceLoader",
    "resolve_augment",
    "train_val_loaders",
    "ImageDataset",
    "ImageRows",
    "channel_stats",
    "load_dataset",
    "probe_images",
    "probe_loader",
    "resize_images",
    "stratified_indices",
]
