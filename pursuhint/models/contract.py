"""What a model must offer to be a teacher or a student (``HintModel``), and the readers that check it."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import nn

from ..errors import ModelError


@runtime_checkable
class HintModel(Protocol):
    """A teacher or a student: an ``nn.Module`` from images (N, C, H, W) to logits (N, classes) that says where its
    candidate layers and its classifier are.

    ``block_stages()``: the module paths of its blocks, one list per stage, in execution order; they are the
    candidate layers of granularity ``block`` (always a student's) and give the stage ends that the paper's mapping,
    ReviewKD and SemCKD pair. A teacher without it needs ``selection.granularity: "pattern:<regex>"``.
    ``classifier_path``: the path of its final ``nn.Linear``, whose input (the penultimate embedding) CRD reads;
    without it, the model's last ``nn.Linear`` is taken.
    """

    classifier_path: str

    def block_stages(self) -> list[list[str]]:
        """Module paths of the model's blocks, one list per stage, in execution order."""
        ...


def model_block_stages(model: nn.Module) -> list[list[str]]:
    """The model's candidate hint points by stage (its ``block_stages()``), or [] when it has none."""
    method = getattr(model, "block_stages", None)
    return [list(stage) for stage in method()] if callable(method) else []


def require_block_stages(model: nn.Module) -> list[list[str]]:
    """The model's non-empty stages for granularity ``block``; a ModelError naming ``block_stages()`` when the model
    lacks the method or it names no block."""
    name = type(model).__name__
    if not callable(getattr(model, "block_stages", None)):
        problem = f"{name} has no block_stages() method"
    else:
        stages = [stage for stage in model_block_stages(model) if stage]
        if stages:
            return stages
        problem = f"{name}.block_stages() names no block"
    raise ModelError(f"{problem}, so granularity 'block' finds no candidate layers; give the model a block_stages() "
                     f"listing its blocks' module paths by stage (pursuhint.models.HintModel), or, for a teacher, use "
                     f"granularity 'pattern:<regex>' to name the candidate modules")


def model_classifier(model: nn.Module) -> str | None:
    """Path of the final linear layer (its input is the penultimate embedding): the model's
    ``classifier_path``, else its last ``nn.Linear`` in registration order, else None."""
    declared = getattr(model, "classifier_path", None)
    if isinstance(declared, str):
        return declared
    linears = [path for path, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def require_classifier(model: nn.Module, purpose: str) -> str:
    """``model_classifier(model)``; a ModelError naming ``classifier_path`` when the model has no ``nn.Linear`` to
    take instead (``purpose``: what needs the classifier, e.g. "CRD")."""
    name = model_classifier(model)
    if name is None:
        raise ModelError(f"cannot find the classifier of {type(model).__name__} for {purpose}; give the model a "
                         f"`classifier_path` attribute naming its final nn.Linear")
    return name
