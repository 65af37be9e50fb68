"""A compute budget in GPU-hours (or CPU-hours): when the trial loop stops asking for work.

The loop (``sweep/core.py``) asks :meth:`Budget.check` before every new job, whatever proposes
it (Optuna's sampler, PBT's rounds, a promotion of a paused trial): once what the study's jobs
spent plus the running jobs' estimate (elapsed × GPUs) reaches a limit, no new job starts and
the running ones finish. Spending is read from the cost records (``sweep/cost.py``), which live
in the study, so a resumed sweep with a raised budget continues where the last one stopped, and
``nemo-rl-hpo status`` reports the same numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nemo_rl_hpo.sweep import cost


class BudgetError(ValueError):
    """A budget that is not a positive number of hours (one line, naming the key)."""


@dataclass(frozen=True)
class Budget:
    """Limits in hours; None: no limit of that kind."""

    gpu_hours: float | None = None
    cpu_hours: float | None = None

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None, where: str = "budget") -> Budget:
        raw = raw or {}
        unknown = sorted(set(raw) - {"gpu_hours", "cpu_hours"})
        if unknown:
            raise BudgetError(
                f"{where} has no key {unknown[0]!r}; give gpu_hours and/or cpu_hours."
            )
        values: dict[str, float | None] = {}
        for name in ("gpu_hours", "cpu_hours"):
            v = raw.get(name)
            if v is not None and (
                isinstance(v, bool)
                or not isinstance(v, (int, float))
                or not math.isfinite(v)
                or v <= 0
            ):
                raise BudgetError(
                    f"{where}.{name} must be a positive number of hours or null, but got {v!r}."
                )
            values[name] = None if v is None else float(v)
        return cls(**values)

    @property
    def active(self) -> bool:
        return self.gpu_hours is not None or self.cpu_hours is not None

    def as_dict(self) -> dict[str, float | None]:
        return {"gpu_hours": self.gpu_hours, "cpu_hours": self.cpu_hours}

    def check(self, system_attrs: Mapping[str, Any], now: float | None = None) -> str | None:
        """None while the budget allows a new job, else the one line that says it is spent."""
        t = cost.study_totals(system_attrs, now)
        for name, limit, spent, flying in (
            ("GPU", self.gpu_hours, t.gpu_s, t.in_flight_gpu_s),
            ("CPU", self.cpu_hours, t.cpu_s, t.in_flight_cpu_s),
        ):
            if limit is None or (spent + flying) / 3600.0 < limit:
                continue
            return (
                f"{name}-hour budget reached: {spent / 3600:.4g} {name}-hours spent + "
                f"{flying / 3600:.4g} in flight >= {limit:g}; no new trial starts, the "
                f"{t.running_jobs} running job(s) finish. Raise the budget and run the resume "
                "command to continue."
            )
        return None


@dataclass(frozen=True)
class Status:
    """Spent / in flight / remaining of one kind of hours, and when the rest runs out."""

    kind: str  # "GPU" or "CPU"
    spent_h: float
    in_flight_h: float
    limit_h: float | None
    rate: float  # hours of this kind used per wall hour now (GPUs or cores busy)

    @property
    def remaining_h(self) -> float | None:
        if self.limit_h is None:
            return None
        return max(0.0, self.limit_h - self.spent_h - self.in_flight_h)

    @property
    def eta_s(self) -> float | None:
        """Seconds until the budget is reached at the current rate; None without one."""
        left = self.remaining_h
        if left is None or self.rate <= 0:
            return None
        return left / self.rate * 3600.0

    def line(self) -> str:
        text = f"{self.kind}-hours: {self.spent_h:.4g} spent, {self.in_flight_h:.4g} in flight"
        if self.limit_h is None:
            return text + " (no budget)"
        text += f", {self.remaining_h:.4g} of {self.limit_h:g} remaining"
        eta = self.eta_s
        if eta is not None:
            text += f", reached in ~{_duration(eta)} at {self.rate:.3g} {self.kind}s busy"
        return text


def status(
    system_attrs: Mapping[str, Any], budget: Budget, now: float | None = None
) -> list[Status]:
    """What ``nemo-rl-hpo status`` shows: GPU-hours always, CPU-hours with a CPU budget or
    when no job used a GPU."""
    now = time.time() if now is None else now
    t = cost.study_totals(system_attrs, now)
    out = [Status("GPU", t.gpu_hours, t.in_flight_gpu_s / 3600.0, budget.gpu_hours, t.gpus_in_use)]
    if budget.cpu_hours is not None or (t.gpu_s == 0 and t.in_flight_gpu_s == 0):
        out.append(
            Status("CPU", t.cpu_hours, t.in_flight_cpu_s / 3600.0, budget.cpu_hours, t.cores_in_use)
        )
    return out


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
