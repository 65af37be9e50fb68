"""Hydra side of ``hydra/sweeper=pbt``: member rounds as Optuna trials launched by any launcher.

The algorithm (exploit/explore, ordering, replay) is ``nemo_rl_hpo.pbt``; this adapter turns
its jobs into Hydra jobs (hyperparameters as overrides, checkpoints and the round's end step
through the trial context) and its records into Optuna trials, so results, report, CLI and
dashboard read PBT studies like any other.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from hydra_plugins.nemo_rl_hpo._impl import OptunaSweeperImpl, SweepConfigError
from nemo_rl_hpo import pbt
from nemo_rl_hpo.sweep import records
from nemo_rl_hpo.sweep.core import SYS_OWNER, LaunchOutcome

log = logging.getLogger(__name__)

ATTR_SEED = records.STUDY_PBT_SEED


class PBTSweeperImpl(OptunaSweeperImpl):
    def _pbt_config(self, seed: int | None, direction: str, n_jobs: int) -> pbt.PBTConfig:
        factors = self._get("perturbation_factors", [0.8, 1.2])
        try:
            return pbt.PBTConfig(
                population_size=int(self._get("population_size", 4)),
                perturbation_interval=int(self._get("perturbation_interval", 100)),
                num_rounds=self._get("num_rounds"),
                total_steps=self._get("total_steps"),
                direction=direction,
                quantile_fraction=float(self._get("quantile_fraction", 0.25)),
                resample_probability=float(self._get("resample_probability", 0.25)),
                perturbation_factors=tuple(float(f) for f in factors),
                seed=seed,
                synchronous=self._synchronous(n_jobs),
                max_retries=int(self._get("max_retries", 2)),
            )
        except (ValueError, TypeError) as e:
            raise SweepConfigError(f"hydra.sweeper: {e}") from None

    def _synchronous(self, n_jobs: int) -> bool:
        """Asynchronous PBT needs the population running side by side.

        With fewer slots than members, the first member to end a round would be ranked against
        itself only and never exploit (bench/pbt_vs_optuna.py: async 1.3x worse at n_jobs=1), so
        rounds then wait for the whole population.
        """
        explicit = self._get("synchronous")
        if explicit is not None:
            return bool(explicit)
        return n_jobs < int(self._get("population_size", 4))

    def sweep(self, arguments: list[str]) -> None:
        assert self.config is not None and self.launcher is not None
        started_at = datetime.now()
        settings, directions, objectives, _ = self._settings()
        if len(directions) != 1:
            raise SweepConfigError(
                "hydra.sweeper.direction: PBT ranks members by one objective; give one direction."
            )
        space = self._space(arguments)
        if space.conditions:
            key = next(iter(space.conditions))
            raise SweepConfigError(
                f"hydra.sweeper.params.{key}: PBT perturbs every member's parameters, so "
                "conditional parameters are not supported; fix the group option instead."
            )
        self._check_space(space, exact_ends=True)  # perturbations are clipped to the ends
        params = [pbt.param_from_distribution(k, d) for k, d in space.distributions.items()]
        if not params:
            raise SweepConfigError(
                "hydra.sweeper.params is empty: PBT needs hyperparameters to explore."
            )
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        sampler = optuna.samplers.RandomSampler()  # PBT decides values; the sampler is unused
        study, study_name, bare_url, masked = self._open_study(
            sweep_dir, directions, sampler, optuna.pruners.NopPruner()
        )
        sweep_dir.mkdir(parents=True, exist_ok=True)
        seed = study.user_attrs.get(ATTR_SEED, self._get("seed"))
        n_jobs = 1 if self._basic_launcher() else settings.n_jobs
        config = self._pbt_config(seed, directions[0], n_jobs)
        resume = self._resume_command(sweep_dir, study_name)
        self._set_study_attrs(study, sweep_dir, masked, sampler, objectives, directions, resume)
        study.set_user_attr(records.STUDY_KIND, records.KIND_PBT)

        # Rounds a dead driver left RUNNING are failed and re-issued by the scheduler.
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            records.fail_trial(study, t, "its sweeper stopped while it ran", orphaned=True)
        finished = [
            t
            for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.FAIL)
            and pbt.ATTR_MEMBER in t.user_attrs
            and records.INTERRUPTED not in t.user_attrs
            and records.ORPHANED not in t.user_attrs
        ]
        finished.sort(key=lambda t: (t.datetime_complete or datetime.min, t.number))
        rounds = [
            pbt.RoundRecord.from_user_attrs(
                t.user_attrs, t.value if t.state == TrialState.COMPLETE else None
            )
            for t in finished
        ]
        root = sweep_dir / "checkpoints"
        try:
            if rounds:
                sched = pbt.PBTScheduler.from_records(config, params, rounds, checkpoint_root=root)
            else:
                sched = pbt.PBTScheduler(config, params, checkpoint_root=root)
        except ValueError as e:
            raise SweepConfigError(f"cannot resume PBT study {study_name!r}: {e}") from None
        study.set_user_attr(ATTR_SEED, sched.seed)
        log.info(
            "PBT study %r in %s: population %d, %d rounds of %d steps, %d round(s) done, "
            "%d in parallel, %s rounds",
            study_name,
            masked,
            config.population_size,
            config.rounds,
            config.perturbation_interval,
            len(rounds),
            n_jobs,
            "synchronous" if config.synchronous else "asynchronous",
        )
        log.info("Resume this sweep with: %s", resume)
        context = {
            "study": study_name,
            "storage": bare_url,
            "prune_metric": None,
            "objectives": objectives,
            "weights": None,
        }
        running: dict[Future[LaunchOutcome], tuple[pbt.Job, optuna.Trial]] = {}
        pool = ThreadPoolExecutor(max_workers=n_jobs, thread_name_prefix="pbt")
        try:
            while not sched.finished:
                while len(running) < n_jobs:
                    job = sched.ask()
                    if job is None:
                        break
                    trial = self._ask_trial(study, space, job)
                    overrides = space.overrides(job.params)
                    ctx = {
                        **context,
                        "checkpoint_dir": job.save_checkpoint,
                        "resume_from": job.start_checkpoint,
                        "steps": job.target_step,
                    }
                    fut = pool.submit(self._guarded, trial, overrides, ctx)
                    running[fut] = (job, trial)
                if not running:
                    break
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in done:
                    job, trial = running.pop(fut)
                    outcome = fut.result()
                    frozen = study._storage.get_trial(trial._trial_id)
                    if frozen.state == TrialState.RUNNING:
                        records.fail_trial(study, trial, outcome.error or "no result")
                        frozen = study._storage.get_trial(trial._trial_id)
                    value = frozen.value if frozen.state == TrialState.COMPLETE else None
                    sched.tell(job.member, job.round, value, job.save_checkpoint)
                    log.info(
                        "[PBT] member %d round %d/%d %s value=%s%s",
                        job.member,
                        job.round + 1,
                        config.rounds,
                        frozen.state.name,
                        "-" if value is None else f"{value:.6g}",
                        "" if job.parent is None else f" (exploited member {job.parent})",
                    )
        finally:
            pool.shutdown(wait=True)
            results = sched.results()
            study.set_user_attr(records.STUDY_PBT_RESULTS, _jsonable(results))
            self._write_outputs(study, sweep_dir, started_at)
        log.info(
            "PBT done: best member %s value %s. Results in %s",
            results.get("best_member"),
            results.get("best_value"),
            sweep_dir,
        )

    def _guarded(
        self, trial: optuna.Trial, overrides: list[str], ctx: dict[str, Any]
    ) -> LaunchOutcome:
        try:
            return self._launch_trial(trial, overrides, ctx)
        except Exception as e:
            return LaunchOutcome(ok=False, error=f"{type(e).__name__}: {e}")

    def _ask_trial(self, study: optuna.Study, space: Any, job: pbt.Job) -> optuna.Trial:
        """A RUNNING trial carrying the job's parameters (PBT, not the sampler, chose them)."""
        import os
        import socket

        trial = study.ask()
        storage = study._storage
        dists = space.distributions
        for name, value in job.params.items():
            dist = dists[name]
            storage.set_trial_param(trial._trial_id, name, dist.to_internal_repr(value), dist)
        for k, v in job.user_attrs().items():
            storage.set_trial_user_attr(trial._trial_id, k, v)
        storage.set_trial_user_attr(trial._trial_id, records.OVERRIDES, space.overrides(job.params))
        storage.set_trial_system_attr(
            trial._trial_id,
            SYS_OWNER,
            {"host": socket.gethostname(), "pid": os.getpid(), "token": str(time.time_ns())},
        )
        return trial


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))
