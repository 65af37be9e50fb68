"""A trial's job through Hydra: the launcher, one job per ``launch`` call, and a job's config.

Every sweeper (``_sweep_base.HydraSweep``) holds one :class:`HydraJobs`. It wraps Hydra's config
loader in the compose cache, instantiates the configured launcher around
:class:`~hydra_plugins.nemo_rl_hpo._task.TrialTask`, and turns a proposal into one
``Launcher.launch`` call carrying the trial context. The loop
calls :meth:`HydraJobs.launch` from up to ``n_jobs`` threads at once, one job each.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any, cast

import optuna
from hydra.core.config_loader import ConfigLoader
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.nemo_rl_hpo._slurm import JobDied
from hydra_plugins.nemo_rl_hpo._task import TrialTask
from hydra_plugins.nemo_rl_hpo.compose_cache import CachedSweepConfigLoader
from nemo_rl_hpo.search.grammar import hydra_quote
from nemo_rl_hpo.sweep import records
from nemo_rl_hpo.sweep import storage as st
from nemo_rl_hpo.sweep.context import ENV_TRIAL
from nemo_rl_hpo.sweep.core import LaunchOutcome

log = logging.getLogger(__name__)

# How often a trial's job is submitted again after Slurm ended it before it started (no output;
# see _slurm.JobDied.never_started): lost infrastructure, bounded so a broken cluster still
# fails the trial with Slurm's words instead of submitting forever.
LOST_JOB_RESUBMITS = 3


class HydraJobs:
    """The sweep's launcher and config loader, set up once by the sweeper's ``setup``."""

    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Launcher | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        # Same context, but jobs are composed through a cache keyed by group choices.
        loader = CachedSweepConfigLoader(hydra_context.config_loader)
        self.hydra_context = HydraContext(
            config_loader=cast("ConfigLoader", loader), callbacks=hydra_context.callbacks
        )
        _hide_trial_context_in_launcher_logs()
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=self.hydra_context, task_function=TrialTask(task_function)
        )
        _warn_if_upstream_installed()

    @property
    def in_process(self) -> bool:
        """Hydra's basic launcher: jobs run in the sweeper's process, one at a time."""
        from hydra._internal.core_plugins.basic_launcher import BasicLauncher

        return isinstance(self.launcher, BasicLauncher)

    @property
    def on_slurm(self) -> bool:
        """A submitit Slurm launcher (ours or upstream's): jobs run on other nodes.

        Asked of the executor the launcher declares, not of its class: Hydra loads plugin
        modules outside ``sys.modules``, so the launcher's base class is not the one an import
        here would see.
        """
        return getattr(self.launcher, "_EXECUTOR", None) == "slurm"

    def launch(
        self, trial: optuna.Trial, overrides: list[str], context: Mapping[str, Any]
    ) -> LaunchOutcome:
        """Launch one job for ``trial``; the job learns its trial from ``hydra.job.env_set``."""
        ctx = {**context, "number": trial.number}
        return self.launch_job(overrides, ctx, trial.number, trial)

    def launch_job(
        self,
        overrides: list[str],
        context: Mapping[str, Any],
        job_idx: int,
        trial: optuna.Trial | None = None,
    ) -> LaunchOutcome:
        """Launch one job with ``context``: a trial's, or a confirmation's (no trial of its own,
        ``nemo_rl_hpo/sweep/confirm.py``); a job Slurm ended before it started is resubmitted."""
        assert self.launcher is not None
        what = f"trial {trial.number}" if trial is not None else f"job {job_idx}"
        ctx = json.dumps(dict(context), separators=(",", ":"))
        env_ov = f"++hydra.job.env_set.{ENV_TRIAL}={hydra_quote(ctx)}"
        lost: list[dict[str, Any]] = []
        while True:
            try:
                (ret,) = self.launcher.launch([[*overrides, env_ov]], initial_job_idx=job_idx)
                break
            except JobDied as e:  # the job died without a result: the launcher says why
                if st.is_disk_full(e):
                    raise  # no trial can start on a full disk: the sweep stops with one line
                if not e.never_started:
                    return LaunchOutcome(ok=False, error=e.reason)
                # Slurm ended the job before the app ran: the trial was never tried.
                lost.append({"job_id": e.job_id, "state": e.state, "reason": e.reason})
                if trial is not None:
                    trial.set_user_attr(records.LOST_JOBS, lost)
                if len(lost) > LOST_JOB_RESUBMITS:
                    return LaunchOutcome(
                        ok=False,
                        error=f"{len(lost)} Slurm jobs of this {what} ended before it started; "
                        f"last: {e.reason}",
                    )
                log.warning(
                    "%s: %s; submitting it again (%d of %d)",
                    what,
                    e.reason,
                    len(lost),
                    LOST_JOB_RESUBMITS,
                )
            except Exception as e:  # the launcher itself failed (submission, pool worker)
                if st.is_disk_full(e):
                    raise
                lines = str(e).strip().splitlines()
                error = f"{type(e).__name__}: {lines[0] if lines else ''}"
                return LaunchOutcome(ok=False, error=error)
        if ret.status.name == "FAILED":
            err = ret._return_value
            return LaunchOutcome(ok=False, error=f"{type(err).__name__}: {err}")
        return LaunchOutcome(ok=True)

    def task_config(self, overrides: list[str]) -> DictConfig:
        """A job's config without its ``hydra`` node, through the sweep's compose cache."""
        assert self.hydra_context is not None and self.config is not None
        loader = self.hydra_context.config_loader
        if isinstance(loader, CachedSweepConfigLoader):
            return cast(
                DictConfig, loader.load_sweep_config(self.config, overrides, task_only=True)
            )
        cfg = loader.load_sweep_config(self.config, overrides)
        return OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "hydra"])


class _HideTrialContext(logging.Filter):
    """Drop the trial-context override from Hydra's and submitit's per-job log lines.

    Every launcher logs each job's overrides (``#3 : lr=0.01 ...``); the context the job reads
    (``++hydra.job.env_set.NEMO_RL_HPO_TRIAL='{...}'``, ~300 characters of JSON) made each such
    line three lines long. Our own launchers leave it out themselves (``shown_overrides``).
    """

    _PATTERN = re.compile(
        r"\s*\+\+hydra\.job\.env_set\." + ENV_TRIAL + r"=(?:'(?:[^'\\]|\\.)*'|\S+)"
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and ENV_TRIAL in record.msg and not record.args:
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
