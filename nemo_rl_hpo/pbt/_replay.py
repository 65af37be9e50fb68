"""Resuming a population: replaying its finished rounds and taking over rounds still running.

A mixin of :class:`~nemo_rl_hpo.pbt.PBTScheduler` (``from_records`` and ``adopt`` are its
entry points); the scheduler owns the state.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from nemo_rl_hpo.pbt._config import PBTConfig
from nemo_rl_hpo.pbt._records import Job, RoundRecord

log = logging.getLogger("nemo_rl_hpo.pbt._scheduler")


class PopulationReplay:
    config: PBTConfig
    _ready: dict[int, tuple[int, Job]]
    _running: dict[int, Job]
    _ok: dict[tuple[int, int], RoundRecord]

    if TYPE_CHECKING:  # the scheduler's (PBTScheduler.tell, .member_status)

        def tell(self, *args: Any, **kwargs: Any) -> RoundRecord: ...

        def member_status(self, member: int) -> str: ...

    def _replay(self, record: RoundRecord) -> None:
        job = self._take(
            record.member, record.round, record.params, record.parent, record.start_checkpoint
        )
        self.tell(job.member, record.round, record.value, record.checkpoint)

    def adopt(
        self,
        member: int,
        round: int,
        params: Mapping[str, Any],
        parent: int | None,
        start_checkpoint: str | None,
    ) -> Job:
        """Hand out a member's open round as already running: its job outlived the sweeper.

        Call it after :meth:`from_records` for each such job, before :meth:`ask`; its result is
        told with :meth:`tell` as usual. Where the job ran with other params or parent than the
        replay decides, what runs wins (as for records).
        """
        return self._take(member, round, dict(params), parent, start_checkpoint)

    def _take(
        self,
        member: int,
        round: int,
        params: dict[str, Any],
        parent: int | None,
        start_checkpoint: str | None,
    ) -> Job:
        """Mark ``member``'s open round as handed out, as it really ran (a record or a job)."""
        if not (isinstance(member, int) and 0 <= member < self.config.population_size):
            raise ValueError(
                f"a record names member {member!r}, but population_size is "
                f"{self.config.population_size}; resume with the population size of the first run."
            )
        if round >= self.config.rounds:
            raise ValueError(
                f"a record of member {member} is for round {round}, but the budget is "
                f"{self.config.rounds} rounds; resume with at least {round + 1} rounds."
            )
        if member in self._ready:
            _, job = self._ready.pop(member)
            self._running[member] = job
        job_or_none = self._running.get(member)
        if job_or_none is None or job_or_none.round != round:
            raise ValueError(
                f"cannot replay the record of member {member}, round {round}: "
                + self._not_running_message(member, round)
                + " Give the records in the order their results arrived."
            )
        job = job_or_none
        if params != job.params or parent != job.parent:
            start = start_checkpoint
            if start is None and round > 0:
                src = parent if parent is not None else member
                prev = self._ok.get((src, round - 1))
                start = prev.checkpoint if prev is not None else job.start_checkpoint
            log.info(
                "PBT resume: member %d round %d ran with other params or parent than the replay "
                "decides (results replayed in another order); keeping what ran.",
                member,
                round,
            )
            job = replace(job, params=dict(params), parent=parent, start_checkpoint=start)
            self._running[member] = job
        return job

    def _not_running_message(self, member: int, round: int) -> str:
        job = self._running.get(member)
        if job is not None:
            return f"member {member} is running round {job.round}, not round {round}."
        if member in self._ready:
            return (
                f"member {member}'s round {self._ready[member][1].round} was never handed out; "
                "call ask() first."
            )
        try:
            status = self.member_status(member)
        except ValueError as e:
            return str(e)
        return f"member {member} has no open round (it is {status})."
