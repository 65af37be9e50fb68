"""Hydra side of the Optuna sweeper: the sweep's orchestration.

Each step has its own module: settings (``settings.py``), the search space from Hydra
(``search_space.py``), sampler and pruner (``samplers.py``), the study (``study.py``), jobs and
the launcher (``jobs.py``), Slurm's view of a job (``slurm.py``). The trial loop, the search
space itself and the storage live in ``nemo_rl_hpo.sweep`` / ``nemo_rl_hpo.search``; the path
from ``python train.py -m`` to a recorded trial is in docs/architecture.md.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.nemo_rl_hpo import _fidelity
from hydra_plugins.nemo_rl_hpo import _study as study_mod
from hydra_plugins.nemo_rl_hpo._jobs import HydraSweep
from hydra_plugins.nemo_rl_hpo._samplers import auto_sampler, make_pruner, make_sampler
from hydra_plugins.nemo_rl_hpo._search_space import build_space, check_space
from hydra_plugins.nemo_rl_hpo._settings import OptunaSettings, SweepConfigError
from nemo_rl_hpo.fidelity import Scheduler
from nemo_rl_hpo.fidelity._proposer import FidelityProposer
from nemo_rl_hpo.fidelity._sampler import RungSampler
from nemo_rl_hpo.search.space import SearchSpace
from nemo_rl_hpo.sweep import records, repeats
from nemo_rl_hpo.sweep import storage as st
from nemo_rl_hpo.sweep.core import (
    AsyncSweep,
    LaunchOutcome,
    SweepAborted,
    SweepSettings,
    SweepSummary,
)
from nemo_rl_hpo.sweep.liveness import job_alive
from nemo_rl_hpo.sweep.proposer import OptunaProposer, Proposal, Proposer, counted_trials

log = logging.getLogger(__name__)

# Configs saved before the split name these here.
__all__ = ["OptunaSweeperImpl", "SweepConfigError", "auto_sampler"]

_MISSING = object()


class OptunaSweeperImpl(HydraSweep):
    def sweep(self, arguments: list[str]) -> None:
        config = self.jobs.config
        assert config is not None
        started_at = datetime.now()
        s = OptunaSettings.from_config(self.cfg)
        loop = s.loop_settings()
        space = build_space(self.jobs, s.params, arguments)
        check_space(self.jobs, space, s.check)
        custom = self._custom_search_space(s)
        in_process = self.jobs.in_process
        loop.early_release = not in_process  # in-process jobs share Hydra's global state
        if in_process and loop.n_jobs > 1:
            self._say_one_at_a_time(config, loop.n_jobs)
            loop.n_jobs = 1
        sampler = make_sampler(
            s.sampler,
            space,
            n_trials=s.n_trials,
            n_jobs=loop.n_jobs,
            n_objectives=len(s.directions),
            custom_space=custom is not None,
        )
        fidelity = _fidelity.plan(s, config, len(space.distributions))
        if fidelity is not None:  # the model learns from one rung (nemo_rl_hpo/fidelity/)
            sampler = RungSampler(sampler, fidelity.min_observations or 1)
        pruner = make_pruner(s.pruner)
        opened = study_mod.start_study(
            s, config, sampler, pruner, on_slurm=self.jobs.on_slurm, kind=records.KIND_OPTUNA
        )
        study, resume = opened.study, opened.resume
        reps = self._repeats(s, loop)
        if reps.active:
            study.set_user_attr(records.STUDY_REPEATS, reps.as_dict())
        log.info(
            "Study %r in %s: %d/%d trials so far; sampler %s, pruner %s, %d in parallel",
            opened.name,
            opened.masked,
            counted_trials(study.get_trials(deepcopy=False)),
            s.n_trials,
            type(sampler).__name__,
            type(pruner).__name__,
            loop.n_jobs,
        )
        log.info("Resume this sweep with: %s", resume)
        self._warm_start(s, study, space)
        context = {
            "study": opened.name,
            "storage": opened.bare_url,
            "prune_metric": s.objectives[0] if s.objectives else None,
            "objectives": s.objectives,
            "weights": s.weights,
            "pruner": s.pruner_config,
            "storage_retry_s": s.storage_retry_s,
        }

        def launch(proposal: Proposal) -> LaunchOutcome:
            ctx = {**context, **proposal.context}
            if reps.active:  # n seed jobs, one trial (nemo_rl_hpo/sweep/repeats.py)
                return self._launch_seeds(reps, study, proposal, ctx, parallel=not in_process)
            return self.jobs.launch(proposal.trial, proposal.overrides, ctx)

        extend = (lambda t: custom(config, t)) if custom is not None else None
        optuna_proposer = OptunaProposer(study, space, s.n_trials, s.retry_failed, extend)
        proposer: Proposer = optuna_proposer
        if fidelity is not None:
            proposer = self._fidelity_proposer(fidelity, optuna_proposer, study, opened.sweep_dir)
        core = AsyncSweep(
            study,
            proposer,
            launch,
            loop,
            on_trial_end=study_mod.Progress(loop, study),
            is_job_alive=lambda t: job_alive(t.user_attrs),
        )
        reattached = core.recover()
        error: SweepAborted | None = None
        lost: st.StorageUnavailable | None = None
        full: str | None = None
        summary = SweepSummary(started=time.time())
        try:
            summary = core.run(reattached)
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
                study_mod.write_outputs(study, opened.sweep_dir, started_at, s.raw, s.write_report)
        if lost is not None:
            raise SweepConfigError(f"{lost}; once it is back, resume with: {resume}")
        if full is not None:
            raise SweepConfigError(
                f"{full}; the study is intact: free space, then resume with: {resume}"
            )
        log.info(
            "Sweep done: %s. Results in %s",
            records.counts_line(summary.counts) or "no trials",
            opened.sweep_dir,
        )
        if error is not None:
            raise SweepConfigError(str(error))

    # -------------------------------------------------------------------- helpers
    @staticmethod
    def _fidelity_proposer(
        plan: _fidelity.FidelityPlan, base: OptunaProposer, study: optuna.Study, sweep_dir: Any
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
            base, Scheduler(f), Path(sweep_dir) / "checkpoints", plan.keep_checkpoints
        )

    @staticmethod
    def _say_one_at_a_time(config: DictConfig, n_jobs: int) -> None:
        # Said only to a user who asked for n_jobs: the default is for parallel launchers.
        asked = any(
            str(o).lstrip("+").startswith("hydra.sweeper.n_jobs=")
            for o in config.hydra.overrides.hydra
        )
        log.log(
            logging.INFO if asked else logging.DEBUG,
            "the basic launcher runs trials one at a time (n_jobs=%d ignored); "
            "hydra/launcher=local or pool runs them in parallel",
            n_jobs,
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
        if not ws or not ws.get("study_name"):
            return
        from nemo_rl_hpo.sweep.warm_start import warm_start

        try:
            warm_start(
                study,
                space,
                storage=ws.get("storage"),
                study_name=str(ws["study_name"]),
                top_k=int(ws.get("top_k", 5)),
                mode=str(ws.get("mode", "enqueue")),
            )
        except ValueError as e:
            raise SweepConfigError(str(e)) from None

    def _repeats(self, s: OptunaSettings, loop: SweepSettings) -> repeats.Repeats:
        """hydra.sweeper.repeats/seed_key/aggregate, checked; fewer configurations in flight so
        that about n_jobs seed jobs run at once."""
        config = self.jobs.config
        assert config is not None
        try:
            reps = repeats.Repeats.from_config(s.repeats, s.seed_key, s.aggregate)
        except repeats.RepeatConfigError as e:
            raise SweepConfigError(str(e)) from None
        if not reps.active:
            return reps
        if OmegaConf.select(config, reps.seed_key, default=_MISSING) is _MISSING:
            raise SweepConfigError(
                f"hydra.sweeper.seed_key={reps.seed_key}: the app's config has no key "
                f"{reps.seed_key!r} to take each repeat's seed; name the key that seeds a run."
            )
        if any(o.split("=")[0].lstrip("+~") == reps.seed_key for o in s.params):
            raise SweepConfigError(
                f"hydra.sweeper.seed_key={reps.seed_key} is also searched in hydra.sweeper.params;"
                " repeats set it, so leave it out of the search space."
            )
        loop.n_jobs = reps.configurations_in_flight(loop.n_jobs)
        log.info(
            "repeats: %d seeds per configuration (%s=0..%d), value = their %s; %d "
            "configuration(s) in flight",
            reps.n,
            reps.seed_key,
            reps.n - 1,
            reps.aggregate,
            loop.n_jobs,
        )
        return reps

    def _launch_seeds(
        self,
        reps: repeats.Repeats,
        study: optuna.Study,
        proposal: Proposal,
        context: Mapping[str, Any],
        parallel: bool,
    ) -> LaunchOutcome:
        config = self.jobs.config
        assert config is not None
        node = config.hydra.sweep._get_node("subdir")
        subdir = str(node._value()) if node is not None else None

        def one(ovs: list[str], ctx: dict[str, Any], index: int) -> tuple[bool, str | None]:
            ctx = {**context, **ctx}
            if context.get("checkpoint_dir"):  # seeds never share checkpoints
                ctx["checkpoint_dir"] = f"{context['checkpoint_dir']}/seed_{index}"
            out = self.jobs.launch(proposal.trial, ovs, ctx)
            return out.ok, out.error

        ok, error = repeats.launch_seeds(
            reps, study, proposal.trial, proposal.overrides, one, subdir, parallel
        )
        return LaunchOutcome(ok=ok, error=error)
