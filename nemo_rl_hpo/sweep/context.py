"""The trial context: how the sweeper tells a job which Optuna trial it is, and the job's handle.

The contract between the sweeper (writer: ``hydra_plugins/nemo_rl_hpo/_launch.py``) and the
job (readers: ``nemo_rl_hpo.trial``, ``sweep/job.py``, ``command/``): one environment variable
holding a JSON object, so a job's overrides stay readable. Keys: storage (URL, password
removed), study, number, prune_metric, objectives, weights, pruner, storage_retry_s; PBT rounds
and multi-fidelity segments add checkpoint_dir, resume_from, steps; a seed of a repeated
configuration adds ``repeat`` (``sweep/repeats.py``). A storage password travels only in the
sweeper's process environment (``urls.ENV_STORAGE_PASSWORD``), never in a file.

Low in the layers: everything job-side reads the context from here, nothing here imports
``nemo_rl_hpo.trial`` or the sweeper.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from nemo_rl_hpo.sweep.urls import ENV_STORAGE_PASSWORD, insert_password

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

ENV_TRIAL = "NEMO_RL_HPO_TRIAL"

__all__ = [
    "ENV_STORAGE_PASSWORD",
    "ENV_TRIAL",
    "TrialInfo",
    "context",
    "info",
    "pruner_from_config",
    "open_study",
    "open_trial",
    "slurm_job_id",
]


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
    return _parse(os.environ.get(ENV_TRIAL, ""))


@lru_cache(maxsize=16)
def _parse(raw: str) -> dict[str, Any]:
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
    url = str(ctx["storage"])
    password = os.environ.get(ENV_STORAGE_PASSWORD)
    return TrialInfo(
        storage=insert_password(url, password) if password else url,
        study_name=str(ctx["study"]),
        number=int(ctx["number"]),
        prune_metric=ctx.get("prune_metric") or None,
        pruner=json.dumps(ctx.get("pruner")),
    )


def open_trial(
    storage_url: str, study_name: str, number: int, pruner: str = "null"
) -> optuna.trial.Trial:
    """This job's trial (one study handle per process: in-process trials reuse it).

    The one place a job opens its study; an in-memory simulation replaces it
    (bench/simulate.py).
    """
    return _trial_cached(storage_url, study_name, number, pruner)


def open_study(storage_url: str, study_name: str) -> optuna.Study:
    """The study of a job that runs for the study, not for a trial of it (a confirmation job);
    ``storage_url`` without its password, which comes from the environment."""
    password = os.environ.get(ENV_STORAGE_PASSWORD)
    url = insert_password(storage_url, password) if password else storage_url
    return _study_cached(url, study_name)


def pruner_from_config(config: Any) -> optuna.pruners.BasePruner:
    """A pruner from its config (``_target_`` + arguments; None: never prune).

    The sweeper builds the study's pruner with it and every job rebuilds the same one from the
    trial context. Raises ValueError with the cause when the config cannot be instantiated.
    """
    import optuna

    if not config:
        return optuna.pruners.NopPruner()
    from hydra.utils import instantiate

    try:
        pruner = instantiate(config)
    except Exception as e:
        msg = str(e).strip().splitlines()
        raise ValueError(msg[-1] if msg else str(e)) from None
    if not isinstance(pruner, optuna.pruners.BasePruner):
        raise ValueError(f"{type(pruner).__name__} is not an Optuna pruner")
    return pruner


def slurm_job_id() -> str | None:
    """The id sacct and submitit know this job by (``ARRAYID_TASK`` for array tasks)."""
    array_id = os.environ.get("SLURM_ARRAY_JOB_ID")
    task_id = os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_id and task_id:
        return f"{array_id}_{task_id}"
    return os.environ.get("SLURM_JOB_ID")


@lru_cache(maxsize=8)
def _study_cached(storage_url: str, study_name: str, pruner: str = "null") -> optuna.Study:
    import optuna

    from nemo_rl_hpo.sweep.storage import open_storage

    return optuna.load_study(
        study_name=study_name,
        storage=open_storage(storage_url, existing=True, retry_s=context().get("storage_retry_s")),
        pruner=pruner_from_config(json.loads(pruner)),
    )


@lru_cache(maxsize=8)
def _trial_cached(
    storage_url: str, study_name: str, number: int, pruner: str = "null"
) -> optuna.trial.Trial:
    import optuna

    study = _study_cached(storage_url, study_name, pruner)
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    return optuna.trial.Trial(study, trial_id)
