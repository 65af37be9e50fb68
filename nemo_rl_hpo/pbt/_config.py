"""PBT settings, validated up front so a bad sweep fails before any job starts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PBTConfig:
    """How a population trains and when it exploits and explores.

    Give the budget as ``num_rounds`` or ``total_steps`` (steps per member, a multiple of
    ``perturbation_interval``) or both when they agree; :attr:`rounds` is the resolved count.
    """

    population_size: int  # members trained side by side
    perturbation_interval: int  # training steps per round; round r trains to (r+1)*interval
    num_rounds: int | None = None  # rounds per member
    total_steps: int | None = None  # training steps per member (= num_rounds * interval)
    direction: str = "minimize"  # "minimize" or "maximize" the reported value
    quantile_fraction: float = 0.25  # bottom fraction that exploits the top fraction, (0, 0.5]
    resample_probability: float = 0.25  # chance a hyperparameter is redrawn when exploring
    perturbation_factors: tuple[float, ...] = (0.8, 1.2)  # explore factors, drawn uniformly
    seed: int | None = None  # None: the scheduler draws one (store scheduler.seed to resume)
    synchronous: bool = False  # True: nobody starts round r+1 before all finished round r
    max_retries: int = 2  # retries of a failed member round before the member retires

    def __post_init__(self) -> None:
        _int_at_least("population_size", self.population_size, 2)
        _int_at_least("perturbation_interval", self.perturbation_interval, 1)
        if self.num_rounds is None and self.total_steps is None:
            raise ValueError(
                "num_rounds or total_steps must be given (the budget per member), but both are "
                "None."
            )
        if self.num_rounds is not None:
            _int_at_least("num_rounds", self.num_rounds, 1)
        if self.total_steps is not None:
            _int_at_least("total_steps", self.total_steps, self.perturbation_interval)
            if self.total_steps % self.perturbation_interval:
                below = self.total_steps - self.total_steps % self.perturbation_interval
                raise ValueError(
                    f"total_steps must be a multiple of perturbation_interval "
                    f"({self.perturbation_interval}), but got {self.total_steps}; use {below} "
                    f"or {below + self.perturbation_interval}."
                )
            rounds = self.total_steps // self.perturbation_interval
            if self.num_rounds is not None and self.num_rounds != rounds:
                raise ValueError(
                    f"num_rounds and total_steps disagree: {self.num_rounds} rounds of "
                    f"{self.perturbation_interval} steps are not {self.total_steps} steps; give "
                    "only one of them."
                )
        if self.direction not in ("minimize", "maximize"):
            raise ValueError(
                f"direction must be 'minimize' or 'maximize', but got {self.direction!r}."
            )
        q = _number("quantile_fraction", self.quantile_fraction)
        if not 0.0 < q <= 0.5:
            raise ValueError(
                f"quantile_fraction must be in (0, 0.5] so the bottom and top sets never "
                f"overlap, but got {q}."
            )
        p = _number("resample_probability", self.resample_probability)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"resample_probability must be in [0, 1], but got {p}.")
        factors = self.perturbation_factors
        if isinstance(factors, (str, bytes)) or not isinstance(factors, Sequence):
            raise ValueError(
                f"perturbation_factors must be a list of positive numbers such as [0.8, 1.2], "
                f"but got {factors!r}."
            )
        if not factors:
            raise ValueError("perturbation_factors must hold at least one factor, but got none.")
        for f in factors:
            if _number("perturbation_factors", f) <= 0 or not math.isfinite(f):
                raise ValueError(
                    f"perturbation_factors must be positive finite numbers, but got {f} in "
                    f"{list(factors)}."
                )
        object.__setattr__(self, "perturbation_factors", tuple(float(f) for f in factors))
        if self.seed is not None:
            _int_at_least("seed", self.seed, 0)
        if not isinstance(self.synchronous, bool):
            raise ValueError(f"synchronous must be true or false, but got {self.synchronous!r}.")
        _int_at_least("max_retries", self.max_retries, 0)

    @property
    def rounds(self) -> int:
        """Rounds per member, from ``num_rounds`` or ``total_steps``."""
        if self.num_rounds is not None:
            return self.num_rounds
        return (self.total_steps or 0) // self.perturbation_interval  # one is set (post_init)

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"


def _int_at_least(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, but got {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, but got {value}.")


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, but got {value!r}.")
    return float(value)
