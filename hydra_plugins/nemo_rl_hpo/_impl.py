"""Hydra side of the Optuna sweeper: config -> search space, study, launcher, results.

Hydra knowledge (composing group options, launching, overrides) stays here; the trial loop,
search space and storage live in ``nemo_rl_hpo.sweep`` / ``nemo_rl_hpo.search``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shlex
import sys
import time
import warnings
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import optuna
from hydra.core.config_loader import ConfigLoader
from hydra.core.plugins import Plugins
from hydra.errors import CompactHydraException
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from hydra_plugins.nemo_rl_hpo._task import TrialTask
from hydra_plugins.nemo_rl_hpo.compose_cache import CachedSweepConfigLoader
from hydra_plugins.nemo_rl_hpo.slurm import JobDied, job_alive
from nemo_rl_hpo import trial as trial_api
from nemo_rl_hpo.report import _io
from nemo_rl_hpo.search.grammar import (
    ParsedParam,
    SearchSpaceError,
    format_value,
    hydra_quote,
    parse_params,
)
from nemo_rl_hpo.search.space import Probe, SearchSpace
from nemo_rl_hpo.sweep import records, repeats
from nemo_rl_hpo.sweep import storage as st
from nemo_rl_hpo.sweep.core import (
    AsyncSweep,
    LaunchOutcome,
    SweepAborted,
    SweepSettings,
    SweepSummary,
)
from nemo_rl_hpo.sweep.objectives import ObjectiveError, parse_objectives
from nemo_rl_hpo.sweep.proposer import OptunaProposer, Proposal, counted_trials

log = logging.getLogger(__name__)

_MISSING = object()


class SweepConfigError(CompactHydraException):
    """Bad sweeper input: Hydra prints just this one line, before any job starts."""


class OptunaSweeperImpl:
    def __init__(self, **cfg: Any) -> None:
        self.cfg = cfg
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Launcher | None = None

    # ------------------------------------------------------------------------ setup
    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        # Same context, but jobs are composed through a cache keyed by group choices.
        loader = CachedSweepConfigLoader(hydra_context.config_loader)
        hydra_context = HydraContext(
            config_loader=cast("ConfigLoader", loader),
            callbacks=hydra_context.callbacks,
        )
        self.hydra_context = hydra_context
        _hide_trial_context_in_launcher_logs()
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=TrialTask(task_function)
        )
        _warn_if_upstream_installed()

    # ------------------------------------------------------------------- validation
    def _get(self, key: str, default: Any = None) -> Any:
        value = self.cfg.get(key, default)
        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
        return value

    def _settings(self) -> tuple[SweepSettings, list[str], list[str], list[float] | None]:
        n_trials = self._get("n_trials", 20)
        n_jobs = self._get("n_jobs", 2)
        timeout = self._get("timeout")
        rate = self._get("max_failure_rate", 0.0)
        retry = self._get("retry_failed", 0)
        hb = self._get("heartbeat_interval", 10.0)
        if not isinstance(n_trials, int) or n_trials < 1:
            raise SweepConfigError(
                f"hydra.sweeper.n_trials must be at least 1, but got {n_trials!r}."
            )
        if not isinstance(n_jobs, int) or n_jobs < 1:
            raise SweepConfigError(
                f"hydra.sweeper.n_jobs must be at least 1 (trials in flight), but got {n_jobs!r}."
            )
        if timeout is not None and (not _is_num(timeout) or timeout <= 0):
            raise SweepConfigError(
                f"hydra.sweeper.timeout must be a positive number of seconds or null, "
                f"but got {timeout!r}."
            )
        if not _is_num(rate) or not 0.0 <= rate <= 1.0:
            raise SweepConfigError(
                f"hydra.sweeper.max_failure_rate must be in [0, 1], but got {rate!r}."
            )
        if not isinstance(retry, int) or retry < 0:
            raise SweepConfigError(
                f"hydra.sweeper.retry_failed must be 0 or more, but got {retry!r}."
            )
        if not _is_num(hb) or hb <= 0:
            raise SweepConfigError(
                f"hydra.sweeper.heartbeat_interval must be positive seconds, but got {hb!r}."
            )
        directions = self._directions()
        try:
            names, weights = parse_objectives(self._get("objectives"))
        except ObjectiveError as e:
            raise SweepConfigError(str(e)) from None
        expected = 1 if weights is not None else len(directions)
        if weights is not None and len(directions) != 1:
            raise SweepConfigError(
                "hydra.sweeper.objectives with weights make one weighted objective, but "
                f"hydra.sweeper.direction has {len(directions)} entries; give one direction."
            )
        if names and weights is None and len(names) < expected:
            raise SweepConfigError(
                f"hydra.sweeper.objectives names {len(names)} metric(s) {names} but "
                f"hydra.sweeper.direction has {len(directions)}; give one objective per direction."
            )
        if names and weights is None and len(names) > expected:
            # Metrics are listed in priority order: a single-objective sweep of an app whose
            # config lists [val_loss, train_time_s] optimizes val_loss.
            log.info("optimizing the first %d of objectives %s", expected, names)
            names = names[:expected]
        settings = SweepSettings(
            n_trials=n_trials,
            n_jobs=n_jobs,
            timeout=float(timeout) if timeout is not None else None,
            max_failure_rate=float(rate),
            retry_failed=retry,
            heartbeat_interval=float(hb),
            stale_after=max(6 * float(hb), 30.0),
        )
        return settings, directions, names, weights

    def _directions(self) -> list[str]:
        raw = self._get("direction", "minimize")
        items = raw if isinstance(raw, list) else [raw]
        out: list[str] = []
        for d in items:
            name = str(getattr(d, "name", d)).lower()
            if name not in ("minimize", "maximize"):
                raise SweepConfigError(
                    f"hydra.sweeper.direction: {d!r} is not a direction; use minimize or maximize "
                    "(or a list of them for several objectives)."
                )
            out.append(name)
        if not out:
            raise SweepConfigError("hydra.sweeper.direction must name at least one direction.")
        return out

    # ---------------------------------------------------------------- search space
    def _space(self, arguments: list[str]) -> SearchSpace:
        assert self.config is not None
        if self._get("search_space") is not None:
            raise SweepConfigError(
                "hydra.sweeper.search_space was removed in hydra-optuna-sweeper 1.2; "
                "write the space in hydra.sweeper.params with choice()/interval()/range()."
            )
        params = self._get("params") or {}
        if not isinstance(params, Mapping):
            raise SweepConfigError(
                "hydra.sweeper.params must be a mapping of key: grammar, "
                f"got {type(params).__name__}."
            )
        try:
            parsed = parse_params(params, arguments)
        except SearchSpaceError as e:
            raise SweepConfigError(str(e)) from None
        groups = self._group_keys(parsed)
        choices = {
            str(k): (None if v is None else str(v))
            for k, v in OmegaConf.to_container(self.config.hydra.runtime.choices).items()  # type: ignore[union-attr]
        }
        task_cfg = self.config

        def has_key(key: str) -> bool:
            return OmegaConf.select(task_cfg, key, default=_MISSING) is not _MISSING

        known = _flat_keys(
            OmegaConf.masked_copy(task_cfg, [str(k) for k in task_cfg if k != "hydra"])
        )
        try:
            return SearchSpace(parsed, groups, choices, has_key, known)
        except SearchSpaceError as e:
            raise SweepConfigError(str(e)) from None

    def _group_keys(self, parsed: list[ParsedParam]) -> dict[str, dict[str, frozenset[str]]]:
        """For every config group a searched key lives in: option -> keys it defines."""
        assert self.hydra_context is not None and self.config is not None
        loader = self.hydra_context.config_loader
        choices = self.config.hydra.runtime.choices
        candidates: set[str] = set()
        for p in parsed:
            if p.distribution is None:
                continue
            parts = p.bare_key.split(".")
            for i in range(1, len(parts) + 1):
                candidates.add("/".join(parts[:i]))
        out: dict[str, dict[str, frozenset[str]]] = {}
        for group in sorted(candidates):
            if group.startswith("hydra"):
                continue
            try:
                options = loader.get_group_options(group)
            except Exception:
                options = []
            if not options:
                continue
            prefix = "" if group in choices else "+"
            keys: dict[str, frozenset[str]] = {}
            for option in options:
                try:
                    cfg = self._task_config([f"{prefix}{group}={option}"])
                    node = OmegaConf.select(cfg, group.replace("/", "."))
                except Exception as e:  # an option that does not compose alone has no keys
                    log.debug("option %s/%s does not compose: %s", group, option, e)
                    node = None
                keys[option] = frozenset(_flat_keys(node)) if node is not None else frozenset()
            out[group] = keys
        return out

    # -------------------------------------------------------------------- storage
    def _storage_url(self, sweep_dir: Path) -> str:
        raw = self._get("storage")
        if raw is None:
            if self._is_slurm():
                return f"{st.JOURNAL_SCHEME}{sweep_dir / 'optuna.journal'}"
            return f"sqlite:///{sweep_dir / 'optuna.db'}"
        if not isinstance(raw, str):
            raise SweepConfigError(
                f"hydra.sweeper.storage must be a URL string or null, got {type(raw).__name__}."
            )
        return raw

    def _is_slurm(self) -> bool:
        assert self.config is not None
        target = str(OmegaConf.select(self.config, "hydra.launcher._target_", default=""))
        return "Slurm" in target

    def _sampler(self, space: SearchSpace, directions: list[str]) -> optuna.samplers.BaseSampler:
        cfg = self.cfg.get("sampler")
        if cfg is None:
            return optuna.samplers.TPESampler(constant_liar=True)
        target = str(cfg.get("_target_", ""))
        kwargs: dict[str, Any] = {}
        if target.endswith("GridSampler") and cfg.get("search_space") is None:
            kwargs["search_space"] = _grid_space(space)
        if target.endswith("auto_sampler"):
            kwargs.update(
                conditional=bool(space.conditions) or bool(self._get("custom_search_space")),
                n_trials=int(self._get("n_trials", 20)),
                n_jobs=int(self._get("n_jobs", 1)) if not self._basic_launcher() else 1,
                n_objectives=len(directions),
            )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                sampler = instantiate(cfg, **kwargs)
        except CompactHydraException:
            raise
        except Exception as e:
            msg = str(e).strip().splitlines()
            raise SweepConfigError(
                f"hydra.sweeper.sampler ({target}) cannot be created: {msg[-1] if msg else e}"
            ) from None
        assert isinstance(sampler, optuna.samplers.BaseSampler)
        return sampler

    def _storage_retry_s(self) -> float:
        value = self._get("storage_retry_s", st.DEFAULT_RETRY_S)
        if not _is_num(value) or value < 0:
            raise SweepConfigError(
                f"hydra.sweeper.storage_retry_s must be 0 or more seconds, but got {value!r}."
            )
        return float(value)

    def _basic_launcher(self) -> bool:
        return type(self.launcher).__name__ == "BasicLauncher"

    def _pruner(self) -> optuna.pruners.BasePruner:
        cfg = self.cfg.get("pruner")
        if cfg is None:
            return optuna.pruners.NopPruner()
        try:
            pruner = instantiate(cfg)
        except Exception as e:
            msg = str(e).strip().splitlines()
            raise SweepConfigError(
                f"hydra.sweeper.pruner ({cfg.get('_target_')}) cannot be created: "
                f"{msg[-1] if msg else e}"
            ) from None
        assert isinstance(pruner, optuna.pruners.BasePruner)
        return pruner

    # ---------------------------------------------------------------------- sweep
    def sweep(self, arguments: list[str]) -> None:
        assert self.config is not None and self.launcher is not None
        started_at = datetime.now()
        settings, directions, objectives, weights = self._settings()
        space = self._space(arguments)
        self._check_space(space)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        sampler = self._sampler(space, directions)
        pruner = self._pruner()
        custom = self._custom_search_space()
        study, study_name, bare_url, masked = self._open_study(
            sweep_dir, directions, sampler, pruner
        )
        sweep_dir.mkdir(parents=True, exist_ok=True)
        resume = self._resume_command(sweep_dir, study_name)
        self._set_study_attrs(study, sweep_dir, masked, sampler, objectives, directions, resume)
        _io.write_text(
            sweep_dir / "sweep.json",
            json.dumps({"study_name": study_name, "storage": st.mask(bare_url)}, indent=2),
        )
        basic = self._basic_launcher()
        settings.early_release = not basic  # in-process jobs share Hydra's global state
        if basic and settings.n_jobs > 1:
            # Said only to a user who asked for n_jobs: the default (2) is for parallel launchers.
            asked = any(
                str(o).lstrip("+").startswith("hydra.sweeper.n_jobs=")
                for o in self.config.hydra.overrides.hydra
            )
            log.log(
                logging.INFO if asked else logging.DEBUG,
                "the basic launcher runs trials one at a time (n_jobs=%d ignored); "
                "hydra/launcher=local or pool runs them in parallel",
                settings.n_jobs,
            )
            settings.n_jobs = 1
        done_before = counted_trials(study.get_trials(deepcopy=False))
        log.info(
            "Study %r in %s: %d/%d trials so far; sampler %s, pruner %s, %d in parallel",
            study_name,
            masked,
            done_before,
            settings.n_trials,
            type(sampler).__name__,
            type(pruner).__name__,
            settings.n_jobs,
        )
        log.info("Resume this sweep with: %s", resume)
        self._warm_start(study, space)

        context = {
            "study": study_name,
            "storage": bare_url,
            "prune_metric": objectives[0] if objectives else None,
            "objectives": objectives,
            "weights": weights,
            "pruner": self._get("pruner"),
            "storage_retry_s": self._storage_retry_s(),
        }

        reps = self._repeats(settings)
        if reps.active:
            study.set_user_attr(records.STUDY_REPEATS, reps.as_dict())

        def launch(proposal: Proposal) -> LaunchOutcome:
            if reps.active:  # n seed jobs, one trial (nemo_rl_hpo/sweep/repeats.py)
                return self._launch_seeds(reps, study, proposal, context, parallel=not basic)
            return self._launch_trial(proposal.trial, proposal.overrides, context)

        extend = (lambda t: custom(self.config, t)) if custom is not None else None
        proposer = OptunaProposer(study, space, settings.n_trials, settings.retry_failed, extend)
        progress = _Progress(settings, study)
        core = AsyncSweep(
            study,
            proposer,
            launch,
            settings,
            on_trial_end=progress,
            is_job_alive=lambda t: job_alive(t.user_attrs),
        )
        reattached = core.recover()
        error: SweepAborted | None = None
        lost: st.StorageUnavailable | None = None
        try:
            summary = core.run(reattached)
        except SweepAborted as e:
            error = e
            summary = SweepSummary(started=time.time())
            summary.counts = records.count_states(study.get_trials(deepcopy=False))
        except st.StorageUnavailable as e:  # one line; no outputs from a study out of reach
            lost = e
        finally:
            if lost is None:
                self._write_outputs(study, sweep_dir, started_at)
        if lost is not None:
            raise SweepConfigError(f"{lost}; once it is back, resume with: {resume}")
        counts = summary.counts or {}
        log.info(
            "Sweep done: %s. Results in %s",
            records.counts_line(counts) or "no trials",
            sweep_dir,
        )
        if error is not None:
            raise SweepConfigError(str(error))

    # -------------------------------------------------------------------- helpers
    def _open_study(
        self,
        sweep_dir: Path,
        directions: list[str],
        sampler: optuna.samplers.BaseSampler,
        pruner: optuna.pruners.BasePruner,
    ) -> tuple[optuna.Study, str, str, str]:
        """Create or load the study; returns (study, name, URL without password, masked URL)."""
        assert self.config is not None
        url = self._storage_url(sweep_dir)
        bare_url = st.export_password(url)
        masked = st.mask(url) or ""
        self._warm_cfg = self._get("warm_start")  # read before secrets are masked in the config
        self._scrub_secrets()
        try:
            storage = st.open_storage(url, retry_s=self._storage_retry_s())
        except st.StorageError as e:
            raise SweepConfigError(str(e)) from None
        st.register_live(bare_url, storage)
        study_name = str(self._get("study_name") or self.config.hydra.job.name)
        try:
            study = optuna.create_study(
                storage=storage,
                study_name=study_name,
                sampler=sampler,
                pruner=pruner,
                directions=directions,  # type: ignore[arg-type]
                load_if_exists=True,
            )
        except Exception as e:
            raise SweepConfigError(
                f"hydra.sweeper.storage={masked!r}: cannot create study {study_name!r} "
                f"({st.mask(str(e))})."
            ) from None
        existing = [d.name.lower() for d in study.directions]
        if existing != directions:
            raise SweepConfigError(
                f"study {study_name!r} in {masked} optimizes {existing}, but "
                f"hydra.sweeper.direction is {directions}; set hydra.sweeper.study_name to a new "
                "name or restore the direction."
            )
        return study, study_name, bare_url, masked

    def _scrub_secrets(self) -> None:
        """Mask storage passwords in the config that launchers save and pickle for every job.

        Jobs reach the study through the trial context (URL without password) and inherit the
        password through the process environment, so nothing a job writes needs it.
        """
        from omegaconf import read_write

        assert self.config is not None
        with read_write(self.config.hydra):
            overrides = self.config.hydra.overrides.hydra
            for i, value in enumerate(list(overrides)):
                overrides[i] = st.mask(str(value))
            sweeper = self.config.hydra.sweeper
            for key in ("storage",):
                if isinstance(sweeper.get(key), str):
                    sweeper[key] = st.mask(sweeper[key])
            ws = sweeper.get("warm_start")
            if ws is not None and isinstance(ws.get("storage"), str):
                ws["storage"] = st.mask(ws["storage"])

    def _repeats(self, settings: SweepSettings) -> repeats.Repeats:
        """hydra.sweeper.repeats/seed_key/aggregate, checked; fewer configurations in flight so
        that about n_jobs seed jobs run at once."""
        assert self.config is not None
        try:
            reps = repeats.Repeats.from_config(
                self._get("repeats", 1),
                self._get("seed_key", "seed"),
                self._get("aggregate", "mean"),
            )
        except repeats.RepeatConfigError as e:
            raise SweepConfigError(str(e)) from None
        if not reps.active:
            return reps
        if OmegaConf.select(self.config, reps.seed_key, default=_MISSING) is _MISSING:
            raise SweepConfigError(
                f"hydra.sweeper.seed_key={reps.seed_key}: the app's config has no key "
                f"{reps.seed_key!r} to take each repeat's seed; name the key that seeds a run."
            )
        if any(o.split("=")[0].lstrip("+~") == reps.seed_key for o in self._get("params") or {}):
            raise SweepConfigError(
                f"hydra.sweeper.seed_key={reps.seed_key} is also searched in hydra.sweeper.params;"
                " repeats set it, so leave it out of the search space."
            )
        settings.n_jobs = reps.configurations_in_flight(settings.n_jobs)
        log.info(
            "repeats: %d seeds per configuration (%s=0..%d), value = their %s; %d "
            "configuration(s) in flight",
            reps.n,
            reps.seed_key,
            reps.n - 1,
            reps.aggregate,
            settings.n_jobs,
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
        assert self.config is not None
        node = self.config.hydra.sweep._get_node("subdir")
        subdir = str(node._value()) if node is not None else None

        def one(ovs: list[str], ctx: dict[str, Any], index: int) -> tuple[bool, str | None]:
            out = self._launch_trial(proposal.trial, ovs, {**context, **ctx})
            return out.ok, out.error

        ok, error = repeats.launch_seeds(
            reps, study, proposal.trial, proposal.overrides, one, subdir, parallel
        )
        return LaunchOutcome(ok=ok, error=error)

    def _launch_trial(
        self, trial: optuna.Trial, overrides: list[str], context: Mapping[str, Any]
    ) -> LaunchOutcome:
        """Launch one job for ``trial``; the job learns its trial from ``hydra.job.env_set``."""
        assert self.launcher is not None
        ctx = json.dumps({**context, "number": trial.number}, separators=(",", ":"))
        env_ov = f"++hydra.job.env_set.{trial_api.ENV_TRIAL}={hydra_quote(ctx)}"
        try:
            (ret,) = self.launcher.launch([[*overrides, env_ov]], initial_job_idx=trial.number)
        except JobDied as e:  # the job died without a result: the launcher says why
            return LaunchOutcome(ok=False, error=e.reason)
        except Exception as e:  # the launcher itself failed (submission, pool worker)
            lines = str(e).strip().splitlines()
            return LaunchOutcome(ok=False, error=f"{type(e).__name__}: {lines[0] if lines else ''}")
        if ret.status.name == "FAILED":
            err = ret._return_value
            return LaunchOutcome(ok=False, error=f"{type(err).__name__}: {err}")
        return LaunchOutcome(ok=True)

    def _check_space(self, space: SearchSpace, exact_ends: bool = False) -> None:
        """Fail before any job when some trial of the space would fail the app's own check.

        ``hydra.sweeper.check`` names the app's validation, fn(cfg) raising on a value a trial
        cannot run with. It runs on the composed config of a reference trial and of each end of
        every range and each choice (:meth:`SearchSpace.probes`), so ``warmup_ratio:
        interval(0, 2)`` is one error line naming the key, not a first trial that fails after
        the sweep started. Compositions go through the sweep's cache and warm it for the jobs.
        ``exact_ends``: the sweeper can propose a float range's exact end (PBT clips perturbed
        values to it), so an end the check rejects is an error even when just inside passes.
        """
        path = self._get("check")
        if not path:
            return
        try:
            check = get_method(str(path))
        except Exception:
            raise SweepConfigError(
                f"hydra.sweeper.check={path!r} cannot be imported; give the dotted path of a "
                "function fn(cfg) that raises on a config a trial cannot run with, or null."
            ) from None
        probes = space.probes()
        errors = [self._probe_error(check, space, p, exact_ends) for p in probes]
        if not any(errors):
            return
        # Blame a key whose own values split passing from failing trials: its probes differ in
        # that key only (same pinned group option), so the failure is its value's. Plain keys
        # first: a group's options also switch its conditional keys on and off.
        by_key: dict[str, list[int]] = {}
        for i, p in enumerate(probes):
            if p.key is not None:
                by_key.setdefault(p.key, []).append(i)
        order = sorted(by_key, key=lambda k: k.lstrip("+") in space.groups)
        for key in order:
            failing = [i for i in by_key[key] if errors[i]]
            if failing and len(failing) < len(by_key[key]):
                probe = probes[failing[0]]
                cond = space.conditions.get(key)
                owner = probe.values.get(cond.group) if cond is not None else None
                where = f" (with {cond.group}={owner})" if cond is not None and owner else ""
                raise SweepConfigError(
                    f"hydra.sweeper.params.{key}: the range reaches "
                    f"{key}={format_value(probe.value)}{where}, where a trial would fail "
                    f"{path}: {errors[failing[0]]} Narrow the range."
                )
        if all(errors):
            raise SweepConfigError(
                f"every trial of this sweep would fail hydra.sweeper.check={path}: {errors[0]}"
            )
        i = next(i for i, e in enumerate(errors) if e)
        trial = " ".join(space.overrides(probes[i].values))
        raise SweepConfigError(
            f"hydra.sweeper.check={path}: the trial {trial} of this sweep would fail: {errors[i]}"
        )

    def _probe_error(
        self, check: Any, space: SearchSpace, probe: Probe, exact_ends: bool
    ) -> str | None:
        """The check's message for a probe trial, None when it passes.

        Only the exact end of a float range failing (a point 1e-6 of the range inside passes) is
        a pass: a sampler draws that end with probability 0.
        """
        error = self._check_one(check, space, probe.values)
        if error is not None and probe.inward is not None and not exact_ends:
            if self._check_one(check, space, probe.inward) is None:
                return None
        return error

    def _task_config(self, overrides: list[str]) -> DictConfig:
        """A job's config without its ``hydra`` node, through the sweep's compose cache."""
        assert self.hydra_context is not None and self.config is not None
        loader = self.hydra_context.config_loader
        if isinstance(loader, CachedSweepConfigLoader):
            return cast(
                DictConfig, loader.load_sweep_config(self.config, overrides, task_only=True)
            )
        cfg = loader.load_sweep_config(self.config, overrides)
        return OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "hydra"])

    def _check_one(self, check: Any, space: SearchSpace, values: Mapping[str, Any]) -> str | None:
        assert self.hydra_context is not None and self.config is not None
        try:
            check(self._task_config(space.overrides(values)))
        except Exception as e:
            lines = str(e).strip().splitlines()
            return (lines[0] if lines else type(e).__name__).rstrip()
        return None

    def _custom_search_space(self) -> Any:
        path = self._get("custom_search_space")
        if not path:
            return None
        try:
            return get_method(path)
        except Exception:
            raise SweepConfigError(
                f"hydra.sweeper.custom_search_space={path!r} cannot be imported; give the dotted "
                "path of a function fn(cfg, trial) on the Python path."
            ) from None

    def _resume_command(self, sweep_dir: Path, study_name: str) -> str:
        args = [
            a for a in sys.argv[1:] if not a.startswith(("hydra.sweep.dir=", "-m", "--multirun"))
        ]
        args = [a for a in args if not a.startswith("hydra.sweeper.study_name=")]
        argv0 = sys.argv[0]
        try:
            argv0 = os.path.relpath(argv0)
        except ValueError:
            pass
        cmd = ["python", argv0, "-m", *args, f"hydra.sweep.dir={sweep_dir}"]
        cmd.append(f"hydra.sweeper.study_name={study_name}")
        return " ".join(shlex.quote(st.mask(a) or a) for a in cmd)

    def _set_study_attrs(
        self,
        study: optuna.Study,
        sweep_dir: Path,
        masked: str | None,
        sampler: optuna.samplers.BaseSampler,
        objectives: list[str],
        directions: list[str],
        resume: str,
    ) -> None:
        assert self.config is not None
        argv0 = sys.argv[0]
        try:
            argv0 = os.path.relpath(argv0)
        except ValueError:
            pass
        task_overrides = [str(o) for o in self.config.hydra.overrides.task]
        attrs = {
            records.STUDY_COMMAND: ["python", argv0],
            records.STUDY_CWD: os.getcwd(),
            records.STUDY_BASE_OVERRIDES: [
                st.mask(o) or o for o in task_overrides if not _is_sweep(o)
            ],
            records.STUDY_OBJECTIVES: objectives or (["value"] if len(directions) == 1 else []),
            records.STUDY_SWEEP_DIR: str(sweep_dir),
            records.STUDY_SAMPLER: type(sampler).__name__,
            records.STUDY_KIND: records.KIND_OPTUNA,
            records.STUDY_STORAGE: masked,
            records.STUDY_RESUME_COMMAND: resume,
        }
        for k, v in attrs.items():
            study.set_user_attr(k, v)

    def _warm_start(self, study: optuna.Study, space: SearchSpace) -> None:
        ws = getattr(self, "_warm_cfg", None)
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

    def _write_outputs(self, study: optuna.Study, sweep_dir: Path, started_at: datetime) -> None:
        sweep_cfg = {k: self._get(k) for k in self.cfg if k not in ("_target_",)}
        if sweep_cfg.get("storage"):
            sweep_cfg["storage"] = st.mask(str(sweep_cfg["storage"]))
        try:
            from nemo_rl_hpo.report.results import write_results

            write_results(
                study,
                sweep_dir,
                sweep_config=sweep_cfg,
                started_at=started_at,
                finished_at=datetime.now(),
            )
        except ImportError:
            log.warning("results writer not available")
        except Exception as e:
            log.warning("could not write results: %s", e)
        if not self._get("write_report", True):
            return
        try:
            from nemo_rl_hpo.report import build_report

            build_report(study, sweep_dir / "report")
        except ImportError:
            log.warning("report builder not available")
        except Exception as e:
            log.warning("could not write the report: %s", e)


def auto_sampler(
    *,
    seed: int | None = None,
    gp_max_trials: int = 200,
    conditional: bool = False,
    n_trials: int = 20,
    n_jobs: int = 1,
    n_objectives: int = 1,
) -> optuna.samplers.BaseSampler:
    """GP where bench/search_quality.py shows it ahead, TPE everywhere else.

    GP led every fixed (non-conditional) space by 50 trials but models only parameters present
    in every trial, costs seconds per trial past a few hundred trials and has no constant liar
    for parallel trials; TPE (multivariate, constant liar) is the robust default otherwise.
    """
    use_gp = not conditional and n_trials <= gp_max_trials and n_jobs == 1 and n_objectives == 1
    if use_gp:
        sampler: optuna.samplers.BaseSampler = optuna.samplers.GPSampler(
            seed=seed, warn_independent_sampling=False
        )
        why = f"no conditional parameters, {n_trials} trials, one at a time"
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
        reasons = []
        if conditional:
            reasons.append("conditional parameters")
        if n_trials > gp_max_trials:
            reasons.append(f"{n_trials} trials")
        if n_jobs > 1:
            reasons.append(f"{n_jobs} trials in parallel")
        if n_objectives > 1:
            reasons.append(f"{n_objectives} objectives")
        why = ", ".join(reasons)
    log.info("sampler auto: %s (%s)", type(sampler).__name__, why)
    return sampler


class _Progress:
    """One line per finished trial: n/total, state, value, best, running, elapsed, ETA."""

    def __init__(self, settings: SweepSettings, study: optuna.Study) -> None:
        self.settings = settings
        self.study = study
        self.t0 = time.time()
        self.done = 0

    def __call__(self, t: FrozenTrial, summary: SweepSummary, trials: list[FrozenTrial]) -> None:
        self.done += 1
        finished = sum(1 for x in trials if x.state.is_finished() and x.state != TrialState.WAITING)
        running = sum(1 for x in trials if x.state == TrialState.RUNNING)
        elapsed = time.time() - self.t0
        left = max(0, self.settings.n_trials - counted_trials(trials))
        per = elapsed / self.done
        eta = per * (left + running) / max(1, self.settings.n_jobs)
        value = "-" if t.values is None else ",".join(f"{v:.6g}" for v in t.values)
        best = "-"
        done = [x for x in trials if x.state == TrialState.COMPLETE and x.values is not None]
        if done and len(self.study.directions) == 1:
            sign = 1.0 if self.study.direction.name == "MINIMIZE" else -1.0
            b = min(done, key=lambda x: sign * float(x.values[0]))
            best = f"{b.values[0]:.6g} (#{b.number})"
        elif done:
            best = "see the Pareto front"
        reason = ""
        if t.state == TrialState.FAIL:
            reason = f" reason={records.fail_reason(t)}"
        if t.state == TrialState.PRUNED:
            reason = f" at step {t.user_attrs.get(records.PRUNED_AT_STEP, t.last_step)}"
        log.info(
            "[%d/%d] trial %d %s value=%s best=%s running=%d elapsed=%s eta=%s%s",
            finished,
            self.settings.n_trials,
            t.number,
            t.state.name,
            value,
            best,
            running,
            _hms(elapsed),
            _hms(eta),
            reason,
        )


class _HideTrialContext(logging.Filter):
    """Drop the trial-context override from Hydra's and submitit's per-job log lines.

    Every launcher logs each job's overrides (``#3 : lr=0.01 ...``); the context the job reads
    (``++hydra.job.env_set.NEMO_RL_HPO_TRIAL='{...}'``, ~300 characters of JSON) made each such
    line three lines long. Our own launchers leave it out themselves (``shown_overrides``).
    """

    _PATTERN = re.compile(
        r"\s*\+\+hydra\.job\.env_set\." + trial_api.ENV_TRIAL + r"=(?:'(?:[^'\\]|\\.)*'|\S+)"
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and trial_api.ENV_TRIAL in record.msg and not record.args:
            record.msg = self._PATTERN.sub("", record.msg)
        return True


_LAUNCHER_LOGGERS = (
    "hydra._internal.core_plugins.basic_launcher",
    "hydra_plugins.hydra_submitit_launcher.submitit_launcher",
)


def _hide_trial_context_in_launcher_logs() -> None:
    for name in _LAUNCHER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _HideTrialContext) for f in logger.filters):
            logger.addFilter(_HideTrialContext())


def _grid_space(space: SearchSpace) -> dict[str, list[Any]]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    grid: dict[str, list[Any]] = {}
    for p in space.params:
        d = p.distribution
        if isinstance(d, CategoricalDistribution):
            grid[p.key] = list(d.choices)
        elif isinstance(d, IntDistribution) and not d.log:
            grid[p.key] = list(range(d.low, d.high + 1, d.step))
        elif isinstance(d, FloatDistribution) and d.step is not None:
            n = int(round((d.high - d.low) / d.step))
            grid[p.key] = [d.low + i * d.step for i in range(n + 1)]
        else:
            raise SweepConfigError(
                f"hydra.sweeper.params.{p.key}: the grid sampler needs a finite set of values; "
                "use choice() or range(), or give hydra.sweeper.sampler.search_space."
            )
    return grid


def _flat_keys(node: Any, prefix: str = "") -> list[str]:
    keys: list[str] = []
    if isinstance(node, DictConfig):
        for k in node.keys():
            full = prefix + str(k)
            keys.append(full)
            try:
                child = node._get_node(k)
            except Exception:
                continue
            if isinstance(child, DictConfig):
                keys.extend(_flat_keys(child, full + "."))
    return keys


def _is_sweep(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        (ov,) = OverridesParser.create().parse_overrides([override])
    except Exception:
        return False
    return bool(ov.is_sweep_override())


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


_warned = False


def _warn_if_upstream_installed() -> None:
    global _warned
    if _warned:
        return
    import importlib.util

    if importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None:
        log.warning(
            "hydra-optuna-sweeper is also installed; hydra/sweeper=optuna runs nemo-rl-hpo's "
            "sweeper (pip uninstall hydra-optuna-sweeper to silence this)."
        )
    _warned = True
