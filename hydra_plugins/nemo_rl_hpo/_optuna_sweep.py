"""``hydra/sweeper=optuna``: what the Optuna sweeper adds to the shared orchestration.

Its settings (``_settings.OptunaSettings``), the sampler and pruner (``_samplers.py``), a
custom search space, warm start, seed repeats and Optuna's proposer
(``nemo_rl_hpo/sweep/proposer.OptunaProposer``). Everything else every sweeper does (study,
launch, the loop, error lines, outputs, resume command) is ``_sweep_base.HydraSweep``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import optuna
from hydra.utils import get_method
from omegaconf import OmegaConf

from hydra_plugins.nemo_rl_hpo import _fidelity
from hydra_plugins.nemo_rl_hpo._progress import Progress
from hydra_plugins.nemo_rl_hpo._samplers import make_pruner, make_sampler
from hydra_plugins.nemo_rl_hpo._search_space import check_space
from hydra_plugins.nemo_rl_hpo._settings import (
    SWEEPER_KEYS,
    OptunaSettings,
    SweepConfigError,
    config_error,
)
from hydra_plugins.nemo_rl_hpo._study import OpenStudy
from hydra_plugins.nemo_rl_hpo._sweep_base import HydraSweep, SweepPlan, SweepRun
from nemo_rl_hpo.fidelity import Scheduler
from nemo_rl_hpo.fidelity._proposer import FidelityProposer
from nemo_rl_hpo.fidelity._sampler import RungSampler
from nemo_rl_hpo.search.space import SearchSpace
from nemo_rl_hpo.sweep import confirm, cost, records, repeats
from nemo_rl_hpo.sweep.core import SweepSettings
from nemo_rl_hpo.sweep.liveness import job_alive
from nemo_rl_hpo.sweep.proposer import OptunaProposer, Proposer, counted_trials

log = logging.getLogger(__name__)

_MISSING = object()
_CONFIRM_JOB_IDX = 1_000_000  # Hydra job numbers of confirmation jobs: past any trial's


class OptunaSweeperImpl(HydraSweep):
    def read_settings(self) -> OptunaSettings:
        return OptunaSettings.from_config(self.cfg)

    def plan(self, s: OptunaSettings, space: SearchSpace, loop: SweepSettings) -> SweepPlan:
        check_space(self.jobs, space, s.check)
        self._custom = self._custom_search_space(s)
        assert self.jobs.config is not None
        self._fidelity = _fidelity.plan(s, self.jobs.config, len(space.distributions))
        sampler = make_sampler(
            s.sampler,
            space,
            n_trials=s.n_trials,
            n_jobs=loop.n_jobs,
            n_objectives=len(s.directions),
            custom_space=self._custom is not None,
            fidelity=self._fidelity is not None,
        )
        if self._fidelity is not None:  # the model learns from one rung (nemo_rl_hpo/fidelity/)
            sampler = RungSampler(sampler, self._fidelity.min_observations or 1)
        self._reps = self._repeats(s, loop)
        context = {
            "prune_metric": s.objectives[0] if s.objectives else None,
            "weights": s.weights,
            "pruner": s.pruner_config,
        }
        return SweepPlan(sampler, make_pruner(s.pruner), records.KIND_OPTUNA, context)

    def run(
        self, s: OptunaSettings, opened: OpenStudy, space: SearchSpace, loop: SweepSettings
    ) -> SweepRun:
        study = opened.study
        if self._reps.active:
            study.set_user_attr(records.STUDY_REPEATS, self._reps.as_dict())
        tuning_seeds = self._check_confirm(s, self._reps, study)
        log.info(
            "Study %r in %s: %d/%d trials so far; sampler %s, pruner %s, %d in parallel",
            opened.name,
            opened.masked,
            counted_trials(study.get_trials(deepcopy=False)),
            s.n_trials,
            type(study.sampler).__name__,
            type(study.pruner).__name__,
            loop.n_jobs,
        )
        self._warm_start(s, study, space)
        config = self.jobs.config
        custom = self._custom
        extend = (lambda t: custom(config, t)) if custom is not None else None
        optuna_proposer = OptunaProposer(study, space, s.n_trials, s.retry_failed, extend)
        proposer: Proposer = optuna_proposer
        if self._fidelity is not None:
            proposer = self._fidelity_proposer(
                self._fidelity, optuna_proposer, study, opened.sweep_dir, s.storage_retry_s
            )
        if self._reps.active:  # each configuration runs as n seed jobs of one trial
            proposer = repeats.SeedRepeats(
                proposer,
                self._reps,
                self._reps.configurations_in_flight(loop.n_jobs),
                self._subdir(),
            )
        in_process = self.jobs.in_process
        return SweepRun(
            proposer,
            on_trial_end=Progress(loop, study),
            after_search=(
                (lambda ctx: self._confirm(s, study, ctx, tuning_seeds, in_process))
                if s.confirm.active
                else None
            ),
        )

    # -------------------------------------------------------------------- helpers
    @staticmethod
    def _fidelity_proposer(
        plan: _fidelity.FidelityPlan,
        base: OptunaProposer,
        study: optuna.Study,
        sweep_dir: Any,
        storage_retry_s: float,
    ) -> FidelityProposer:
        f = plan.settings
        study.set_user_attr(
            records.STUDY_FIDELITY,
            {**dataclasses.asdict(f), "step_key": plan.step_key, "rungs": f.all_rungs()},
        )
        log.info(
            "fidelity: %s over %s, rungs %s (η=%d, %s, %d bracket(s)); paused trials resume "
            "from their checkpoints in %s",
            "hyperband" if f.brackets > 1 else "asha",
            plan.step_key,
            f.all_rungs(),
            f.reduction_factor,
            f.mode,
            f.brackets,
            Path(sweep_dir) / "checkpoints",
        )
        return FidelityProposer(
            base,
            Scheduler(f),
            Path(sweep_dir) / "checkpoints",
            plan.keep_checkpoints,
            undecided_after_s=max(900.0, 1.5 * storage_retry_s),
            max_paused_bytes=plan.max_paused_bytes,
        )

    @staticmethod
    def _custom_search_space(s: OptunaSettings) -> Callable[[Any, optuna.Trial], Any] | None:
        path = s.custom_search_space
        if not path:
            return None
        try:
            return get_method(path)  # type: ignore[no-any-return]
        except Exception:
            raise SweepConfigError(
                f"hydra.sweeper.custom_search_space={path!r} cannot be imported; give the dotted "
                "path of a function fn(cfg, trial) on the Python path."
            ) from None

    @staticmethod
    def _warm_start(s: OptunaSettings, study: optuna.Study, space: SearchSpace) -> None:
        ws = s.warm_start  # read before secrets were masked in the config
        if not ws.get("study_name"):
            return
        from nemo_rl_hpo.sweep.warm_start import WarmStartError, warm_start

        try:
            warm_start(
                study,
                space,
                storage=ws.get("storage"),
                study_name=str(ws["study_name"]),
                top_k=int(ws["top_k"]),
                mode=str(ws["mode"]),
            )
        except WarmStartError as e:  # its parameters are hydra.sweeper.warm_start.*
            if e.params:
                raise config_error(e, f"{SWEEPER_KEYS}warm_start.") from None
            raise SweepConfigError(f"{SWEEPER_KEYS}warm_start: {e}") from None

    def _repeats(self, s: OptunaSettings, loop: SweepSettings) -> repeats.Repeats:
        """hydra.sweeper.repeats/seed_key/aggregate, checked against the app's config."""
        config = self.jobs.config
        assert config is not None
        try:
            reps = repeats.Repeats.from_config(s.repeats, s.seed_key, s.aggregate)
        except repeats.RepeatConfigError as e:
            raise config_error(e) from None
        if not reps.active:
            return reps
        _check_seed_key(
            config,
            s.params,
            "hydra.sweeper.seed_key",
            reps.seed_key,
            "each repeat's seed",
            "is also searched in hydra.sweeper.params; repeats set it, so leave it out of the "
            "search space.",
        )
        log.info(
            "repeats: %d seeds per configuration (%s=0..%d), value = their %s; %d seed jobs, "
            "%d configuration(s) in flight",
            reps.n,
            reps.seed_key,
            reps.n - 1,
            reps.aggregate,
            loop.n_jobs,
            reps.configurations_in_flight(loop.n_jobs),
        )
        return reps

    def _subdir(self) -> str | None:
        """The app's ``hydra.sweep.subdir`` as written (seeds get a folder below it)."""
        config = self.jobs.config
        assert config is not None
        node = config.hydra.sweep._get_node("subdir")
        return str(node._value()) if node is not None else None

    def _check_confirm(
        self, s: OptunaSettings, reps: repeats.Repeats, study: optuna.Study
    ) -> list[int]:
        """Check hydra.sweeper.confirm before any job; return the tuning seeds it must avoid."""
        conf = s.confirm
        if not conf.active:
            return []
        config = self.jobs.config
        assert config is not None
        value = _check_seed_key(
            config,
            s.params,
            "hydra.sweeper.confirm.seed_key",
            conf.seed_key,
            "each test seed",
            "is searched in hydra.sweeper.params; a searched seed cannot be held out for testing.",
        )
        seeds = set(reps.seeds()) if reps.active and reps.seed_key == conf.seed_key else set()
        if isinstance(value, int) and not isinstance(value, bool):
            seeds.add(value)
        for t in study.get_trials(deepcopy=False):  # seeds a trial set itself (earlier runs)
            for o in t.user_attrs.get(records.OVERRIDES) or []:
                k, _, v = str(o).partition("=")
                if k.lstrip("+~") == conf.seed_key and v.lstrip("-").isdigit():
                    seeds.add(int(v))
        try:
            conf.check_disjoint(sorted(seeds))
        except confirm.ConfirmConfigError as e:
            raise config_error(e) from None
        return sorted(seeds)

    def _confirm(
        self,
        s: OptunaSettings,
        study: optuna.Study,
        context: Mapping[str, Any],
        tuning_seeds: list[int],
        in_process: bool,
    ) -> None:
        """Re-run the top configurations on the test seeds (nemo_rl_hpo/sweep/confirm.py)."""
        from optuna.study import StudyDirection

        from nemo_rl_hpo.report.trials import trial_overrides

        conf = s.confirm
        maximize = study.directions[0] == StudyDirection.MAXIMIZE
        chosen, note = confirm.candidates(study.get_trials(deepcopy=False), maximize, conf.top_k)
        if not chosen:
            log.warning("confirmation: no configuration completed the full length; none to test")
            return
        if note:
            log.info("confirmation: %s", note)
        confirm.record_plan(study, conf, chosen, note, tuning_seeds)
        job_ctx = {k: v for k, v in context.items() if k not in ("prune_metric", "pruner")}

        def launch(job: confirm.ConfirmJob, ctx: dict[str, Any]) -> tuple[bool, str | None]:
            ovs = [*job.overrides, f"hydra.sweep.subdir=confirm/{job.number}/seed_{job.seed}"]
            idx = _CONFIRM_JOB_IDX + job.number * 1000 + job.index
            out = self.jobs.launch_job(ovs, {**job_ctx, **ctx}, idx)
            # its cost from Slurm's accounting, as a trial's job (a Slurm job of its own)
            cost.settle_confirmation(study._storage, study._study_id, job.number, job.seed)
            return out.ok, out.error

        done = confirm.run_stage(
            study,
            conf,
            chosen,
            trial_overrides,
            launch,
            1 if in_process else s.n_jobs,
            job_alive,
        )
        for line in done.failed:
            log.warning("confirmation FAIL: %s", line)
        # slurmdbd settles late: its records of the stage's jobs are read once more at its end
        cost.refresh(study, numbers=[t.number for t in chosen], recheck=True)
        result = confirm.read_confirmation(study)
        if result is not None and result.pick is not None:
            log.info(
                "confirmation done (%d run, %d done before): pick trial %d, test mean %s "
                "(tuning value %.6g, rank %d -> %s)",
                done.launched + done.waited,
                done.skipped,
                result.pick.trial.number,
                result.pick.mean_text(),
                result.pick.tuning_value,
                result.pick.rank_before,
                result.pick.rank_after,
            )


def _check_seed_key(
    config: Any, params: Any, setting: str, key: str, takes: str, searched: str
) -> Any:
    """The app's value at a seed key (repeats, confirmation), or one error line naming the
    setting: the key must exist in the app's config and must not be searched."""
    value = OmegaConf.select(config, key, default=_MISSING)
    if value is _MISSING:
        raise SweepConfigError(
            f"{setting}={key}: the app's config has no key {key!r} to take {takes}; name the "
            "key that seeds a run."
        )
    if any(o.split("=")[0].lstrip("+~") == key for o in params):
        raise SweepConfigError(f"{setting}={key} {searched}")
    return value
