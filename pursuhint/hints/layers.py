"""Candidate hint points: the layers of a teacher (or student) that may carry a hint."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from torch import nn

from ..errors import PursuhintError
from ..models.hooks import eval_mode, example_paths, module_at, module_device, output_shapes

tapped_module = module_at  # the name the hints package has exported
__all__ = ["CandidateLayer", "candidate_layers", "default_input_shape", "eval_mode", "module_device", "tapped_module"]


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


def _block_stages(model: nn.Module) -> list[list[str]]:
    """Module paths of the model's blocks grouped by stage, as its ``block_stages()`` (the ``HintModel`` contract)
    names them; a ModelError naming that member when the model does not offer it."""
    from ..models import require_block_stages  # lazy: models imports torchvision, hints need not at import

    return require_block_stages(model)


def candidate_layers(
    model: nn.Module,
    granularity: str = "block",
    input_shape: tuple[int, int, int] | None = None,
) -> list[CandidateLayer]:
    """The candidate hint points of ``model`` in depth order, sized by one dummy forward.

    ``granularity`` is ``"block"`` (every block its ``block_stages()`` names, see ``pursuhint.models.HintModel``;
    stage = the model's stage) or
    ``"pattern:<regex>"`` (every module whose path fully matches, in execution order; stage =
    runs of equal spatial size). ``input_shape`` is (C, H, W) of the dummy input; by default
    (in_channels of the first Conv2d, 32, 32).
    """
    if not isinstance(granularity, str):
        raise PursuhintError(f"granularity {granularity!r} is not a string; use 'block' or 'pattern:<regex>'")
    if granularity == "block":
        ordered, stage_of, shapes = _block_candidates(model, input_shape)
    elif granularity.startswith("pattern:"):
        ordered, stage_of, shapes = _pattern_candidates(model, granularity, input_shape)
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


_Candidates = tuple[list[str], dict[str, int], dict[str, tuple[int, tuple[int, ...]]]]  # order, stage, shape


def _block_candidates(model: nn.Module, input_shape: tuple[int, int, int] | None) -> _Candidates:
    """Every block in depth order, its stage the model's stage; all must run in forward()."""
    stages = _block_stages(model)
    ordered = [name for stage in stages for name in stage]
    stage_of = {name: s for s, stage in enumerate(stages) for name in stage}
    shapes = _output_shapes(model, ordered, input_shape)
    idle = [name for name in ordered if name not in shapes]
    if idle:
        raise PursuhintError(f"block {idle[0]!r} never runs in forward(), so it cannot be a candidate layer")
    return ordered, stage_of, shapes


def _pattern_candidates(model: nn.Module, granularity: str, input_shape: tuple[int, int, int] | None) -> _Candidates:
    """Every module whose path fully matches the pattern, in execution order; stages are runs of equal size."""
    regex = _compile(granularity[len("pattern:"):])
    names = [name for name, _ in model.named_modules() if name and regex.fullmatch(name)]
    if not names:
        raise PursuhintError(
            f"granularity {granularity!r} matches no module path of {type(model).__name__}; "
            f"paths look like {example_paths(model)}"
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
    return ordered, stage_of, shapes


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
    shape = tuple(input_shape) if input_shape is not None else default_input_shape(model)
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise PursuhintError(f"input_shape {input_shape!r} is not (C, H, W) with positive integers")
    return {name: _channels_spatial(name, s) for name, s in output_shapes(model, names, shape).items()}


def _channels_spatial(name: str, shape: tuple[int, ...]) -> tuple[int, tuple[int, int]]:
    """(C, (H, W)) of a per-sample (C, H, W) output, (C, (1, 1)) of a (C,) one; else a PursuhintError."""
    if len(shape) == 3:
        return shape[0], (shape[1], shape[2])
    if len(shape) == 1:
        return shape[0], (1, 1)
    raise PursuhintError(
        f"module {name!r} outputs a {len(shape) + 1}-D tensor; a candidate layer must output an (N, C, H, W) or "
        f"(N, C) tensor"
    )
