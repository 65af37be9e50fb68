"""Learning-rate schedules: a linear warm-up of ``warmup_steps``, then the chosen torch schedule.

Each factory takes the optimizer (the config passes the rest, ``_partial_: true``) and returns a
:class:`Schedule` built from torch's own schedulers: ``SequentialLR(LinearLR warm-up, main)`` for
the step-driven schedules, and ``ReduceLROnPlateau`` stepped on the validation loss (after its
own ``LinearLR`` warm-up) for ``plateau``. All of them scale the current learning rate step by
step, which is what lets :func:`set_learning_rate` change the base rate of a resumed run (PBT).
"""

from __future__ import annotations

from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)


class Schedule:
    """Torch schedulers stepped after every optimizer step and, optionally, at every evaluation."""

    def __init__(self, per_step: LRScheduler | None, on_eval: ReduceLROnPlateau | None = None):
        self.per_step = per_step
        self.on_eval = on_eval

    def step(self) -> None:
        """Advance one optimizer step."""
        if self.per_step is not None:
            self.per_step.step()

    def step_eval(self, val_loss: float) -> None:
        """React to a validation loss (only ``plateau`` does)."""
        if self.on_eval is not None:
            self.on_eval.step(val_loss)

    def state_dict(self) -> dict[str, Any]:
        return {
            "per_step": None if self.per_step is None else self.per_step.state_dict(),
            "on_eval": None if self.on_eval is None else self.on_eval.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.per_step is not None and state.get("per_step") is not None:
            self.per_step.load_state_dict(state["per_step"])
        if self.on_eval is not None and state.get("on_eval") is not None:
            self.on_eval.load_state_dict(state["on_eval"])

    def schedulers(self) -> list[Any]:
        """Every torch scheduler inside, nested ones included."""
        found: list[Any] = []
        todo: list[Any] = [s for s in (self.per_step, self.on_eval) if s is not None]
        while todo:
            s = todo.pop()
            found.append(s)
            todo.extend(getattr(s, "_schedulers", []))
        return found


def _warm(optimizer: Optimizer, warmup_steps: int, main: LRScheduler) -> LRScheduler:
    if warmup_steps <= 0:
        return main
    warmup = LinearLR(optimizer, start_factor=1.0 / (warmup_steps + 1), total_iters=warmup_steps)
    return SequentialLR(optimizer, [warmup, main], milestones=[warmup_steps])


def cosine(optimizer: Optimizer, *, warmup_steps: int, total_steps: int) -> Schedule:
    """Warm-up, then cosine decay to zero at ``total_steps``."""
    main = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup_steps))
    return Schedule(_warm(optimizer, warmup_steps, main))


def linear(
    optimizer: Optimizer, *, warmup_steps: int, total_steps: int, end_factor: float = 0.0
) -> Schedule:
    """Warm-up, then linear decay to ``end_factor`` times the base rate at ``total_steps``."""
    main = LinearLR(
        optimizer,
        start_factor=1.0,
        end_factor=end_factor,
        total_iters=max(1, total_steps - warmup_steps),
    )
    return Schedule(_warm(optimizer, warmup_steps, main))


def step(optimizer: Optimizer, *, warmup_steps: int, step_size: int, gamma: float) -> Schedule:
    """Warm-up, then multiply the rate by ``gamma`` every ``step_size`` steps."""
    main = StepLR(optimizer, step_size=step_size, gamma=gamma)
    return Schedule(_warm(optimizer, warmup_steps, main))


def plateau(
    optimizer: Optimizer, *, warmup_steps: int, factor: float = 0.5, patience: int = 2
) -> Schedule:
    """Warm-up, then multiply the rate by ``factor`` when the validation loss has not improved
    for ``patience`` evaluations."""
    warmup = None
    if warmup_steps > 0:
        warmup = LinearLR(
            optimizer, start_factor=1.0 / (warmup_steps + 1), total_iters=warmup_steps
        )
    return Schedule(
        warmup, ReduceLROnPlateau(optimizer, mode="min", factor=factor, patience=patience)
    )


def set_learning_rate(optimizer: Optimizer, schedule: Schedule, learning_rate: float) -> None:
    """Change the base learning rate of a running schedule, keeping its shape and progress.

    The schedulers here all scale the current rate step by step, so multiplying the current rate
    and replacing the base rates gives exactly the schedule a run started with ``learning_rate``
    would be at now. PBT uses this to make an explored learning rate take effect.
    """
    for group in optimizer.param_groups:
        ratio = learning_rate / group.get("initial_lr", group["lr"])
        group["lr"] = group["lr"] * ratio
        group["initial_lr"] = learning_rate
    for scheduler in schedule.schedulers():
        if hasattr(scheduler, "base_lrs"):
            scheduler.base_lrs = [learning_rate for _ in scheduler.base_lrs]
        if hasattr(scheduler, "_last_lr"):
            scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
