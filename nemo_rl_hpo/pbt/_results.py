"""What a population has found: the best member, its schedule, the lineage, a summary.

Read-only views of :class:`~nemo_rl_hpo.pbt.PBTScheduler`'s state (a mixin, so the scheduler
module keeps to handing out rounds and taking results).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from nemo_rl_hpo.pbt._config import PBTConfig
from nemo_rl_hpo.pbt._records import RoundRecord, ScheduleStep


@dataclass(frozen=True)
class BestMember:
    """The best member at the last round anyone finished, with the schedule that produced it."""

    member: int
    round: int
    value: float
    params: dict[str, Any]
    schedule: list[ScheduleStep]


class PopulationResults:
    """The scheduler's results; the scheduler owns the state they read."""

    config: PBTConfig
    seed: int
    _records: list[RoundRecord]
    _ok: dict[tuple[int, int], RoundRecord]  # (member, round) -> completed record
    _values: dict[int, dict[int, float]]  # round -> member -> value

    @property
    def finished(self) -> bool:
        raise NotImplementedError

    @property
    def retired(self) -> list[int]:
        raise NotImplementedError

    def best(self) -> BestMember | None:
        """The best member by its value at the last round any member finished (None: no value)."""
        rounds = [r for r, vals in self._values.items() if vals]
        if not rounds:
            return None
        last = max(rounds)
        vals = self._values[last]
        sign = -1.0 if self.config.maximize else 1.0
        member = min(vals, key=lambda m: (sign * vals[m], m))
        record = self._ok[(member, last)]
        return BestMember(
            member=member,
            round=last,
            value=self._values[last][member],
            params=dict(record.params),
            schedule=self.schedule(member, last),
        )

    def schedule(self, member: int, round: int | None = None) -> list[ScheduleStep]:
        """The hyperparameters, round by round, that produced ``member``'s round-``round`` value.

        Follows the lineage back through exploits: a round copied from member p continues p's
        schedule before it. ``round`` defaults to the member's last completed round.
        """
        if round is None:
            done = [r for (m, r) in self._ok if m == member]
            if not done:
                raise ValueError(f"member {member} has no completed round yet.")
            round = max(done)
        steps: list[ScheduleStep] = []
        interval = self.config.perturbation_interval
        m = member
        for r in range(round, -1, -1):
            record = self._ok.get((m, r))
            if record is None:
                raise ValueError(f"member {m} has no completed round {r}; cannot follow lineage.")
            steps.append(
                ScheduleStep(
                    round=r,
                    member=m,
                    params=dict(record.params),
                    value=record.value if record.value is not None else math.nan,
                    start_step=r * interval,
                    target_step=(r + 1) * interval,
                    exploited_from=record.parent,
                )
            )
            if record.parent is not None:
                m = record.parent
        return steps[::-1]

    def lineage(self) -> list[dict[str, Any]]:
        """One JSON-ready row per finished member round (arrival order), for tables and plots.

        ``source`` is the member whose previous-round checkpoint the round started from (None in
        a fresh round 0); ``exploited`` is true when that is another member.
        """
        interval = self.config.perturbation_interval
        rows = []
        for rec in self._records:
            fresh = rec.round == 0 and rec.start_checkpoint is None
            rows.append(
                {
                    "member": rec.member,
                    "round": rec.round,
                    "attempt": rec.attempt,
                    "value": rec.value,
                    "failed": rec.failed,
                    "parent": rec.parent,
                    "source": None
                    if fresh
                    else (rec.parent if rec.parent is not None else rec.member),
                    "exploited": rec.parent is not None,
                    "start_step": rec.round * interval,
                    "target_step": (rec.round + 1) * interval,
                    "start_checkpoint": rec.start_checkpoint,
                    "checkpoint": rec.checkpoint,
                    "params": dict(rec.params),
                }
            )
        return rows

    def results(self) -> dict[str, Any]:
        """A JSON-ready summary: the best member, its schedule, and counts."""
        cfg = self.config
        best = self.best()
        return {
            "direction": cfg.direction,
            "population_size": cfg.population_size,
            "num_rounds": cfg.rounds,
            "perturbation_interval": cfg.perturbation_interval,
            "seed": self.seed,
            "synchronous": cfg.synchronous,
            "finished": self.finished,
            "best_member": None if best is None else best.member,
            "best_round": None if best is None else best.round,
            "best_value": None if best is None else best.value,
            "best_params": None if best is None else best.params,
            "best_schedule": [] if best is None else [asdict(s) for s in best.schedule],
            "n_member_rounds": len(self._records),
            "n_complete": sum(not r.failed for r in self._records),
            "n_failed": sum(r.failed for r in self._records),
            "n_exploits": sum(r.parent is not None for r in self._records),
            "retired_members": self.retired,
        }
