"""Job side of a multi-fidelity trial: one job is one *segment*, from a checkpoint to a rung.

The sweeper puts ``{"target", "max", "launched"}`` under ``"fidelity"`` in the trial context,
together with ``steps`` (= target) and ``checkpoint_dir`` (the trial's own dir, the same for
every segment): the mechanism PBT rounds use, so every trial that honours ``steps`` and resumes
from its newest checkpoint (the supervised trial, GRPO, a command through ``max_steps_key``)
pauses and resumes without knowing about rungs. When the job ends at a rung below
``max_resource`` it records the segment and marks the trial paused instead of telling it: the
trial stays RUNNING, one configuration = one Optuna trial over all its segments.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from nemo_rl_hpo.sweep import records

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

log = logging.getLogger(__name__)

CONTEXT_KEY = "fidelity"


def segment_of(context: Mapping[str, Any]) -> dict[str, Any] | None:
    """This job's segment ``{"target", "max", "launched"}``, or None outside fidelity sweeps."""
    seg = context.get(CONTEXT_KEY)
    return seg if isinstance(seg, dict) and "target" in seg else None


def job_id() -> str:
    """The segment's job as people find it: its Slurm id, else ``host:pid``."""
    from nemo_rl_hpo.sweep.context import slurm_job_id

    return slurm_job_id() or f"{socket.gethostname()}:{os.getpid()}"


def end(study: optuna.Study, frozen: FrozenTrial, value: float, segment: Mapping[str, Any]) -> str:
    """Record the segment that just ended with ``value``; what the job does next.

    ``"paused"``: it stopped at a rung below ``max_resource`` (the trial is marked paused, the
    job must not tell it). ``"final"``: it reached ``max_resource`` (tell it COMPLETE).
    ``"short"``: the app stopped before its rung (diverged, its own early stop): it is final
    but did not reach ``max_resource``, so the caller tells it PRUNED.
    """
    storage = study._storage
    trial_id = frozen._trial_id
    target, top = int(segment["target"]), int(segment["max"])
    reported = frozen.user_attrs.get(records.LAST_STEP)
    step = target if reported is None or int(reported) >= target else int(reported)
    rungs = [
        r for r in frozen.user_attrs.get(records.FIDELITY_RUNGS, []) if int(r["step"]) != step
    ]  # a requeued job that ends at the same step replaces its own record
    record = {
        "step": step,
        "value": value,
        "job": job_id(),
        "started": float(segment.get("launched") or time.time()),
        "ended": time.time(),
    }
    command_jobs = frozen.user_attrs.get(records.COMMAND_SLURM_JOB_IDS)
    if command_jobs:  # an external command's own Slurm jobs (ray.sub) in this segment
        record["command_jobs"] = list(command_jobs)
    rungs.append(record)
    rungs.sort(key=lambda r: int(r["step"]))
    storage.set_trial_user_attr(trial_id, records.FIDELITY_RUNGS, rungs)
    if step < target:
        storage.set_trial_user_attr(
            trial_id, records.FIDELITY_END, f"stopped by the app at step {step}"
        )
        return "short"
    if target >= top:
        storage.set_trial_user_attr(trial_id, records.FIDELITY_END, "max_resource")
        return "final"
    from nemo_rl_hpo.fidelity._claims import Claims

    Claims(storage, study.study_name).offer(frozen.number, target)  # before it shows paused
    storage.set_trial_system_attr(
        trial_id, records.SYS_PAUSED, {"step": target, "since": time.time()}
    )
    log.info("trial %d paused at step %d (value %.6g)", frozen.number, target, value)
    return "paused"
