"""The linear warm-up of a loss term that DKD and ReviewKD share: the published ``warmup`` epochs of ``warmup_of``,
scaled to the run's epochs, counted in training steps (a Python int: no device read), checkpointed with the
method."""

from __future__ import annotations


class LinearWarmup:
    """factor = min(epoch / warm-up epochs, 1) for the current 1-based epoch (1 without a warm-up)."""

    def __init__(self, owner: str, warmup: float, warmup_of: int) -> None:
        if float(warmup) < 0 or int(warmup_of) < 1:
            raise ValueError(f"{owner}'s warmup must be >= 0 epochs of warmup_of >= 1, got {warmup!r} of "
                             f"{warmup_of!r}")
        self.warmup, self.warmup_of = float(warmup), int(warmup_of)
        self.steps_per_epoch, self.epochs = 1, self.warmup_of
        self.step = 0  # training steps taken

    def set_schedule(self, steps_per_epoch: int, epochs: int) -> None:
        """The run's length (the trainer tells it before training)."""
        self.steps_per_epoch, self.epochs = max(1, int(steps_per_epoch)), max(1, int(epochs))

    @property
    def epochs_long(self) -> float:
        """The warm-up in this run's epochs: ``warmup`` × epochs / ``warmup_of``."""
        return self.warmup * self.epochs / self.warmup_of

    def current(self) -> float:
        """The factor for the current step."""
        if self.epochs_long <= 0:
            return 1.0
        epoch = self.step // self.steps_per_epoch + 1
        return min(epoch / self.epochs_long, 1.0)

    def factor(self, training: bool) -> float:
        """The factor for this step, counting the step when training."""
        value = self.current()
        if training:
            self.step += 1
        return value

    def state(self) -> dict[str, int]:
        return {"step": self.step}

    def load(self, state: dict[str, int]) -> None:
        self.step = int(state["step"])
