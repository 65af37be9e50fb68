"""PBT as a proposer of the shared trial loop (``nemo_rl_hpo/sweep/core.py``).

Each member round the scheduler hands out becomes one RUNNING Optuna trial carrying the round's
parameters and ``pbt:*`` records; its job gets the checkpoint to start from, the one to save
and the step to train to through the trial context. The loop gives PBT what every sweep has:
heartbeats, re-attach to a round whose job outlived the sweeper, orphan handling, early slot
release. Nothing here knows Hydra: external-command trials read the same context.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from nemo_rl_hpo.pbt._config import PBTConfig
from nemo_rl_hpo.pbt._records import Job, RoundRecord
from nemo_rl_hpo.pbt._scheduler import PBTScheduler
from nemo_rl_hpo.pbt._space import Param
from nemo_rl_hpo.sweep import records
from nemo_rl_hpo.sweep.proposer import Proposal

log = logging.getLogger(__name__)


class PBTProposer:
    """Drive a :class:`PBTScheduler` from the loop; its population is rebuilt from the study.

    ``overrides`` renders a round's parameters as the job's overrides (the sweeper's search
    space); ``distributions`` records them as the trial's Optuna params.
    """

    def __init__(
        self,
        study: optuna.Study,
        config: PBTConfig,
        params: Sequence[Param],
        distributions: Mapping[str, BaseDistribution],
        overrides: Any,
        checkpoint_root: str | Path,
    ) -> None:
        self.study = study
        self.config = config
        self.params = list(params)
        self.distributions = dict(distributions)
        self.overrides = overrides
        self.checkpoint_root = checkpoint_root
        self.scheduler: PBTScheduler | None = None
        self.n_replayed = 0
        self._adopted_once = False
        self._jobs: dict[int, Job] = {}  # trial number -> the member round it runs

    def start(self) -> PBTScheduler:
        """Rebuild the population from the study's finished rounds (once; ValueError when the
        study's rounds do not fit this config). Call it after the loop's ``recover``."""
        if self.scheduler is None:
            self.scheduler = self._rebuild()
        return self.scheduler

    # ----------------------------------------------------------------- the proposer contract
    def adopt(self, reattached: Sequence[FrozenTrial]) -> list[Proposal]:
        """Take over the rounds whose jobs still run. On the first call, a RUNNING round that
        is not taken over is failed as orphaned and handed out again (one driver per
        population)."""
        first = not self._adopted_once
        self._adopted_once = True
        sched = self.start()
        out: list[Proposal] = []
        for t in reattached:
            a = t.user_attrs
            if records.PBT_MEMBER not in a:
                continue
            try:
                job = sched.adopt(
                    int(a[records.PBT_MEMBER]),
                    int(a.get(records.PBT_ROUND, 0)),
                    dict(a.get(records.PBT_PARAMS) or {}),
                    a.get(records.PBT_PARENT),
                    a.get(records.PBT_START_CHECKPOINT),
                )
            except ValueError as e:  # not this population's open round: the loop fails it
                log.warning("PBT: cannot take over trial %d: %s", t.number, e)
                continue
            self._jobs[t.number] = job
            out.append(Proposal(optuna.Trial(self.study, t._trial_id), [], self._context(job)))
        if first:
            adopted = {p.number for p in out}
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if t.number not in adopted and records.PBT_MEMBER in t.user_attrs:
                    records.fail_trial(
                        self.study, t, "its sweeper stopped while it ran", orphaned=True
                    )
        return out

    def ask(self) -> Proposal | None:
        assert self.scheduler is not None, "adopt() comes first"
        job = self.scheduler.ask()
        if job is None:
            return None
        trial = self.study.ask()
        storage = self.study._storage
        for name, value in job.params.items():
            dist = self.distributions[name]
            storage.set_trial_param(trial._trial_id, name, dist.to_internal_repr(value), dist)
        for k, v in job.user_attrs().items():
            storage.set_trial_user_attr(trial._trial_id, k, v)
        trial = optuna.Trial(self.study, trial._trial_id)  # its params, as PBT chose them
        self._jobs[trial.number] = job
        return Proposal(trial, list(self.overrides(job.params)), self._context(job))

    def tell(self, trial: FrozenTrial) -> bool:
        """Tell the scheduler the round's value (None: failed); True when it runs it again."""
        job = self._jobs.pop(trial.number, None)
        if job is None or self.scheduler is None:
            return False
        value = trial.value if trial.state == TrialState.COMPLETE else None
        record = self.scheduler.tell(job.member, job.round, value, job.save_checkpoint)
        log.info(
            "[PBT] member %d round %d/%d %s value=%s%s",
            job.member,
            job.round + 1,
            self.config.rounds,
            trial.state.name,
            "-" if value is None else f"{value:.6g}",
            "" if job.parent is None else f" (exploited member {job.parent})",
        )
        return record.failed and job.member not in self.scheduler.retired

    def pending(self) -> bool:
        return False  # nothing but our own launches moves a population on

    # ----------------------------------------------------------------------------- helpers
    def _rebuild(self) -> PBTScheduler:
        finished = [
            t
            for t in self.study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.FAIL)
            and records.PBT_MEMBER in t.user_attrs
            and records.INTERRUPTED not in t.user_attrs
            and records.ORPHANED not in t.user_attrs
        ]
        finished.sort(key=lambda t: (t.datetime_complete or datetime.min, t.number))
        rounds = [
            RoundRecord.from_user_attrs(
                t.user_attrs, t.value if t.state == TrialState.COMPLETE else None
            )
            for t in finished
        ]
        self.n_replayed = len(rounds)
        root = self.checkpoint_root
        if rounds:
            return PBTScheduler.from_records(self.config, self.params, rounds, checkpoint_root=root)
        return PBTScheduler(self.config, self.params, checkpoint_root=root)

    @staticmethod
    def _context(job: Job) -> dict[str, Any]:
        return {
            "checkpoint_dir": job.save_checkpoint,
            "resume_from": job.start_checkpoint,
            "steps": job.target_step,
        }
