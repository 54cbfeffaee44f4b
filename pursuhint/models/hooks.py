"""Forward hooks by module path, written once: find the module at a path, and tap modules' outputs and inputs.

Candidate layers (their shapes), the representation pass, the trainer's hint features, calibration and the
torchdistill export all address modules by path (``layer2.3``) and read them through these.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
from torch import nn

from ..errors import ModelError, PursuhintError


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


def module_at(model: nn.Module, path: str) -> nn.Module:
    """The submodule at ``path`` (e.g. ``layer2.3``), or a PursuhintError naming it and some valid paths."""
    try:
        return model.get_submodule(path)
    except (AttributeError, TypeError):
        raise PursuhintError(f"unknown layer {path!r} in {type(model).__name__}: it is not a module path; valid "
                             f"paths look like {example_paths(model)}") from None


def example_paths(model: nn.Module, n: int = 5) -> str:
    """A few module paths of ``model`` (its blocks if it has any) for error messages."""
    from . import model_block_stages  # lazy: models imports torchvision

    names = [name for stage in model_block_stages(model) for name in stage]
    if not names:
        names = [name for name, _ in model.named_modules() if name]
    shown = ", ".join(repr(name) for name in names[:n])
    return shown + (", …" if len(names) > n else "") if shown else "(the model has no submodules)"


class Taps:
    """Forward hooks on the modules at ``outputs`` (and pre-hooks on those at ``inputs``), removed on ``close``
    or at the end of a ``with`` block.

    Each forward, ``calls[i]`` counts output module i's runs and its output goes to ``on_output(i, output)``
    when given, else it is kept as ``outputs[i]`` (the latest); ``inputs[j]`` keeps the latest first
    positional input of input module j (e.g. a classifier's input, the penultimate embedding).
    """

    def __init__(self, model: nn.Module, outputs: Sequence[str] = (), inputs: Sequence[str] = (),
                 on_output: Optional[Callable[[int, Any], None]] = None) -> None:
        self.outputs: list[Any] = [None] * len(outputs)
        self.inputs: list[Any] = [None] * len(inputs)
        self.calls = [0] * len(outputs)
        self._on_output = on_output
        self._handles = [module_at(model, p).register_forward_hook(self._output_hook(i)) for i, p in enumerate(outputs)]
        self._handles += [module_at(model, p).register_forward_pre_hook(self._input_hook(j))
                          for j, p in enumerate(inputs)]

    def _output_hook(self, i: int) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            self.calls[i] += 1
            if self._on_output is not None:
                self._on_output(i, output)
            else:
                self.outputs[i] = output
        return hook

    def _input_hook(self, j: int) -> Callable[..., None]:
        def hook(_module: nn.Module, args: Any) -> None:
            self.inputs[j] = args[0]
        return hook

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> "Taps":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def taps(model: nn.Module, outputs: Sequence[str], inputs: Sequence[str] = ()) -> Taps:
    """``Taps`` keeping the latest output of each module at ``outputs`` (and input at ``inputs``)."""
    return Taps(model, outputs, inputs)


def output_shapes(model: nn.Module, paths: Sequence[str], input_shape: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """The per-sample shape of each module's output in one eval-mode, no-grad forward of zeros with
    ``input_shape`` (C, H, W), in execution order (modules that never ran are left out). A module that runs
    more than once per forward has no single output: a PursuhintError."""
    shapes: dict[str, tuple[int, ...]] = {}

    def keep(i: int, output: Any) -> None:
        if not isinstance(output, torch.Tensor):
            raise PursuhintError(f"module {paths[i]!r} of {type(model).__name__} outputs a {type(output).__name__}, "
                                 f"not a tensor; it cannot be a hint layer")
        shapes.setdefault(paths[i], tuple(int(d) for d in output.shape[1:]))

    params = next(iter(model.parameters()), None)
    dtype = params.dtype if params is not None and params.is_floating_point() else torch.float32
    dummy = torch.zeros(1, *input_shape, device=module_device(model), dtype=dtype)
    with Taps(model, paths, on_output=keep) as tapped:
        try:
            with eval_mode(model), torch.no_grad():
                model(dummy)
        except PursuhintError:
            raise
        except Exception as err:  # noqa: BLE001 - the user's model rejected the dummy input: say what to pass
            raise ModelError(f"a dummy forward of {type(model).__name__} on input_shape {tuple(input_shape)} failed "
                             f"({err}); pass the input_shape (C, H, W) the model expects") from err
    repeated = [(p, n) for p, n in zip(paths, tapped.calls) if n > 1]
    if repeated:
        raise PursuhintError(f"module {repeated[0][0]!r} runs {repeated[0][1]} times per forward, so its output is "
                             f"ambiguous; choose modules that run once (e.g. the block, not a shared activation)")
    return shapes
