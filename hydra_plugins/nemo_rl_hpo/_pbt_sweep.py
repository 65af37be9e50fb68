"""``hydra/sweeper=pbt``: what PBT adds to the shared orchestration.

Its settings (``_settings.PBTSettings``), a search space without conditions whose ends are
checked exactly (perturbations are clipped to them), and PBT's proposer around the Hydra-free
algorithm (``nemo_rl_hpo.pbt``): member rounds become trials of the shared trial loop, which
gives PBT heartbeats, re-attach to live jobs, orphan handling and early slot release.
Everything else every sweeper does is ``_sweep_base.HydraSweep``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import optuna

from hydra_plugins.nemo_rl_hpo._search_space import check_space
from hydra_plugins.nemo_rl_hpo._settings import PBTSettings, SweepConfigError
from hydra_plugins.nemo_rl_hpo._study import OpenStudy
from hydra_plugins.nemo_rl_hpo._sweep_base import HydraSweep, SweepPlan, SweepRun
from nemo_rl_hpo import pbt
from nemo_rl_hpo.search.space import SearchSpace
from nemo_rl_hpo.sweep import records
from nemo_rl_hpo.sweep.core import SweepSettings, SweepSummary

log = logging.getLogger(__name__)


class PBTSweeperImpl(HydraSweep):
    def read_settings(self) -> PBTSettings:
        return PBTSettings.from_config(self.cfg)

    def plan(self, s: PBTSettings, space: SearchSpace, loop: SweepSettings) -> SweepPlan:
        if space.conditions:
            key = next(iter(space.conditions))
            raise SweepConfigError(
                f"hydra.sweeper.params.{key}: PBT perturbs every member's parameters, so "
                "conditional parameters are not supported; fix the group option instead."
            )
        check_space(self.jobs, space, s.check, exact_ends=True)  # perturbations are clipped
        self._params = [pbt.param_from_distribution(k, d) for k, d in space.distributions.items()]
        if not self._params:
            raise SweepConfigError(
                "hydra.sweeper.params is empty: PBT needs hyperparameters to explore."
            )
        # PBT decides values and never prunes: the study's sampler and pruner are unused.
        return SweepPlan(
            optuna.samplers.RandomSampler(), optuna.pruners.NopPruner(), records.KIND_PBT
        )

    def run(
        self, s: PBTSettings, opened: OpenStudy, space: SearchSpace, loop: SweepSettings
    ) -> SweepRun:
        study = opened.study
        seed = study.user_attrs.get(records.STUDY_PBT_SEED, s.seed)
        pbt_config = s.pbt_config(seed, loop.n_jobs)
        proposer = pbt.PBTProposer(
            study,
            pbt_config,
            self._params,
            space.distributions,
            space.overrides,
            opened.sweep_dir / "checkpoints",
        )
        self._results: dict[str, Any] = {}

        def start() -> None:
            try:
                self._sched = proposer.start()
            except ValueError as e:
                raise SweepConfigError(f"cannot resume PBT study {opened.name!r}: {e}") from None
            study.set_user_attr(records.STUDY_PBT_SEED, self._sched.seed)
            log.info(
                "PBT study %r in %s: population %d, %d rounds of %d steps, %d round(s) done, "
                "%d in parallel, %s rounds",
                opened.name,
                opened.masked,
                pbt_config.population_size,
                pbt_config.rounds,
                pbt_config.perturbation_interval,
                proposer.n_replayed,
                loop.n_jobs,
                "synchronous" if pbt_config.synchronous else "asynchronous",
            )

        def finish() -> None:
            self._results = self._sched.results()
            study.set_user_attr(records.STUDY_PBT_RESULTS, _jsonable(self._results))

        return SweepRun(proposer, start=start, finish=finish)

    def done_line(self, summary: SweepSummary, opened: OpenStudy) -> str:
        return (
            f"PBT done: best member {self._results.get('best_member')} value "
            f"{self._results.get('best_value')}. Results in {opened.sweep_dir}"
        )


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
