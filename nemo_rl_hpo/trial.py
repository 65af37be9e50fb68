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

import json
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nemo_rl_hpo.sweep import records

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

# Environment contract between the sweeper (writer) and the job (reader): one variable holding a
# JSON object, so a job's overrides stay readable. Keys: storage (URL, password removed), study,
# number, prune_metric, objectives, weights, and for PBT rounds checkpoint_dir, resume_from, steps.
ENV_TRIAL = "NEMO_RL_HPO_TRIAL"
ENV_STORAGE_PASSWORD = "NEMO_RL_HPO_STORAGE_PASSWORD"  # inherited from the sweeper's process only

# Trial user attributes the sweeper reads back (all keys: nemo_rl_hpo/sweep/records.py).
ATTR_PRUNED = records.PRUNED_AT_STEP
ATTR_METRICS_PREFIX = records.METRIC_PREFIX


@dataclass(frozen=True)
class TrialInfo:
    """Which Optuna trial this process is, as told by the sweeper."""

    storage: str
    study_name: str
    number: int
    prune_metric: str | None
    pruner: str = "null"  # JSON of the sweeper's pruner config (``_target_`` + arguments)


def context() -> dict[str, Any]:
    """The raw JSON context the sweeper put in this job's environment ({} outside a sweep)."""
    return _parse_context(os.environ.get(ENV_TRIAL, ""))


@lru_cache(maxsize=16)
def _parse_context(raw: str) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        log.warning("%s is not valid JSON; ignoring it", ENV_TRIAL)
        return {}
    return value if isinstance(value, dict) else {}


def info() -> TrialInfo | None:
    """The trial this job belongs to, or ``None`` outside a sweep."""
    ctx = context()
    if not (ctx.get("study") and ctx.get("storage") and ctx.get("number") is not None):
        return None
    return TrialInfo(
        storage=_with_password(str(ctx["storage"]), os.environ.get(ENV_STORAGE_PASSWORD)),
        study_name=str(ctx["study"]),
        number=int(ctx["number"]),
        prune_metric=ctx.get("prune_metric") or None,
        pruner=json.dumps(ctx.get("pruner")),
    )


def active() -> bool:
    """True inside a sweep job that can reach its study."""
    return info() is not None


def report(step: int, metrics: float | Mapping[str, float]) -> None:
    """Record an intermediate value for the pruner (and every metric for learning curves).

    ``metrics`` is a number or a mapping; with a mapping, the sweeper's prune metric (its first
    objective) is the value the pruner sees. Non-finite values are skipped for the pruner.
    """
    handle = _handle()
    if handle is None:
        return
    trial, prune_metric = handle
    seed = _seed()
    if seed is not None:  # one seed job of a repeated configuration (sweep/repeats.py)
        from nemo_rl_hpo.sweep import repeats

        return repeats.report(trial, seed, step, metrics, prune_metric)
    if isinstance(metrics, Mapping):
        values = {str(k): float(v) for k, v in metrics.items() if _is_number(v)}
        key = prune_metric if prune_metric in values else next(iter(values), None)
        value = values.get(key) if key is not None else None
        # From the storage, not the handle's cache: a pool worker reuses one handle for every
        # segment of a paused-and-promoted trial, and its cache holds the first segment's curves.
        stored = trial.storage.get_trial_user_attrs(trial._trial_id)  # type: ignore[attr-defined]
        curves = dict(stored.get(records.CURVES, {}))
        for name, v in values.items():
            curves.setdefault(name, {})[str(step)] = v
        trial.storage.set_trial_user_attr(trial._trial_id, records.CURVES, curves)  # type: ignore[attr-defined]
    else:
        value = float(metrics)
    if value is None or not math.isfinite(value):
        return
    if len(trial.study.directions) > 1:
        return  # Optuna has no intermediate values for multi-objective studies
    trial.report(value, step)
    trial.storage.set_trial_user_attr(trial._trial_id, records.LAST_STEP, int(step))


def should_prune() -> bool:
    """Ask the study's pruner; ``False`` outside a sweep or for multi-objective studies.

    When it answers ``True`` the trial is marked so that the sweeper records it PRUNED once the
    job returns, so a script may simply stop training and return its metrics.
    """
    handle = _handle()
    if handle is None:
        return False
    trial, _ = handle
    seed = _seed()
    if seed is not None:  # judged on the configuration's seeds together (sweep/repeats.py)
        from nemo_rl_hpo.sweep import repeats

        return repeats.should_prune(trial, seed)
    if len(trial.study.directions) > 1:
        return False
    if not trial.should_prune():
        return False
    step = trial.storage.get_trial(trial._trial_id).last_step
    trial.storage.set_trial_user_attr(trial._trial_id, ATTR_PRUNED, step)
    log.info("trial %d pruned at step %s", trial.number, step)
    return True


def set_user_attr(key: str, value: Any) -> None:
    """Record a JSON-serialisable fact on this trial (e.g. a child pid); a no-op outside a sweep."""
    handle = _handle()
    if handle is None:
        return
    trial, _ = handle
    trial.storage.set_trial_user_attr(trial._trial_id, key, value)  # type: ignore[attr-defined]


def record_job_cost(job_key: str, cost: Mapping[str, Any]) -> None:
    """Record what one job of this trial used (a job it submitted itself, e.g. to Slurm):
    ``{"gpus", "wall_s", "queue_s", "gpu_s", "cpu_s", "source", "started", "ended", "job_id"}``
    under ``job_key`` (the Slurm job id where there is one). The sweep sums a trial's jobs for
    its budget and report. A no-op outside a sweep."""
    handle = _handle()
    if handle is None:
        return
    trial, _ = handle
    attr = f"{records.COST_PREFIX}{trial.number}:{job_key}"
    trial.storage.set_study_system_attr(trial.study._study_id, attr, dict(cost))  # type: ignore[attr-defined]


def checkpoint_dir() -> Path:
    """Where this job reads and writes its checkpoints.

    The sweeper may name it (PBT members share a tree); otherwise it is the Hydra job's output
    dir, so a requeued SLURM job or a resumed run in the same dir finds its own checkpoints.
    """
    explicit = context().get("checkpoint_dir")
    if explicit:
        return Path(explicit)
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.output_dir)
    except ImportError:  # pragma: no cover - hydra is a dependency
        pass
    return Path.cwd()


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


def _seed() -> dict[str, Any] | None:
    """This job's seed when it is one of a repeated configuration (``hydra.sweeper.repeats``)."""
    rep = context().get("repeat")
    return rep if isinstance(rep, dict) and "index" in rep else None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _with_password(url: str, password: str | None) -> str:
    if not password:
        return url
    from nemo_rl_hpo.sweep.storage import insert_password

    return insert_password(url, password)


def _handle() -> tuple[optuna.trial.Trial, str | None] | None:
    meta = info()
    if meta is None:
        return None
    return _trial(meta.storage, meta.study_name, meta.number, meta.pruner), meta.prune_metric


def make_pruner(config: Any) -> optuna.pruners.BasePruner:
    """The sweeper's pruner, rebuilt in the job from its config (None: never prune)."""
    import optuna

    if not config:
        return optuna.pruners.NopPruner()
    from hydra.utils import instantiate

    pruner = instantiate(config)
    if not isinstance(pruner, optuna.pruners.BasePruner):
        raise TypeError(f"the sweeper's pruner {config!r} is not an Optuna pruner")
    return pruner


@lru_cache(maxsize=8)
def _study_cached(storage_url: str, study_name: str, pruner: str = "null") -> optuna.Study:
    """One study handle per process: in-process trials (basic launcher) reuse it."""
    import optuna

    from nemo_rl_hpo.sweep.storage import open_storage

    return optuna.load_study(
        study_name=study_name,
        storage=open_storage(storage_url, existing=True, retry_s=context().get("storage_retry_s")),
        pruner=make_pruner(json.loads(pruner)),
    )


@lru_cache(maxsize=8)
def _trial_cached(
    storage_url: str, study_name: str, number: int, pruner: str = "null"
) -> optuna.trial.Trial:
    import optuna

    study = _study_cached(storage_url, study_name, pruner)
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    return optuna.trial.Trial(study, trial_id)


def _trial(
    storage_url: str, study_name: str, number: int, pruner: str = "null"
) -> optuna.trial.Trial:
    return _trial_cached(storage_url, study_name, number, pruner)
