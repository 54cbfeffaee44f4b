"""Candidate hint points: the layers of a teacher (or student) that may carry a hint."""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Iterator

import torch
from torch import nn

from ..errors import ModelError, PursuhintError


@dataclass(frozen=True)
class CandidateLayer:
    """One candidate hint point.

    ``name`` is the module path (e.g. ``layer2.3``), ``index`` its 0-based position along depth,
    ``relative_depth`` = (index + 1) / L in (0, 1], ``stage`` the 0-based stage it belongs to,
    ``channels`` and ``spatial`` (H, W) of its output for the reference input.
    """

    name: str
    index: int
    relative_depth: float
    stage: int
    channels: int
    spatial: tuple[int, int]

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_SPATIAL = (32, 32)


def module_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a model with neither."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode for the block, then give each its own training flag back."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, flag in flags:
            module.training = flag


def tapped_module(model: nn.Module, layer_name: str) -> nn.Module:
    """The submodule at path ``layer_name`` (e.g. ``layer2.3``), or a PursuhintError if there is none."""
    try:
        return model.get_submodule(layer_name)
    except (AttributeError, TypeError):
        raise PursuhintError(
            f"layer {layer_name!r} is not a module path of {type(model).__name__}; "
            f"valid paths look like {_example_paths(model)}"
        ) from None


def _example_paths(model: nn.Module, n: int = 5) -> str:
    """A few module paths of ``model`` (blocks if it has any) for error messages."""
    names = [name for stage in _block_stages(model) for name in stage]
    if not names:
        names = [name for name, _ in model.named_modules() if name]
    shown = ", ".join(repr(name) for name in names[:n])
    return shown + (", …" if len(names) > n else "") if shown else "(the model has no submodules)"


def _block_stages(model: nn.Module) -> list[list[str]]:
    """Module paths of the model's residual blocks grouped by stage (``pursuhint.models`` knows how)."""
    from ..models import model_block_stages  # lazy: models imports torchvision, hints need not at import

    return model_block_stages(model)


def candidate_layers(
    model: nn.Module,
    granularity: str = "block",
    input_shape: tuple[int, int, int] | None = None,
) -> list[CandidateLayer]:
    """The candidate hint points of ``model`` in depth order, sized by one dummy forward.

    ``granularity`` is ``"block"`` (every residual block; stage = the model's stage) or
    ``"pattern:<regex>"`` (every module whose path fully matches, in execution order; stage =
    runs of equal spatial size). ``input_shape`` is (C, H, W) of the dummy input; by default
    (in_channels of the first Conv2d, 32, 32).
    """
    if not isinstance(granularity, str):
        raise PursuhintError(f"granularity {granularity!r} is not a string; use 'block' or 'pattern:<regex>'")
    if granularity == "block":
        stages = [list(stage) for stage in _block_stages(model) if stage]
        if not stages:
            raise PursuhintError(
                f"{type(model).__name__} has no known residual blocks for granularity 'block'; "
                "use granularity 'pattern:<regex>' to name the candidate modules"
            )
        ordered = [name for stage in stages for name in stage]
        stage_of = {name: s for s, stage in enumerate(stages) for name in stage}
        shapes = _output_shapes(model, ordered, input_shape)
        idle = [name for name in ordered if name not in shapes]
        if idle:
            raise PursuhintError(f"block {idle[0]!r} never runs in forward(), so it cannot be a candidate layer")
    elif granularity.startswith("pattern:"):
        regex = _compile(granularity[len("pattern:"):])
        names = [name for name, _ in model.named_modules() if name and regex.fullmatch(name)]
        if not names:
            raise PursuhintError(
                f"granularity {granularity!r} matches no module path of {type(model).__name__}; "
                f"paths look like {_example_paths(model)}"
            )
        shapes = _output_shapes(model, names, input_shape)
        ordered = list(shapes)  # execution order; modules that never ran are dropped
        if not ordered:
            raise PursuhintError(
                f"granularity {granularity!r} matches only modules that never run in forward(); "
                "pick modules on the forward path"
            )
        stage_of, stage, previous = {}, -1, None
        for name in ordered:
            spatial = shapes[name][1]
            if spatial != previous:
                stage, previous = stage + 1, spatial
            stage_of[name] = stage
    else:
        raise PursuhintError(f"unknown granularity {granularity!r}; valid: 'block' or 'pattern:<regex>'")

    count = len(ordered)
    return [
        CandidateLayer(
            name=name,
            index=i,
            relative_depth=(i + 1) / count,
            stage=stage_of[name],
            channels=shapes[name][0],
            spatial=shapes[name][1],
        )
        for i, name in enumerate(ordered)
    ]


def _compile(pattern: str) -> re.Pattern:
    """The compiled regex, or a PursuhintError naming it."""
    if not pattern:
        raise PursuhintError("granularity 'pattern:' has an empty regex; write e.g. 'pattern:layer\\d\\.\\d+'")
    try:
        return re.compile(pattern)
    except re.error as err:
        raise PursuhintError(f"granularity pattern {pattern!r} is not a valid regex ({err})") from None


def default_input_shape(model: nn.Module) -> tuple[int, int, int]:
    """(in_channels of the model's first Conv2d, 32, 32): the CIFAR-sized dummy input."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return (module.in_channels, *DEFAULT_SPATIAL)
    raise PursuhintError(
        f"{type(model).__name__} has no Conv2d to infer the input channels from; pass input_shape=(C, H, W)"
    )


def _output_shapes(
    model: nn.Module, names: list[str], input_shape: tuple[int, int, int] | None
) -> dict[str, tuple[int, tuple[int, int]]]:
    """(channels, (H, W)) of each named module's output from one eval-mode dummy forward, in execution order."""
    modules = {name: tapped_module(model, name) for name in names}
    shape = tuple(input_shape) if input_shape is not None else default_input_shape(model)
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise PursuhintError(f"input_shape {input_shape!r} is not (C, H, W) with positive integers")

    seen: dict[str, tuple[int, tuple[int, int]]] = {}
    calls: dict[str, int] = {}

    def hook_for(name: str):
        def hook(module: nn.Module, args, output) -> None:
            calls[name] = calls.get(name, 0) + 1
            seen.setdefault(name, _channels_spatial(name, output))

        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in modules.items()]
    params = next(iter(model.parameters()), None)
    dtype = params.dtype if params is not None and params.is_floating_point() else torch.float32
    dummy = torch.zeros(1, *shape, device=module_device(model), dtype=dtype)
    try:
        with eval_mode(model), torch.no_grad():
            model(dummy)
    except PursuhintError:
        raise
    except Exception as err:  # the user's model rejected the dummy input
        raise ModelError(
            f"a dummy forward of {type(model).__name__} on input_shape {shape} failed ({err}); "
            "pass the input_shape (C, H, W) the model expects"
        ) from err
    finally:
        for handle in handles:
            handle.remove()

    repeated = [name for name, n in calls.items() if n > 1]
    if repeated:
        raise PursuhintError(
            f"module {repeated[0]!r} runs {calls[repeated[0]]} times per forward, so its output is ambiguous; "
            "choose modules that run once (e.g. the block, not a shared activation)"
        )
    return seen


def _channels_spatial(name: str, output: object) -> tuple[int, tuple[int, int]]:
    """(C, (H, W)) of a (N, C, H, W) output, (C, (1, 1)) of a (N, C) one; else a PursuhintError."""
    if isinstance(output, torch.Tensor) and output.dim() == 4:
        return int(output.shape[1]), (int(output.shape[2]), int(output.shape[3]))
    if isinstance(output, torch.Tensor) and output.dim() == 2:
        return int(output.shape[1]), (1, 1)
    kind = f"a {output.dim()}-D tensor" if isinstance(output, torch.Tensor) else type(output).__name__
    raise PursuhintError(
        f"module {name!r} outputs {kind}; a candidate layer must output an (N, C, H, W) or (N, C) tensor"
    )
