"""The population: hands out member rounds, takes their results, exploits and explores.

Rules (the package docstring has the overview; tests/test_pbt_core.py asserts each one):

- Ranking. When member m finishes round r, it is ranked among the round-r values of every
  member that has finished round r so far (itself included); a member that is already further
  ahead is represented by its round-r value, not its latest one, because only values at the same
  training step are comparable, and the checkpoint an exploiter copies must be at the step its
  next round starts from. Failed rounds have no value and take no part.
- Truncation selection (:func:`truncation_sets`). Of n ranked members the top and the bottom
  ``k = min(ceil(n * quantile_fraction), floor(n / 2))`` form the two sets (Ray Tune's rule, so
  they never overlap; n = 1 gives empty sets). Ties are broken by the lower member id ranking
  better.
- Exploit/explore. A member in the bottom set copies a uniformly chosen top member's round-r
  checkpoint and hyperparameters, then explores them (``_space``); anyone else continues from its
  own round-r checkpoint with unchanged hyperparameters.
- Order. Asynchronous (default): a member's next round is ready as soon as its decision is made.
  Synchronous: members wait at a barrier until no member is still running or retrying round r,
  then all decide together (in member order, each against the full round-r set). ``ask`` hands
  out the ready job of the lowest round first (ties: the one ready longest), so laggards catch
  up and rankings see fuller sets.
- Failures (value None or NaN). Round r is retried with attempt+1, at most ``max_retries`` times:
  round 0 samples fresh hyperparameters; round r >= 1 copies a uniformly chosen top member of
  round r-1 (possibly itself) and explores, or, when round r-1 has no top set, re-runs from the
  failed job's start checkpoint with its hyperparameters explored. A member whose retries are
  spent retires: it runs no more rounds and drops out of later rankings.
- Determinism. Every random decision draws from its own generator seeded by (seed, kind, member,
  round, attempt), so decisions depend on the seed and on which results were known when they were
  made, never on how many draws came before; replaying the same results in the same order
  therefore rebuilds the same state (:meth:`PBTScheduler.from_records`).
"""

from __future__ import annotations

import logging
import math
import os
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from nemo_rl_hpo.pbt._config import PBTConfig
from nemo_rl_hpo.pbt._records import Job, RoundRecord, clean_value
from nemo_rl_hpo.pbt._replay import PopulationReplay
from nemo_rl_hpo.pbt._results import PopulationResults
from nemo_rl_hpo.pbt._space import Param, check_space, explore, sample

log = logging.getLogger(__name__)

# Kinds of random decision; part of each decision's seed.
_INIT, _EXPLOIT, _RETRY = 0, 1, 2


def truncation_sets(
    values: Mapping[int, float], quantile_fraction: float, maximize: bool = False
) -> tuple[list[int], list[int]]:
    """(bottom, top) member ids of ``values`` (member -> value), each listed best first."""
    n = len(values)
    k = min(math.ceil(n * quantile_fraction - 1e-9), n // 2)
    ranked = sorted(values, key=lambda m: (-values[m] if maximize else values[m], m))
    return ranked[n - k :], ranked[:k]


class PBTScheduler(PopulationReplay, PopulationResults):
    """A population under population-based training, driven by ``ask`` and ``tell``.

    ``checkpoint_root`` is where jobs save: ``<root>/member_<m>/round_<r>`` (``_retry<a>``
    appended for retries), so no job overwrites a checkpoint another member may still copy.
    """

    def __init__(
        self,
        config: PBTConfig,
        space: Iterable[Param],
        *,
        checkpoint_root: str | os.PathLike[str] = "checkpoints",
    ) -> None:
        if not isinstance(config, PBTConfig):
            raise ValueError(f"config must be a PBTConfig, but got {type(config).__name__}.")
        self.config = config
        self.space: tuple[Param, ...] = check_space(space)
        self.seed: int = config.seed if config.seed is not None else secrets.randbits(32)
        self.checkpoint_root = os.fspath(checkpoint_root)
        self._records: list[RoundRecord] = []
        self._ok: dict[tuple[int, int], RoundRecord] = {}  # (member, round) -> completed record
        self._values: dict[int, dict[int, float]] = {}  # round -> member -> value
        self._ready: dict[int, tuple[int, Job]] = {}  # member -> (enqueue order, job)
        self._running: dict[int, Job] = {}  # member -> job handed out by ask()
        self._waiting: set[int] = set()  # synchronous: finished a round, waiting at the barrier
        self._done: set[int] = set()
        self._retired: set[int] = set()
        self._seq = 0
        for m in range(config.population_size):
            params = sample(self.space, self._rng(_INIT, m, 0, 0))
            self._enqueue(self._job(m, 0, 0, params, None, None))

    # ---------------------------------------------------------------- driving the population

    def ask(self) -> Job | None:
        """The next job to launch, or None when nothing is ready (all running, waiting, done)."""
        if not self._ready:
            return None
        member = min(self._ready, key=lambda m: (self._ready[m][1].round, self._ready[m][0]))
        _, job = self._ready.pop(member)
        self._running[member] = job
        return job

    def tell(
        self,
        member: int,
        round: int,
        value: float | None,
        checkpoint: str | os.PathLike[str] | None = None,
    ) -> RoundRecord:
        """Record the result of a job from :meth:`ask`; ``value`` None or NaN means it failed.

        ``checkpoint`` is what the job saved (default: the job's ``save_checkpoint``).
        """
        job = self._running.get(member)
        if job is None or job.round != round:
            raise ValueError(self._not_running_message(member, round))
        v = clean_value(value)
        del self._running[member]
        saved = os.fspath(checkpoint) if checkpoint is not None else job.save_checkpoint
        record = RoundRecord(
            member=member,
            round=round,
            params=dict(job.params),
            parent=job.parent,
            value=v,
            checkpoint=saved,
            attempt=job.attempt,
            start_checkpoint=job.start_checkpoint,
        )
        self._records.append(record)
        if v is None:
            self._on_failure(job)
        else:
            self._ok[(member, round)] = record
            self._values.setdefault(round, {})[member] = v
            if round + 1 >= self.config.rounds:
                self._done.add(member)
            elif self.config.synchronous:
                self._waiting.add(member)
            else:
                self._enqueue(self._next_round(member, round))
        if self.config.synchronous:
            self._release_barrier()
        return record

    @classmethod
    def from_records(
        cls,
        config: PBTConfig,
        space: Iterable[Param],
        records: Iterable[RoundRecord],
        *,
        checkpoint_root: str | os.PathLike[str] = "checkpoints",
    ) -> PBTScheduler:
        """Rebuild a population from its finished rounds, given in the order they finished.

        Each record is replayed as ask + tell of its member's open job. Where a record's params
        or parent differ from what the replay decides (results replayed in another order than
        they arrived), the record wins: it is what ran. Jobs that were running when the sweep
        stopped are not records; they come back from :meth:`ask`, with the same decisions as
        before when the records are in arrival order. ``config.seed`` must be the original seed
        for the rebuilt decisions to match.
        """
        scheduler = cls(config, space, checkpoint_root=checkpoint_root)
        records = list(records)
        if records and config.seed is None:
            log.warning(
                "Resuming a PBT population without its seed: unfinished rounds get new random "
                "decisions; pass the seed of the first run to repeat them."
            )
        for record in records:
            scheduler._replay(record)
        return scheduler

    # ---------------------------------------------------------------- state

    @property
    def finished(self) -> bool:
        """True when every member has run its last round or retired."""
        return not (self._ready or self._running or self._waiting)

    @property
    def running(self) -> list[Job]:
        """Jobs handed out by :meth:`ask` and not yet told, by member."""
        return [self._running[m] for m in sorted(self._running)]

    @property
    def records(self) -> list[RoundRecord]:
        """Every finished member round (failed ones included), in the order they were told."""
        return list(self._records)

    @property
    def retired(self) -> list[int]:
        return sorted(self._retired)

    def member_status(self, member: int) -> str:
        """'ready', 'running', 'waiting' (synchronous barrier), 'done' or 'retired'."""
        for status, members in (
            ("ready", self._ready),
            ("running", self._running),
            ("waiting", self._waiting),
            ("done", self._done),
            ("retired", self._retired),
        ):
            if member in members:
                return status
        raise ValueError(
            f"member must be in [0, {self.config.population_size - 1}], but got {member}."
        )

    # ---------------------------------------------------------------- internals

    def _rng(self, kind: int, member: int, round: int, attempt: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, kind, member, round, attempt])

    def _job(
        self,
        member: int,
        round: int,
        attempt: int,
        params: dict[str, Any],
        parent: int | None,
        start_checkpoint: str | None,
    ) -> Job:
        name = f"round_{round:03d}" + (f"_retry{attempt}" if attempt else "")
        interval = self.config.perturbation_interval
        return Job(
            member=member,
            round=round,
            attempt=attempt,
            params=params,
            parent=parent,
            start_checkpoint=start_checkpoint,
            save_checkpoint=os.path.join(self.checkpoint_root, f"member_{member:03d}", name),
            start_step=round * interval,
            target_step=(round + 1) * interval,
        )

    def _enqueue(self, job: Job) -> None:
        self._ready[job.member] = (self._seq, job)
        self._seq += 1

    def _explore(self, params: Mapping[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        return explore(
            params,
            self.space,
            rng,
            resample_probability=self.config.resample_probability,
            perturbation_factors=self.config.perturbation_factors,
        )

    def _next_round(self, member: int, round: int) -> Job:
        """Member finished ``round``: exploit/explore or continue, as the module doc says."""
        values = self._values.get(round, {})
        bottom, top = truncation_sets(values, self.config.quantile_fraction, self.config.maximize)
        own = self._ok[(member, round)]
        if member in bottom and top:
            rng = self._rng(_EXPLOIT, member, round + 1, 0)
            parent = top[int(rng.integers(len(top)))]
            source = self._ok[(parent, round)]
            log.info(
                "PBT: member %d (round %d, value %.6g) exploits member %d (value %.6g).",
                member,
                round,
                values[member],
                parent,
                values[parent],
            )
            params = self._explore(source.params, rng)
            return self._job(member, round + 1, 0, params, parent, source.checkpoint)
        return self._job(member, round + 1, 0, dict(own.params), None, own.checkpoint)

    def _on_failure(self, job: Job) -> None:
        if job.attempt >= self.config.max_retries:
            self._retired.add(job.member)
            log.warning(
                "PBT: member %d failed round %d %d time(s); it retires (max_retries=%d).",
                job.member,
                job.round,
                job.attempt + 1,
                self.config.max_retries,
            )
            return
        self._enqueue(self._retry(job))

    def _retry(self, job: Job) -> Job:
        member, round, attempt = job.member, job.round, job.attempt + 1
        rng = self._rng(_RETRY, member, round, attempt)
        if round == 0:
            return self._job(member, 0, attempt, sample(self.space, rng), None, None)
        _, top = truncation_sets(
            self._values.get(round - 1, {}), self.config.quantile_fraction, self.config.maximize
        )
        if top:
            chosen = top[int(rng.integers(len(top)))]
            source = self._ok[(chosen, round - 1)]
            parent = None if chosen == member else chosen
            params = self._explore(source.params, rng)
            return self._job(member, round, attempt, params, parent, source.checkpoint)
        params = self._explore(job.params, rng)
        return self._job(member, round, attempt, params, job.parent, job.start_checkpoint)

    def _release_barrier(self) -> None:
        if self._ready or self._running or not self._waiting:
            return
        waiting, self._waiting = sorted(self._waiting), set()
        for member in waiting:
            last = max(r for (m, r) in self._ok if m == member)
            self._enqueue(self._next_round(member, last))
