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
from nemo_rl_hpo.sweep.records import PBT_ATTEMPT as ATTR_ATTEMPT
from nemo_rl_hpo.sweep.records import PBT_CHECKPOINT as ATTR_CHECKPOINT
from nemo_rl_hpo.sweep.records import PBT_MEMBER as ATTR_MEMBER
from nemo_rl_hpo.sweep.records import PBT_PARAMS as ATTR_PARAMS
from nemo_rl_hpo.sweep.records import PBT_PARENT as ATTR_PARENT
from nemo_rl_hpo.sweep.records import PBT_ROUND as ATTR_ROUND
from nemo_rl_hpo.sweep.records import PBT_START_CHECKPOINT as ATTR_START_CHECKPOINT


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
        missing = [k for k in (ATTR_MEMBER, ATTR_ROUND, ATTR_PARAMS) if k not in attrs]
        if missing:
            raise ValueError(
                f"a PBT trial needs the user attributes {', '.join(missing)}, but they are "
                "missing; was the trial written by the PBT sweeper?"
            )
        parent = attrs.get(ATTR_PARENT)
        return cls(
            member=int(attrs[ATTR_MEMBER]),
            round=int(attrs[ATTR_ROUND]),
            params=dict(attrs[ATTR_PARAMS]),
            parent=None if parent is None else int(parent),
            value=clean_value(value),
            checkpoint=attrs.get(ATTR_CHECKPOINT),
            attempt=int(attrs.get(ATTR_ATTEMPT, 0)),
            start_checkpoint=attrs.get(ATTR_START_CHECKPOINT),
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
        ATTR_MEMBER: r.member,
        ATTR_ROUND: r.round,
        ATTR_ATTEMPT: r.attempt,
        ATTR_PARENT: r.parent,
        ATTR_PARAMS: dict(r.params),
        ATTR_START_CHECKPOINT: r.start_checkpoint,
        ATTR_CHECKPOINT: checkpoint,
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
