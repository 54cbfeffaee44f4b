"""The probe pass: one hooked forward per batch turns every candidate layer into an N × C_i matrix."""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..infra.devices import full_fp32
from ..errors import DataError, PursuhintError
from ..models.hooks import eval_mode, module_at, module_device
from .layers import CandidateLayer


def layer_representations(
    model: nn.Module,
    batches: Iterable,
    layers: Sequence[CandidateLayer] | Sequence[str],
    preact: bool = False,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> list[torch.Tensor]:
    """One float32 (N × C_i) tensor per layer: each layer's output, global-average-pooled over H×W.

    All layers come from ONE eval-mode forward per batch (forward hooks), on the model's device, in full
    fp32 (TF32 and autocast off);
    ``batches`` yields image tensors or (images, labels) tuples. The results stay on that device.
    ``preact=True`` taps the sum before a block's final activation: the input to the LAST call
    of the block's child module named ``relu`` during the block's forward (e.g. torchvision's
    BasicBlock/Bottleneck); blocks without such a child raise a PursuhintError.
    """
    names = _layer_names(layers)
    modules = [module_at(model, name) for name in names]
    run_on = _check_device(model, device)

    pooled: list[list[torch.Tensor]] = [[] for _ in names]
    calls = [0] * len(names)
    handles = []
    n_batches = 0
    try:
        for i, (name, module) in enumerate(zip(names, modules)):
            handles.extend(_tap(i, name, module, preact, pooled, calls))
        # full fp32 (no TF32, no autocast): a CPU and a GPU pick the same hints when layers are nearly tied
        with eval_mode(model), torch.inference_mode(), full_fp32(), torch.autocast(run_on.type, enabled=False):
            for batch in _progress(batches, progress):
                images = _images(batch).to(run_on, non_blocking=True)
                calls[:] = [0] * len(names)
                model(images)
                _check_calls(names, calls)
                n_batches += 1
    finally:
        for handle in handles:
            handle.remove()
    if n_batches == 0:
        raise DataError("the probe set yielded no batches; give it at least one batch of images")
    # concatenated outside inference mode, so callers get ordinary tensors they may modify in place
    return [torch.cat(chunks) for chunks in pooled]


def _layer_names(layers: Sequence[CandidateLayer] | Sequence[str]) -> list[str]:
    """Module paths of ``layers`` (CandidateLayers or strings); a PursuhintError if there are none."""
    if isinstance(layers, (str, CandidateLayer)):
        layers = [layers]
    names = [layer.name if isinstance(layer, CandidateLayer) else layer for layer in layers]
    if not names:
        raise PursuhintError("no layers to tap were given; pass candidate_layers(model) or module paths")
    bad = [name for name in names if not isinstance(name, str)]
    if bad:
        raise PursuhintError(f"layer {bad[0]!r} is neither a CandidateLayer nor a module path string")
    return names


def _check_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    """Where the pass runs: the model's device, which ``device`` (when given) must agree with."""
    here = module_device(model)
    if device is None:
        return here
    try:
        wanted = torch.device(device)
    except (RuntimeError, TypeError):
        raise PursuhintError(f"device {device!r} is not a torch device such as 'cpu' or 'cuda'") from None
    same = wanted.type == here.type and (wanted.index is None or wanted.index == here.index)
    if not same and any(True for _ in model.parameters()):
        raise PursuhintError(
            f"device {str(wanted)!r} differs from the model's device {str(here)!r}; move the model there first"
        )
    return here if same else wanted


def _pool(name: str, tensor: object) -> torch.Tensor:
    """Global average pool of an (N, C, H, W) tensor in float32; an (N, C) one is used as is."""
    if isinstance(tensor, torch.Tensor) and tensor.dim() == 4:
        return tensor.mean(dim=(2, 3), dtype=torch.float32)
    if isinstance(tensor, torch.Tensor) and tensor.dim() == 2:
        return tensor.to(torch.float32, copy=True)
    kind = f"a {tensor.dim()}-D tensor" if isinstance(tensor, torch.Tensor) else type(tensor).__name__
    raise PursuhintError(f"layer {name!r} outputs {kind}; a tapped layer must output (N, C, H, W) or (N, C)")


def _tap(
    i: int, name: str, module: nn.Module, preact: bool, pooled: list[list[torch.Tensor]], calls: list[int]
) -> list[torch.utils.hooks.RemovableHandle]:
    """Hooks that append layer ``i``'s pooled output (or pre-activation) to ``pooled[i]`` per forward."""
    if not preact:

        def on_output(mod: nn.Module, args, output) -> None:
            calls[i] += 1
            pooled[i].append(_pool(name, output))

        return [module.register_forward_hook(on_output)]

    relu = getattr(module, "relu", None)
    if not isinstance(relu, nn.Module) or relu not in set(module.children()):
        raise PursuhintError(
            f"preact is not supported for layer {name!r} ({type(module).__name__} has no child module "
            "named 'relu' whose input is the pre-activation sum); use preact=False"
        )
    last: list[torch.Tensor | None] = [None]

    def on_relu_input(mod: nn.Module, args) -> None:
        # pooled at once, before an in-place ReLU overwrites its input; the last call wins
        last[0] = _pool(name, args[0])

    def on_block_output(mod: nn.Module, args, output) -> None:
        calls[i] += 1
        if last[0] is None:
            raise PursuhintError(f"preact is not supported for layer {name!r}: its 'relu' child never ran")
        pooled[i].append(last[0])
        last[0] = None

    return [relu.register_forward_pre_hook(on_relu_input), module.register_forward_hook(on_block_output)]


def _check_calls(names: list[str], calls: list[int]) -> None:
    """Every tapped layer ran exactly once in the forward just done, or its output is ambiguous/missing."""
    for name, n in zip(names, calls):
        if n == 0:
            raise PursuhintError(f"layer {name!r} never ran in forward(); tap modules on the forward path")
        if n > 1:
            raise PursuhintError(
                f"layer {name!r} ran {n} times in one forward, so its output is ambiguous; tap modules that run once"
            )


def _images(batch: object) -> torch.Tensor:
    """The image tensor of a batch: the batch itself or the first item of an (images, labels) pair."""
    if isinstance(batch, (tuple, list)) and batch:
        batch = batch[0]
    if not isinstance(batch, torch.Tensor):
        raise DataError(
            f"a probe batch is a {type(batch).__name__}; batches must be image tensors or (images, labels) tuples"
        )
    return batch


def _progress(batches: Iterable, show: bool) -> Iterable:
    """``batches`` wrapped in a tqdm bar when ``show`` is true."""
    if not show:
        return batches

    return tqdm(batches, desc="representations", unit="batch", total=_length(batches))


def _length(batches: Iterable) -> int | None:
    try:
        return len(batches)  # type: ignore[arg-type]
    except TypeError:
        return None


__all__ = ["layer_representations"]
