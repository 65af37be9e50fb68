"""Hydra side of ``hydra/sweeper=pbt``: member rounds as Optuna trials launched by any launcher.

The algorithm (exploit/explore, ordering, replay) is ``nemo_rl_hpo.pbt``; its proposer turns
member rounds into trials of the shared trial loop (``nemo_rl_hpo/sweep/core.py``), which gives
PBT heartbeats, re-attach to live jobs, orphan handling and early slot release. This module
only wires settings, search space, study and launcher together, as the Optuna sweeper does.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

import optuna

from hydra_plugins.nemo_rl_hpo import _study as study_mod
from hydra_plugins.nemo_rl_hpo._jobs import HydraSweep
from hydra_plugins.nemo_rl_hpo._search_space import build_space, check_space
from hydra_plugins.nemo_rl_hpo._settings import PBTSettings, SweepConfigError
from nemo_rl_hpo import pbt
from nemo_rl_hpo.sweep import records
from nemo_rl_hpo.sweep import storage as st
from nemo_rl_hpo.sweep.core import AsyncSweep, LaunchOutcome, Proposal
from nemo_rl_hpo.sweep.liveness import job_alive

log = logging.getLogger(__name__)


class PBTSweeperImpl(HydraSweep):
    def sweep(self, arguments: list[str]) -> None:
        config = self.jobs.config
        assert config is not None
        started_at = datetime.now()
        s = PBTSettings.from_config(self.cfg)
        space = build_space(self.jobs, s.params, arguments)
        if space.conditions:
            key = next(iter(space.conditions))
            raise SweepConfigError(
                f"hydra.sweeper.params.{key}: PBT perturbs every member's parameters, so "
                "conditional parameters are not supported; fix the group option instead."
            )
        check_space(self.jobs, space, s.check, exact_ends=True)  # perturbations are clipped
        params = [pbt.param_from_distribution(k, d) for k, d in space.distributions.items()]
        if not params:
            raise SweepConfigError(
                "hydra.sweeper.params is empty: PBT needs hyperparameters to explore."
            )
        sampler = optuna.samplers.RandomSampler()  # PBT decides values; the sampler is unused
        opened = study_mod.start_study(
            s,
            config,
            sampler,
            optuna.pruners.NopPruner(),
            on_slurm=self.jobs.on_slurm,
            kind=records.KIND_PBT,
        )
        study, resume = opened.study, opened.resume
        loop_settings = s.loop_settings()
        loop_settings.early_release = not self.jobs.in_process
        if self.jobs.in_process:
            loop_settings.n_jobs = 1
        seed = study.user_attrs.get(records.STUDY_PBT_SEED, s.seed)
        pbt_config = s.pbt_config(seed, loop_settings.n_jobs)
        proposer = pbt.PBTProposer(
            study,
            pbt_config,
            params,
            space.distributions,
            space.overrides,
            opened.sweep_dir / "checkpoints",
        )
        context = {
            "study": opened.name,
            "storage": opened.bare_url,
            "prune_metric": None,
            "objectives": s.objectives,
            "weights": None,
            "storage_retry_s": s.storage_retry_s,
        }

        def launch(proposal: Proposal) -> LaunchOutcome:
            ctx = {**context, **proposal.context}
            return self.jobs.launch(proposal.trial, proposal.overrides, ctx)

        core = AsyncSweep(
            study,
            proposer,
            launch,
            loop_settings,
            is_job_alive=lambda t: job_alive(t.user_attrs),
        )
        reattached = core.recover()
        try:
            sched = proposer.start()
        except ValueError as e:
            raise SweepConfigError(f"cannot resume PBT study {opened.name!r}: {e}") from None
        study.set_user_attr(records.STUDY_PBT_SEED, sched.seed)
        log.info(
            "PBT study %r in %s: population %d, %d rounds of %d steps, %d round(s) done, "
            "%d in parallel, %s rounds",
            opened.name,
            opened.masked,
            pbt_config.population_size,
            pbt_config.rounds,
            pbt_config.perturbation_interval,
            proposer.n_replayed,
            loop_settings.n_jobs,
            "synchronous" if pbt_config.synchronous else "asynchronous",
        )
        log.info("Resume this sweep with: %s", resume)
        lost: st.StorageUnavailable | None = None
        try:
            core.run(reattached)
        except st.StorageUnavailable as e:  # one line; no outputs from a study out of reach
            lost = e
        finally:
            results = sched.results()
            if lost is None:
                study.set_user_attr(records.STUDY_PBT_RESULTS, _jsonable(results))
                study_mod.write_outputs(study, opened.sweep_dir, started_at, s.raw, s.write_report)
        if lost is not None:
            raise SweepConfigError(f"{lost}; once it is back, resume with: {resume}")
        log.info(
            "PBT done: best member %s value %s. Results in %s",
            results.get("best_member"),
            results.get("best_value"),
            opened.sweep_dir,
        )


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
