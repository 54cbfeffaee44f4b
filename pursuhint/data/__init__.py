"""Data sets as uint8 images (in memory, or memory-mapped) and the on-device batching/augmentation pipeline."""

from .dataset import AUGMENTATIONS, DATASETS, SURVEYS, ImageDataset, load_dataset, survey_dataset

# Importing the built-in data sets registers them, in this (listing) order.
from . import digits, cifar, imagefolder  # noqa: F401
from .loader import DeviceLoader, probe_images, probe_loader, resolve_augment, train_val_loaders
from .mapped import ImageRows
from .pixels import channel_stats, resize_images
from .splits import stratified_indices

__all__ = [
    "AUGMENTATIONS",
    "DATASETS",
    "SURVEYS",
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
    "survey_dataset",
]
