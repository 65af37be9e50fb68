"""The one sweep orchestration every sweeper runs; a sweeper contributes its proposer and settings.

:meth:`HydraSweep.sweep` does, for the Optuna sweeper, PBT and any later one: read the settings,
build the search space, open and record the study, size the parallelism for the launcher
(Hydra's basic launcher runs jobs in this process, one at a time), launch each proposal as one
Hydra job carrying the trial context, run the shared trial loop (``nemo_rl_hpo/sweep/core.py``),
turn what stops a sweep into one line (failure-rate abort, storage out of reach, full disk,
each with the resume command), and write the outputs. A subclass says only what differs
(:class:`SweepPlan`): its settings, its sampler and pruner, its proposer, its extra trial
context and its last log line. The path from ``python train.py -m`` to a recorded trial is in
docs/architecture.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import optuna
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.nemo_rl_hpo._launch import HydraJobs
from hydra_plugins.nemo_rl_hpo._outputs import write_outputs
from hydra_plugins.nemo_rl_hpo._search_space import build_space
from hydra_plugins.nemo_rl_hpo._settings import (
    SWEEPER_KEYS,
    CommonSettings,
    SweepConfigError,
    config_error,
)
from hydra_plugins.nemo_rl_hpo._study import OpenStudy, open_study
from hydra_plugins.nemo_rl_hpo._sweep_record import record_sweep, resume_command
from nemo_rl_hpo.errors import named
from nemo_rl_hpo.search.space import SearchSpace
from nemo_rl_hpo.sweep import records
from nemo_rl_hpo.sweep import storage as st
from nemo_rl_hpo.sweep.core import (
    AsyncSweep,
    LaunchOutcome,
    SweepAborted,
    SweepSettings,
    SweepSummary,
    TrialEnd,
)
from nemo_rl_hpo.sweep.liveness import job_alive
from nemo_rl_hpo.sweep.proposer import Proposal, Proposer

log = logging.getLogger(__name__)


@dataclass
class SweepPlan:
    """What a sweeper decided before its study is opened: the study's sampler and pruner."""

    sampler: optuna.samplers.BaseSampler
    pruner: optuna.pruners.BasePruner
    kind: str  # records.KIND_*: what the report and CLI show this study as
    context: dict[str, Any] = field(default_factory=dict)  # extra trial context for every job


@dataclass
class SweepRun:
    """What a sweeper built on the open study: its proposer and what the loop reports with."""

    proposer: Proposer
    on_trial_end: TrialEnd | None = None
    # Called after the loop failed the orphans of a dead sweeper, before the first job: PBT
    # rebuilds its population from the records here.
    start: Callable[[], None] | None = None
    # Called when the loop stopped (also on an abort), before the outputs are written.
    finish: Callable[[], None] | None = None
    # Called with the jobs' context once the search ended normally (budget, timeout; not on an
    # abort), before finish: the Optuna sweeper's confirmation stage (sweep/confirm.py).
    after_search: Callable[[dict[str, Any]], None] | None = None


class HydraSweep:
    """The orchestration; subclasses implement :meth:`read_settings`, :meth:`plan`, :meth:`run`
    and :meth:`done_line`."""

    def __init__(self, **cfg: Any) -> None:
        self.cfg = cfg
        self.jobs = HydraJobs()

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.jobs.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    # ------------------------------------------------------------ what a sweeper contributes
    def read_settings(self) -> CommonSettings:
        raise NotImplementedError

    def plan(self, settings: Any, space: SearchSpace, loop: SweepSettings) -> SweepPlan:
        """Check the space for this sweeper; its sampler and pruner (``loop.n_jobs``: real)."""
        raise NotImplementedError

    def run(
        self, settings: Any, opened: OpenStudy, space: SearchSpace, loop: SweepSettings
    ) -> SweepRun:
        """The proposer on the open study (it may lower ``loop.n_jobs``)."""
        raise NotImplementedError

    def launch_job(self, proposal: Proposal, context: dict[str, Any]) -> LaunchOutcome:
        """One proposal as one Hydra job; called from the loop's launch threads."""
        return self.jobs.launch(
            proposal.trial, [*proposal.overrides, *proposal.job_overrides], context
        )

    def done_line(self, summary: SweepSummary, opened: OpenStudy) -> str:
        stopped = " (stopped at the compute budget)" if summary.budget_reached else ""
        return (
            f"Sweep done: {records.counts_line(summary.counts) or 'no trials'}{stopped}. "
            f"Results in {opened.sweep_dir}"
        )

    # ------------------------------------------------------------------- the orchestration
    def sweep(self, arguments: list[str]) -> None:
        config = self.jobs.config
        assert config is not None
        started_at = datetime.now()
        s = self.read_settings()
        loop = s.loop_settings()
        in_process = self.jobs.in_process
        loop.early_release = not in_process  # in-process jobs share Hydra's global state
        if in_process and loop.n_jobs > 1:
            _say_one_at_a_time(config, loop.n_jobs)
            loop.n_jobs = 1
        space = build_space(self.jobs, s.params, arguments)
        plan = self.plan(s, space, loop)
        opened = self._start_study(s, config, plan)
        sweep = self.run(s, opened, space, loop)
        context = {
            "study": opened.name,
            "storage": opened.bare_url,
            "objectives": s.objectives,
            "storage_retry_s": s.storage_retry_s,
            "prune_metric": None,
            "weights": None,
            "param_prefix": SWEEPER_KEYS,  # the job's errors name hydra.sweeper.* keys
            **plan.context,
        }

        def launch(proposal: Proposal) -> LaunchOutcome:
            return self.launch_job(proposal, {**context, **proposal.context})

        core = AsyncSweep(
            opened.study,
            sweep.proposer,
            launch,
            loop,
            on_trial_end=sweep.on_trial_end,
            is_job_alive=lambda t: job_alive(t.user_attrs),
        )
        reattached = core.recover()
        if sweep.start is not None:
            sweep.start()
        log.info("Resume this sweep with: %s", opened.resume)
        after = sweep.after_search
        self._run(
            core,
            reattached,
            s,
            opened,
            started_at,
            sweep.finish,
            (lambda: after(context)) if after is not None else None,
        )

    def _start_study(self, s: CommonSettings, config: DictConfig, plan: SweepPlan) -> OpenStudy:
        """Open the sweep's study and record the sweep on it."""
        opened = open_study(s, config, s.directions, plan.sampler, plan.pruner, self.jobs.on_slurm)
        opened.resume = resume_command(opened.sweep_dir, opened.name)
        record_sweep(
            opened,
            config,
            kind=plan.kind,
            sampler=type(plan.sampler).__name__,
            objectives=s.objectives,
            directions=s.directions,
            resume=opened.resume,
        )
        return opened

    def _run(
        self,
        core: AsyncSweep,
        reattached: list[optuna.trial.FrozenTrial],
        s: CommonSettings,
        opened: OpenStudy,
        started_at: datetime,
        finish: Callable[[], None] | None,
        after_search: Callable[[], None] | None = None,
    ) -> None:
        """Run the loop; what stops it early becomes one line, with the resume command.

        Outputs are written whenever the study can still be read: after a normal end and after
        the failure-rate abort, not when the storage is out of reach or the disk is full.
        """
        study = opened.study
        error: SweepAborted | None = None
        lost: st.StorageUnavailable | None = None
        full: str | None = None
        summary = SweepSummary(started=time.time())
        try:
            summary = core.run(reattached)
            if after_search is not None:
                after_search()
        except SweepAborted as e:
            error = e
            summary.counts = records.count_states(study.get_trials(deepcopy=False))
        except st.StorageUnavailable as e:  # one line; no outputs from a study out of reach
            lost = e
        except Exception as e:  # a full disk: one line naming it, not a trace or failed trials
            if not st.is_disk_full(e):
                raise
            full = st.disk_full_message(e, opened.sweep_dir)
        finally:
            if lost is None and full is None:
                if finish is not None:
                    finish()
                write_outputs(study, opened.sweep_dir, started_at, s.raw, s.write_report)
        if lost is not None:
            line = named(lost, SWEEPER_KEYS)
            raise SweepConfigError(f"{line}; once it is back, resume with: {opened.resume}")
        if full is not None:
            raise SweepConfigError(
                f"{full}; the study is intact: free space, then resume with: {opened.resume}"
            )
        log.info(self.done_line(summary, opened))
        if error is not None:
            raise config_error(error)


def _say_one_at_a_time(config: DictConfig, n_jobs: int) -> None:
    # Said only to a user who asked for n_jobs: the default is for parallel launchers.
    asked = any(
        str(o).lstrip("+").startswith("hydra.sweeper.n_jobs=") for o in config.hydra.overrides.hydra
    )
    log.log(
        logging.INFO if asked else logging.DEBUG,
        "the basic launcher runs trials one at a time (n_jobs=%d ignored); "
        "hydra/launcher=local or pool runs them in parallel",
        n_jobs,
    )
