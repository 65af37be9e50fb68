"""What the scheduler hands out (:class:`Job`) and what it keeps of each run (:class:`RoundRecord`).

Both convert to and from the Optuna user attributes under which the sweeper stores a member round
as one trial, so a study alone is enough to resume a population (``PBTScheduler.from_records``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The keys live with every other study record (nemo_rl_hpo/sweep/records.py).
from nemo_rl_hpo.sweep import records


@dataclass(frozen=True)
class Job:
    """One member round to launch: train from ``start_checkpoint`` up to ``target_step``."""

    member: int
    round: int
    attempt: int  # 0, or the retry number after failures of this member round
    params: dict[str, Any]  # hyperparameters for this round
    parent: int | None  # member whose round-(round-1) checkpoint+params were copied, or None
    start_checkpoint: str | None  # None in round 0 (fresh start), else a previous checkpoint
    save_checkpoint: str  # where this job saves (a directory path; unique per member round)
    start_step: int  # round * perturbation_interval: the step start_checkpoint is at
    target_step: int  # (round + 1) * perturbation_interval: the step to train up to

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.member, self.round, self.attempt)

    def user_attrs(self) -> dict[str, Any]:
        """Attributes to set on the Optuna trial that runs this job (before it finishes)."""
        return round_attrs(self, self.save_checkpoint)


@dataclass(frozen=True)
class RoundRecord:
    """A finished member round: the job's inputs and its outcome (``value`` None: failed)."""

    member: int
    round: int
    params: dict[str, Any]
    parent: int | None
    value: float | None  # None when the job failed (an error, no value, or NaN)
    checkpoint: str | None  # what the job saved; the next round or an exploiter starts here
    attempt: int = 0
    start_checkpoint: str | None = None

    @property
    def failed(self) -> bool:
        return self.value is None

    def user_attrs(self) -> dict[str, Any]:
        """Optuna user attributes of the trial that ran this round (the value is its value)."""
        return round_attrs(self, self.checkpoint)

    @classmethod
    def from_user_attrs(cls, attrs: Mapping[str, Any], value: float | None) -> RoundRecord:
        """Rebuild a record from a trial's user attributes and value (None for a failed trial)."""
        missing = [
            k for k in (records.PBT_MEMBER, records.PBT_ROUND, records.PBT_PARAMS) if k not in attrs
        ]
        if missing:
            raise ValueError(
                f"a PBT trial needs the user attributes {', '.join(missing)}, but they are "
                "missing; was the trial written by the PBT sweeper?"
            )
        parent = attrs.get(records.PBT_PARENT)
        return cls(
            member=int(attrs[records.PBT_MEMBER]),
            round=int(attrs[records.PBT_ROUND]),
            params=dict(attrs[records.PBT_PARAMS]),
            parent=None if parent is None else int(parent),
            value=clean_value(value),
            checkpoint=attrs.get(records.PBT_CHECKPOINT),
            attempt=int(attrs.get(records.PBT_ATTEMPT, 0)),
            start_checkpoint=attrs.get(records.PBT_START_CHECKPOINT),
        )


@dataclass(frozen=True)
class ScheduleStep:
    """One round of a hyperparameter schedule, followed back through exploits."""

    round: int
    member: int  # the member that trained this round of the lineage
    params: dict[str, Any]
    value: float
    start_step: int
    target_step: int
    exploited_from: int | None  # this round started from that member's checkpoint, or None


def round_attrs(r: Job | RoundRecord, checkpoint: str | None) -> dict[str, Any]:
    """A member round's Optuna user attributes (Job: before it runs; RoundRecord: after)."""
    return {
        records.PBT_MEMBER: r.member,
        records.PBT_ROUND: r.round,
        records.PBT_ATTEMPT: r.attempt,
        records.PBT_PARENT: r.parent,
        records.PBT_PARAMS: dict(r.params),
        records.PBT_START_CHECKPOINT: r.start_checkpoint,
        records.PBT_CHECKPOINT: checkpoint,
    }


def clean_value(value: Any) -> float | None:
    """A job's value as the scheduler uses it: None and NaN mean failed; other numbers float."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)  # numpy scalars, 0-d tensors
        except (TypeError, ValueError):
            raise ValueError(
                f"a PBT round's value must be a number or None, but got {value!r}."
            ) from None
    v = float(value)
    return None if math.isnan(v) else v
