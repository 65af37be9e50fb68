"""The one seam a training script touches: report progress, ask whether to stop, find checkpoints.

Inside a sweep the sweeper tells each job which Optuna trial it is through environment variables
that every Hydra launcher carries (``hydra.job.env_set``; a storage password travels only in the
sweeper's process environment, never in a file). Outside a sweep every call is a cheap no-op, so
the same script runs standalone, under ``-m`` with any sweeper, or as a SLURM job::

    from nemo_rl_hpo import trial

    for step in range(max_steps):
        ...
        if step % eval_interval == 0:
            trial.report(step, {"val_loss": val_loss, "val_accuracy": acc})
            if trial.should_prune():
                break  # the sweeper records the trial PRUNED; the job ends normally
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_rl_hpo.sweep import context as trial_context
from nemo_rl_hpo.sweep.context import ENV_STORAGE_PASSWORD, ENV_TRIAL, TrialInfo

log = logging.getLogger(__name__)

# The environment contract (names, keys) is nemo_rl_hpo/sweep/context.py's; re-exported here,
# the module a training script imports.
__all__ = [
    "ENV_STORAGE_PASSWORD",
    "ENV_TRIAL",
    "RunNames",
    "TrialInfo",
    "active",
    "checkpoint_dir",
    "context",
    "info",
    "record_job_cost",
    "report",
    "resume_from",
    "run_names",
    "set_user_attr",
    "should_prune",
    "target_steps",
]


def context() -> dict[str, Any]:
    """The raw JSON context the sweeper put in this job's environment ({} outside a sweep)."""
    return trial_context.context()


def info() -> TrialInfo | None:
    """The trial this job belongs to, or ``None`` outside a sweep."""
    return trial_context.info()


def active() -> bool:
    """True inside a sweep job that can reach its study."""
    return info() is not None


def report(step: int, metrics: float | Mapping[str, float]) -> None:
    """Record an intermediate value for the pruner (and every metric for learning curves).

    ``metrics`` is a number or a mapping; with a mapping, the sweeper's prune metric (its first
    objective) is the value the pruner sees. Non-finite values are skipped for the pruner. A
    seed of a repeated configuration records its own curves; the pruner sees the seeds'
    aggregate (``nemo_rl_hpo/sweep/job.py``).
    """
    if info() is None:
        return  # outside a sweep: no Optuna import
    from nemo_rl_hpo.sweep import job

    handle = job.current()
    if handle is None:
        return
    trial, part, ctx = handle
    job.report(trial, part, step, metrics, ctx.get("prune_metric") or None)


def should_prune() -> bool:
    """Ask the study's pruner; ``False`` outside a sweep or for multi-objective studies.

    When it answers ``True`` the trial is marked so that the sweeper records it PRUNED once the
    job returns, so a script may simply stop training and return its metrics.
    """
    if info() is None:
        return False
    from nemo_rl_hpo.sweep import job

    handle = job.current()
    if handle is None:
        return False
    trial, part, _ = handle
    return job.should_prune(trial, part)


def set_user_attr(key: str, value: Any) -> None:
    """Record a JSON-serialisable fact on this trial (e.g. a child pid); a no-op outside a sweep."""
    meta = info()
    if meta is None:
        return
    trial = trial_context.open_trial(meta.storage, meta.study_name, meta.number, meta.pruner)
    trial.storage.set_trial_user_attr(trial._trial_id, key, value)


def record_job_cost(job_key: str, cost: Mapping[str, Any]) -> None:
    """Record what one job of this trial used (a job it submitted itself, e.g. to Slurm):
    ``{"gpus", "wall_s", "queue_s", "gpu_s", "cpu_s", "source", "started", "ended", "job_id"}``
    under ``job_key`` (the Slurm job id where there is one). The sweep sums a trial's jobs for
    its budget and report. A no-op outside a sweep."""
    meta = info()
    if meta is None:
        return
    from nemo_rl_hpo.sweep import records

    trial = trial_context.open_trial(meta.storage, meta.study_name, meta.number, meta.pruner)
    attr = f"{records.COST_PREFIX}{trial.number}:{job_key}"
    trial.storage.set_study_system_attr(trial.study._study_id, attr, dict(cost))


def checkpoint_dir() -> Path:
    """Where this job reads and writes its checkpoints.

    The sweeper may name it (PBT members share a tree); otherwise it is the Hydra job's output
    dir, so a requeued SLURM job or a resumed run in the same dir finds its own checkpoints.
    """
    explicit = context().get("checkpoint_dir")
    if explicit:
        return Path(explicit)
    from nemo_rl_hpo.job_dirs import job_dir

    return job_dir()


def resume_from() -> Path | None:
    """A checkpoint the sweeper wants this job to start from (PBT exploit), if any."""
    path = context().get("resume_from")
    return Path(path) if path else None


def target_steps() -> int | None:
    """The step this job should train up to, when the sweeper sets it (PBT rounds)."""
    steps = context().get("steps")
    return int(steps) if steps else None


@dataclass(frozen=True)
class RunNames:
    """Names for an experiment tracker: one run per trial, grouped by study."""

    run: str  # "<study>-trial-<number>", e.g. W&B's name, MLflow's run_name
    group: str  # the study's name, e.g. W&B's group, MLflow's experiment_name


def run_names() -> RunNames | None:
    """This trial's names for W&B / MLflow runs, or ``None`` outside a sweep.

    The same names the external-command presets give NeMo RL's logger
    (``logger.wandb.name``/``group``, ``logger.mlflow.run_name``/``experiment_name``), so a
    Hydra app's own runs line up with them::

        names = trial.run_names()
        wandb.init(project="rl", name=names and names.run, group=names and names.group)
    """
    meta = info()
    if meta is None:
        return None
    return RunNames(run=f"{meta.study_name}-trial-{meta.number}", group=meta.study_name)
