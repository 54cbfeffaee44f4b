"""The epoch loop shared by teacher and student training: SGD recipe, evaluation, checkpoints, resume.

A caller supplies the trainable modules and a ``compute_loss(images, labels, indices)`` closure
returning ``(logits, {name: loss_term})`` already weighted; the loop sums the terms, steps, evaluates,
reports an :class:`EpochStats` to every callback and checkpoints each epoch so an interrupted run
resumes to the same final weights (on CPU).
"""

from __future__ import annotations

import math
import os
import random
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import TrainRecipe
from ..infra.devices import autocast, configure_training, cuda_rng_states, restore_cuda_rng_states
from ..errors import CheckpointError
from ..infra.fileio import save_torch_atomic

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, torch.Tensor]]]
Callback = Callable[["EpochStats"], None]


@dataclass
class EpochStats:
    """What one finished epoch reports (the sweep's reporter and MLflow read these)."""

    epoch: int  # 1-based
    epochs: int
    lr: float
    losses: dict[str, float]  # mean of each weighted term, plus "total"
    train_acc: float
    val_acc: float
    val_top5: float
    epoch_time: float
    images_per_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    def as_metrics(self) -> dict[str, float]:
        """Flat scalar metrics: ``train_loss``, ``loss_<term>``, accuracies, lr and timings."""
        out = {f"loss_{k}": v for k, v in self.losses.items() if k != "total"}
        out.update(train_loss=self.losses.get("total", float("nan")), train_acc=self.train_acc,
                   val_acc=self.val_acc, val_top5=self.val_top5, lr=self.lr,
                   epoch_time=self.epoch_time, images_per_s=self.images_per_s)
        out.update({k: float(v) for k, v in self.extra.items() if isinstance(v, (int, float))})
        return out


@dataclass
class FitResult:
    history: list[EpochStats]
    status: str  # "completed" | "diverged" | "error" (a cohort member whose loss or callback raised)
    message: str = ""
    error: Optional[Exception] = None

    @property
    def best_val_acc(self) -> float:
        return max((h.val_acc for h in self.history), default=float("nan"))

    @property
    def final_val_acc(self) -> float:
        return self.history[-1].val_acc if self.history else float("nan")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so a run is reproducible on CPU."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def make_optimizer(params: Iterable[nn.Parameter], recipe: TrainRecipe) -> torch.optim.Optimizer:
    """SGD with momentum and weight decay, as the CRD benchmark trains."""
    return torch.optim.SGD(list(params), lr=recipe.lr, momentum=recipe.momentum,
                           weight_decay=recipe.weight_decay)


def lr_factor(epoch: int, recipe: TrainRecipe) -> float:
    """The learning-rate multiplier for 0-based ``epoch`` under the recipe's schedule."""
    if recipe.warmup_epochs and epoch < recipe.warmup_epochs:
        return (epoch + 1) / (recipe.warmup_epochs + 1)
    if recipe.lr_schedule == "constant":
        return 1.0
    if recipe.lr_schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / recipe.epochs))
    passed = sum(1 for m in recipe.resolved_milestones() if epoch >= m)
    return recipe.gamma ** passed


def set_lr(optimizer: torch.optim.Optimizer, epoch: int, recipe: TrainRecipe) -> float:
    lr = recipe.lr * lr_factor(epoch, recipe)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (percent) of ``model`` over ``loader`` in eval mode (one host sync at the end)."""
    was_training = model.training
    model.eval()
    hits = torch.zeros(2, dtype=torch.int64, device=device)
    total = 0
    try:
        for images, labels in loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with autocast(device):
                logits = model(images)
            k = min(5, logits.shape[1])
            hit = logits.float().topk(k, dim=1).indices.eq(labels[:, None])
            hits[0] += hit[:, 0].sum()
            hits[1] += hit.any(dim=1).sum()
            total += labels.numel()
    finally:
        model.train(was_training)
    if total == 0:
        return float("nan"), float("nan")
    correct1, correct5 = hits.tolist()
    return 100.0 * correct1 / total, 100.0 * correct5 / total


FINITE_CHECK_EVERY = 25  # steps between host-side checks that the loss is finite (and at every epoch end)

# A cohort member's loss: (images, labels, indices, the cohort's shared outputs for the batch) -> (logits, terms).
CohortLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Any], tuple[torch.Tensor, dict[str, torch.Tensor]]]
RngState = tuple[torch.Tensor, list[torch.Tensor], Any]


def rng_now() -> RngState:
    """The random state a training step draws from: torch's CPU and CUDA generators and Python's."""
    return torch.get_rng_state(), cuda_rng_states(), random.getstate()


def _rng_set(state: RngState) -> None:
    torch.set_rng_state(state[0])
    restore_cuda_rng_states(state[1])
    random.setstate(state[2])


@dataclass
class Member:
    """One student of a cohort (see :func:`fit_cohort`): its trainable modules, its loss, the model scored on
    validation, its checkpoint, its callbacks, the random state it starts from (taken after it was built,
    so a cohort draws what the member would have drawn alone), and what it adds to each epoch's ``extra``
    before the epoch is checkpointed (the calibrated β)."""

    modules: dict[str, nn.Module]
    compute_loss: CohortLoss
    eval_model: nn.Module
    checkpoint_path: Optional[Path] = None
    callbacks: Sequence[Callback] = ()
    rng: Optional[RngState] = None
    epoch_extra: Optional[Callable[[], dict[str, Any]]] = None


def fit(modules: dict[str, nn.Module], compute_loss: LossFn, recipe: TrainRecipe, *,
        train_loader: Any, val_loader: Iterable, eval_model: nn.Module, device: torch.device,
        checkpoint_path: Optional[Path] = None, callbacks: Sequence[Callback] = (),
        progress: bool = False, desc: str = "train", seed: int = 0,
        final_loaders: Optional[dict[str, Iterable]] = None) -> FitResult:
    """Train ``modules`` (all their parameters) with ``compute_loss`` for ``recipe.epochs`` epochs: a cohort of
    one (see :func:`fit_cohort`); an exception raised by the loss or a callback is raised again here."""
    member = Member(modules, lambda images, labels, indices, _shared: compute_loss(images, labels, indices),
                    eval_model, checkpoint_path, callbacks)
    result = fit_cohort([member], recipe, train_loader=train_loader, val_loader=val_loader, device=device,
                        progress=progress, desc=desc, final_loaders=final_loaders)[0]
    if result.error is not None:
        raise result.error
    return result


def fit_cohort(members: Sequence[Member], recipe: TrainRecipe, *, train_loader: Any, val_loader: Iterable,
               device: torch.device, shared: Optional[Callable[[torch.Tensor], Any]] = None,
               progress: bool = False, desc: str = "train", final_loaders: Optional[dict[str, Iterable]] = None,
               after_epoch: Optional[Callable[[int], None]] = None) -> list[FitResult]:
    """Train every member for ``recipe.epochs`` epochs on one pass of ``train_loader`` per epoch; ``shared(images)``
    runs once per batch (the frozen teacher's forward) and every member's loss reads its result.

    Each member keeps its own optimizer, learning rate, random state, checkpoint (written after every epoch
    and resumed from when it exists) and history, so it ends with the weights and metrics it would have had
    trained alone. A NaN or infinite loss ends that member with status ``diverged``, an exception with status
    ``error`` (in :attr:`FitResult.error`); the others go on. Losses and correct counts accumulate on the
    device; the host reads them once per epoch and checks that they are finite every
    :data:`FINITE_CHECK_EVERY` steps. ``final_loaders`` (name → loader) are scored once, after the last epoch:
    ``<name>_acc`` in its ``extra``. ``after_epoch(epoch)`` runs once every member's callbacks have seen the
    1-based ``epoch``.
    """
    configure_training(device)
    runs = [_MemberRun(m, recipe, swap=len(members) > 1) for m in members]
    start = min((r.next_epoch for r in runs if r.status == "running"), default=recipe.epochs)
    bar = _progress(range(start, recipe.epochs), desc, progress, start, recipe.epochs)
    for epoch in bar:
        active = [r for r in runs if r.status == "running" and r.next_epoch == epoch]
        if not active:
            continue
        for r in active:
            r.begin_epoch(epoch, recipe, device)
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        t0 = time.perf_counter()
        _cohort_epoch(active, train_loader, device, shared)
        train_time = time.perf_counter() - t0
        for r in active:
            r.end_epoch(epoch, recipe, val_loader, device, final_loaders, t0, train_time)
        if hasattr(bar, "set_postfix") and active[0].history:
            last = active[0].history[-1]
            bar.set_postfix(loss=f"{last.losses['total']:.3f}", val_acc=f"{last.val_acc:.2f}",
                            **({"members": len(active)} if len(runs) > 1 else {}))
        if after_epoch is not None:
            after_epoch(epoch + 1)
    return [r.result() for r in runs]


def _cohort_epoch(active: list["_MemberRun"], train_loader: Any, device: torch.device,
                  shared: Optional[Callable[[torch.Tensor], Any]]) -> None:
    """One pass over ``train_loader``: per batch the shared forward once, then each member's step (a member
    stops early once a not-finite loss is seen, checked every :data:`FINITE_CHECK_EVERY` steps)."""
    stepping = list(active)
    for step, batch in enumerate(train_loader, 1):
        images, labels, indices = unpack_batch(batch, device)
        out = None
        if shared is not None:
            with torch.no_grad(), autocast(device):
                out = shared(images)
        for r in list(stepping):
            r.step(images, labels, indices, out)
            if r.status != "running" or (step % FINITE_CHECK_EVERY == 0 and not r.sums.finite()):
                stepping.remove(r)
        if not stepping:
            break


class _MemberRun:
    """A member while it trains: optimizer, history, next epoch, status, and its random state swapped in around
    each of its steps when it shares the loop with others (``swap``)."""

    def __init__(self, member: Member, recipe: TrainRecipe, swap: bool) -> None:
        self.member = member
        self.swap = swap
        self.rng = member.rng if member.rng is not None else rng_now()
        if not swap and member.rng is not None:
            _rng_set(member.rng)
        params = [p for m in member.modules.values() for p in m.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(params, recipe)
        self.history: list[EpochStats] = []
        self.next_epoch = 0
        self.status, self.message, self.error = "running", "", None
        self.lr = recipe.lr
        self.sums: Optional[EpochSums] = None
        path = member.checkpoint_path
        with self.random_state():
            state = resume_state(Path(path)) if path is not None else None
            if state is not None:
                self.history, self.next_epoch = _restore(state, member.modules, self.optimizer, Path(path))
                if state.get("status") == "diverged":
                    self.status, self.message = "diverged", state.get("message", "")
        if self.next_epoch >= recipe.epochs and self.status == "running":
            self.status = "completed"

    @contextmanager
    def random_state(self) -> Iterator[None]:
        """This member's random state for the block, kept for its next one (alone, the global state is its own)."""
        if not self.swap:
            yield
            return
        _rng_set(self.rng)
        try:
            yield
        finally:
            self.rng = rng_now()

    def begin_epoch(self, epoch: int, recipe: TrainRecipe, device: torch.device) -> None:
        self.lr = set_lr(self.optimizer, epoch, recipe)
        for m in self.member.modules.values():
            m.train()
        self.sums = EpochSums(device)

    def step(self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor, shared: Any) -> None:
        """One optimizer step on the batch; an exception ends this member alone (status ``error``)."""
        try:
            with self.random_state():
                with autocast(images.device):
                    logits, terms = self.member.compute_loss(images, labels, indices, shared)
                total = sum(terms.values()) if terms else logits.sum() * 0
                self.optimizer.zero_grad(set_to_none=True)
                total.backward()
                self.optimizer.step()
                self.sums.add(total, terms, logits, labels)
        except Exception as exc:  # noqa: BLE001 - one member's failure is its own; the cohort goes on
            self._fail(exc)

    def end_epoch(self, epoch: int, recipe: TrainRecipe, val_loader: Iterable, device: torch.device,
                  final_loaders: Optional[dict[str, Iterable]], t0: float, train_time: float) -> None:
        """Read the epoch's sums, score, checkpoint and report it; or end the member as diverged."""
        if self.status != "running":
            return
        path = self.member.checkpoint_path
        try:
            with self.random_state():
                if not self.sums.finite():
                    self.status = "diverged"
                    self.message = (f"loss became {self.sums.first_bad_total()} at epoch {epoch + 1} (terms: "
                                    f"{self.sums.first_bad_terms()}); lower train.lr ({recipe.lr}) or the loss "
                                    f"weights")
                    if path is not None:
                        _save_state(Path(path), self.member.modules, self.optimizer, epoch, self.history,
                                    "diverged", self.message)
                    return
                self._record(epoch, recipe, val_loader, device, final_loaders, t0, train_time)
            for cb in self.member.callbacks:
                cb(self.history[-1])
        except Exception as exc:  # noqa: BLE001 - one member's failure is its own; the cohort goes on
            self._fail(exc)

    def _record(self, epoch: int, recipe: TrainRecipe, val_loader: Iterable, device: torch.device,
                final_loaders: Optional[dict[str, Iterable]], t0: float, train_time: float) -> None:
        losses, train_acc, seen = self.sums.read()
        model = self.member.eval_model
        val1, val5 = evaluate(model, val_loader, device)
        extra = self.member.epoch_extra() if self.member.epoch_extra is not None else {}
        if final_loaders and epoch + 1 == recipe.epochs:
            extra |= {f"{name}_acc": evaluate(model, loader, device)[0] for name, loader in final_loaders.items()}
        self.history.append(EpochStats(
            epoch=epoch + 1, epochs=recipe.epochs, lr=self.lr, losses=losses, train_acc=train_acc, val_acc=val1,
            val_top5=val5, epoch_time=time.perf_counter() - t0,
            images_per_s=seen / train_time if train_time > 0 else float("nan"), extra=extra))
        self.next_epoch = epoch + 1
        if self.member.checkpoint_path is not None:
            _save_state(Path(self.member.checkpoint_path), self.member.modules, self.optimizer, epoch + 1,
                        self.history, "running", "")
        if self.next_epoch >= recipe.epochs:
            self.status = "completed"

    def _fail(self, exc: Exception) -> None:
        self.status, self.message, self.error = "error", f"{type(exc).__name__}: {exc}", exc
        self.optimizer.zero_grad(set_to_none=True)  # its gradients are not needed any more

    def result(self) -> FitResult:
        return FitResult(self.history, self.status, self.message, self.error)


def _restore(state: dict[str, Any], modules: dict[str, nn.Module], optimizer: Any,
             path: Path) -> tuple[list[EpochStats], int]:
    """Load a training checkpoint's weights, optimizer and random states; its history and the next epoch."""
    for name, module in modules.items():
        if name not in state["modules"]:
            raise CheckpointError(f"training checkpoint {str(path)!r} has no {name!r} state (written by another "
                                  f"configuration or version); delete it to start this run from scratch")
        module.load_state_dict(state["modules"][name])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    restore_cuda_rng_states(state.get("cuda_rng"))
    random.setstate(_tuple_state(state["py_rng"]))
    return [EpochStats(**h) for h in state["history"]], int(state["epoch"])


class EpochSums:
    """Per-epoch sums of the total and each loss term (times batch size), correct predictions and a not-finite
    flag, kept as device tensors so a step never waits for the host; :meth:`read` turns them into numbers once."""

    def __init__(self, device: torch.device) -> None:
        self.names: list[str] = []  # "total", then the terms, in the order of ``sums``
        self.sums: Optional[torch.Tensor] = None
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.seen = 0
        self.bad = torch.zeros((), dtype=torch.bool, device=device)
        self.bad_values: Optional[torch.Tensor] = None  # the first non-finite step's total and terms

    def add(self, total: torch.Tensor, terms: dict[str, torch.Tensor], logits: torch.Tensor,
            labels: torch.Tensor) -> None:
        n = labels.numel()
        self.seen += n
        self.correct += (logits.detach().argmax(1) == labels).sum()
        values = torch.stack([total.detach().float()] + [v.detach().float() for v in terms.values()])
        if self.sums is None:
            self.names = ["total", *terms]
            self.sums, self.bad_values = values * n, torch.zeros_like(values)
        else:
            self.sums = self.sums + values * n
        step_bad = ~torch.isfinite(values[0])
        # keep the first bad step's values: where nothing was bad before and this step is bad
        self.bad_values = torch.where(step_bad & ~self.bad, values, self.bad_values)
        self.bad = self.bad | step_bad

    def finite(self) -> bool:
        return not bool(self.bad)

    def first_bad_total(self) -> float:
        return float(self.bad_values[0])

    def first_bad_terms(self) -> str:
        vals = self.bad_values.tolist()[1:]
        return ", ".join(f"{k}={v:.4g}" for k, v in zip(self.names[1:], vals))

    def read(self) -> tuple[dict[str, float], float, int]:
        """(mean of each term, then "total"; train accuracy in percent; images seen): one host sync."""
        seen = max(self.seen, 1)
        means = dict(zip(self.names, (v / seen for v in self.sums.tolist()))) if self.sums is not None else {}
        losses = {k: v for k, v in means.items() if k != "total"}
        if "total" in means:
            losses["total"] = means["total"]
        return losses, 100.0 * int(self.correct) / seen, self.seen


def previous_path(path: Path) -> Path:
    """Where the checkpoint of the epoch before is kept (the fallback when the latest is damaged)."""
    return path.with_name(path.name + ".prev")


def resume_state(path: Path) -> Optional[dict[str, Any]]:
    """The state to resume from: the latest checkpoint, else (if it is corrupt or partial, with a
    warning naming it) the previous one, else None (start from scratch)."""
    for candidate in (path, previous_path(path)):
        if not candidate.exists():
            continue
        try:
            return load_training_state(candidate)
        except CheckpointError as exc:
            warnings.warn(f"{exc}; falling back to the previous checkpoint or to scratch", RuntimeWarning,
                          stacklevel=2)
    return None


def load_training_state(path: Path) -> dict[str, Any]:
    """Read a training checkpoint; a corrupt or partial one is a CheckpointError naming it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a truncated/corrupt file
        raise CheckpointError(f"training checkpoint {str(path)!r} is corrupt or partial ({type(exc).__name__}); "
                              f"delete it to start this run from scratch") from None
    if not isinstance(state, dict) or not {"modules", "optimizer", "epoch", "history"} <= set(state):
        raise CheckpointError(f"training checkpoint {str(path)!r} is not a pursuhint training checkpoint; "
                              f"delete it to start from scratch")
    return state


def _save_state(path: Path, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer, epoch: int,
                history: list[EpochStats], status: str, message: str) -> None:
    if path.exists():
        os.replace(path, previous_path(path))
    save_torch_atomic({
        "modules": {k: m.state_dict() for k, m in modules.items()},
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": cuda_rng_states(),
        "py_rng": _list_state(random.getstate()),
        "epoch": epoch,
        "history": [asdict(h) for h in history],
        "status": status,
        "message": message,
    }, path)


def _list_state(state: Any) -> Any:
    # random.getstate() holds tuples; weights_only loading accepts lists of ints.
    return [state[0], list(state[1]), state[2]]


def _tuple_state(state: Any) -> Any:
    return (state[0], tuple(state[1]), state[2])


def unpack_batch(batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images, labels, indices) of a loader's batch on ``device`` (indices empty when the loader gives none)."""
    if len(batch) == 3:
        images, labels, indices = batch
    else:
        images, labels = batch
        indices = torch.empty(0, dtype=torch.long)
    return (images.to(device, non_blocking=True), labels.to(device, non_blocking=True),
            indices.to(device, non_blocking=True))


def _progress(it: range, desc: str, enabled: bool, start: int, total: int):
    if not enabled:
        return it

    return tqdm(it, desc=desc, unit="epoch", initial=start, total=total, dynamic_ncols=True)
