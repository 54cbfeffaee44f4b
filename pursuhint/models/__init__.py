"""Architectures (the CRD benchmark's CIFAR zoo and torchvision) and their checkpoints."""

from __future__ import annotations

# Importing the zoo modules registers them, in this (listing) order.
from . import resnet, wrn, vgg, mobilenetv2, shufflenet, resnet_imagenet  # noqa: F401,I001
from .checkpoint import load_checkpoint, load_state, save_checkpoint, weights_sha256
from .contract import HintModel, model_block_stages, model_classifier, require_block_stages, require_classifier
from .registry import MODELS, available_models, create_model

__all__ = [
    "HintModel",
    "MODELS",
    "available_models",
    "create_model",
    "load_checkpoint",
    "load_state",
    "model_block_stages",
    "model_classifier",
    "require_block_stages",
    "require_classifier",
    "save_checkpoint",
    "weights_sha256",
]
