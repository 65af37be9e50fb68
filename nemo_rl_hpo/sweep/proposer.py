"""What the trial loop asks for its next job and tells each result: a *proposer*.

The loop (``sweep/core.py``) owns everything about running jobs: slots (``n_jobs``), launching,
heartbeats, re-attaching to live jobs of a dead sweeper, failing orphans, early slot release,
the failure-rate abort and the timeout. A proposer owns what to run next and what a result
means: Optuna's ask/tell (:class:`OptunaProposer`, this module), PBT's member rounds
(``nemo_rl_hpo.pbt.PBTProposer``), multi-fidelity segments (``nemo_rl_hpo.fidelity``), or a
proposer wrapping another one (seed repeats: ``sweep/repeats.SeedRepeats`` fans each proposal
out into seed jobs). The contract, also in docs/architecture.md:

- ``adopt(reattached)``: called once before the first ``ask`` (after the loop failed the trials
  of dead sweepers), and again whenever the loop finds more. ``reattached`` are RUNNING trials
  whose job still runs although their sweeper died: the proposer returns a :class:`Proposal` for
  each one it takes over (the loop then waits for its result like for its own launches); the
  loop fails the others and tells the proposer.
- ``ask()``: the next job, or None when nothing is to be launched now (budget spent, or waiting
  for running jobs). The proposal's trial is a RUNNING trial; the loop claims it (owner,
  heartbeats), records its overrides and launches it.
- ``tell(trial)``: a trial this loop ran (or failed as an orphan) has finished (or paused): told
  once, when its last running job ended; ``trial`` is its final record, read back from the
  storage (the job told its own values; a job that died was failed with a reason by the loop).
  Returns True when the proposer will run that failed configuration again (a retry): the loop
  then does not count it against ``max_failure_rate``.
- ``pending()``: asked when this loop runs nothing and ``ask`` gave nothing: whether work may
  still come without a launch of ours (trials of a peer sweeper still hold budget). False ends
  the loop.

- ``rescue(trial)`` (optional): an orphan whose job is gone, before the loop fails it. True
  when the proposer took the trial back without failing it (the fidelity proposer pauses a
  promoted trial again at its last rung: its checkpoints survive the job).

A proposer is called from the loop's thread only; the launches run in other threads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

from nemo_rl_hpo.search.space import SearchSpace
from nemo_rl_hpo.sweep import records

log = logging.getLogger(__name__)


@dataclass
class Proposal:
    """One job to launch: the RUNNING trial that records it and what the job runs with.

    ``context`` adds keys to the trial context the job reads (``nemo_rl_hpo.trial``): PBT's
    ``checkpoint_dir``/``resume_from``/``steps``; a key given here replaces the sweeper's.

    A trial may be run by several jobs (the seeds of a repeated configuration,
    ``sweep/repeats.py``): each is a proposal of its own with the same trial, its ``index``, the
    overrides it adds to the configuration's (``job_overrides``: its seed), the ``label`` its
    failure reason starts with, and ``ended``, which says from the trial's record whether this
    job already told its own end while the trial waits for its other jobs.
    """

    trial: optuna.Trial
    overrides: list[str]  # the configuration (recorded on the trial)
    context: dict[str, Any] = field(default_factory=dict)
    job_overrides: list[str] = field(default_factory=list)
    index: int = 0
    label: str = ""
    ended: Callable[[FrozenTrial], bool] | None = None

    @property
    def number(self) -> int:
        return self.trial.number

    @property
    def key(self) -> tuple[int, int]:
        """The job's key in the loop: (trial number, index)."""
        return (self.trial.number, self.index)


class Proposer(Protocol):
    def adopt(self, reattached: Sequence[FrozenTrial]) -> list[Proposal]: ...

    def ask(self) -> Proposal | None: ...

    def tell(self, trial: FrozenTrial) -> bool: ...

    def pending(self) -> bool: ...


def counted_trials(trials: Sequence[FrozenTrial], retried: set[int] | None = None) -> int:
    """Trials that use the global budget: finished or running, minus retried failures.

    ``retried`` must come from the whole study when ``trials`` is a subset: a retry (which
    carries the ``retry_of`` mark) may be numbered after the failure it retries.
    """
    if retried is None:
        retried = retried_numbers(trials)
    n = 0
    for t in trials:
        if t.system_attrs.get(records.SYS_OVERFLOW) or t.user_attrs.get(records.WARM_START_PRIOR):
            continue
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
            n += 1
        elif t.state == TrialState.FAIL and t.number not in retried:
            n += 1
    return n


def retried_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of failed trials that a later trial retries (finished trials are read-only)."""
    return {int(t.user_attrs[records.RETRY_OF]) for t in trials if records.RETRY_OF in t.user_attrs}


def hydra_free(overrides: Sequence[str]) -> list[str]:
    """A trial's overrides as recorded for people (``hydra.*`` settings left out)."""
    return [o for o in overrides if not o.startswith("hydra.")]


@dataclass
class OptunaProposer:
    """Optuna's sampler proposes, ``n_trials`` is a budget shared by every cooperating sweeper.

    A trial asked after the budget was spent (a peer asked the last ones meanwhile) is marked
    overflow and failed: it never ran and is not counted. A failed configuration is enqueued
    again up to ``retry_failed`` times (``retry_of``/``attempt`` mark the retry).
    """

    study: optuna.Study
    space: SearchSpace
    n_trials: int
    retry_failed: int = 0
    extend: Callable[[optuna.Trial], None] | None = None  # custom_search_space: more params
    _retried: set[int] = field(default_factory=set)  # failed trials this proposer enqueued again

    @property
    def _storage(self) -> Any:
        return self.study._storage

    def _trials(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    def adopt(self, reattached: Sequence[FrozenTrial]) -> list[Proposal]:
        out = []
        for t in reattached:
            overrides = [str(o) for o in t.user_attrs.get(records.OVERRIDES) or []]
            out.append(Proposal(optuna.Trial(self.study, t._trial_id), overrides))
        return out

    def ask(self) -> Proposal | None:
        trials = self._trials()
        if counted_trials(trials) >= self.n_trials:
            return None
        trial = self.study.ask()
        # Global budget across cooperating sweepers: trials asked after it was spent give way.
        trials = self._trials()
        earlier = [t for t in trials if t.number < trial.number]
        if counted_trials(earlier, retried_numbers(trials)) >= self.n_trials:
            self._storage.set_trial_system_attr(trial._trial_id, records.SYS_OVERFLOW, True)
            self.study.tell(trial, state=TrialState.FAIL)
            return None
        values = self.space.suggest(trial)
        if self.extend is not None:
            self.extend(trial)
        values.update({k: v for k, v in trial.params.items() if k not in values})
        return Proposal(trial, self.space.overrides(values))

    def tell(self, trial: FrozenTrial) -> bool:
        if trial.state != TrialState.FAIL:
            return False
        if trial.system_attrs.get(records.SYS_OVERFLOW):
            # It never ran (budget spent, or orphaned before its launch): nothing failed. A
            # retry that never ran is still owed to the configuration it retries.
            self._requeue_retry(trial)
            return True
        if self._retry(trial):
            return True
        return trial.number in self._retried or trial.number in retried_numbers(self._trials())

    def _retry(self, t: FrozenTrial) -> bool:
        if self.retry_failed <= 0:
            return False
        attempt = int(t.user_attrs.get(records.ATTEMPT, 0))
        if t.number in self._retried or attempt >= self.retry_failed:
            return False
        if t.number in retried_numbers(self._trials()):
            return False
        self.study.enqueue_trial(
            dict(t.params), user_attrs={records.RETRY_OF: t.number, records.ATTEMPT: attempt + 1}
        )
        self._retried.add(t.number)
        log.info("trial %d will be retried (attempt %d)", t.number, attempt + 1)
        return True

    def _requeue_retry(self, t: FrozenTrial) -> None:
        if records.RETRY_OF not in t.user_attrs:
            return
        of = int(t.user_attrs[records.RETRY_OF])
        failed = next((f for f in self._trials() if f.number == of), None)
        if failed is None:
            return
        self.study.enqueue_trial(
            dict(failed.params),
            user_attrs={records.RETRY_OF: of, records.ATTEMPT: t.user_attrs.get(records.ATTEMPT)},
        )
        log.info("trial %d's retry %d never ran; it will run again", of, t.number)

    def pending(self) -> bool:
        """Trials of a dead or live peer still hold budget: wait until they end or are orphans."""
        return any(
            t.state == TrialState.RUNNING
            and not t.system_attrs.get(records.SYS_OVERFLOW)
            and not records.is_paused(t)
            for t in self._trials()
        )
