"""Job-side bookkeeping: the trial job itself records where it runs and tells its own result.

Because the job, not the driver, writes the final state into the shared storage, a result is
never lost when the sweeper dies while trials run (SLURM jobs outlive it), and a requeued job
still produces exactly one record. The driver only fails trials that ended without telling.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import TrialState

from nemo_rl_hpo import trial as trial_api
from nemo_rl_hpo.fidelity import _segment
from nemo_rl_hpo.sweep import confirm, cost, devices, records, repeats
from nemo_rl_hpo.sweep.objectives import ObjectiveError, numeric_metrics, objective_values

log = logging.getLogger(__name__)


def slurm_job_id() -> str | None:
    """The id sacct and submitit know this job by (``ARRAYID_TASK`` for array tasks)."""
    array_id = os.environ.get("SLURM_ARRAY_JOB_ID")
    task_id = os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_id and task_id:
        return f"{array_id}_{task_id}"
    return os.environ.get("SLURM_JOB_ID")


# This process's running jobs: trial id -> (job key, its clock). A pool worker or the basic
# launcher runs several trials one after the other in one process.
_clocks: dict[int, tuple[str, cost.LocalClock]] = {}
_confirm_clock: list[tuple[str, cost.LocalClock]] = []  # this process's confirmation job


def _study() -> tuple[optuna.Study, int] | None:
    info = trial_api.info()
    if info is None:
        return None
    t = trial_api._trial(info.storage, info.study_name, info.number, info.pruner)
    return t.study, t._trial_id


def _confirm_study() -> tuple[optuna.Study, dict[str, Any]] | None:
    """The study and the confirmation of a confirmation job (sweep/confirm.py), else None."""
    ctx = trial_api.context()
    job = confirm.job_of(ctx)
    if job is None or not ctx.get("storage") or not ctx.get("study"):
        return None
    url = trial_api._with_password(
        str(ctx["storage"]), os.environ.get(trial_api.ENV_STORAGE_PASSWORD)
    )
    return trial_api._study_cached(url, str(ctx["study"])), job


def on_job_start(job_dir: str | None) -> None:
    """Record where this trial runs (host, pid, SLURM id, restarts) on the trial."""
    conf = _confirm_study()
    if conf is not None:  # a confirmation job: no trial of its own (sweep/confirm.py)
        attrs = _where(job_dir)
        confirm.on_job_start(conf[0], conf[1], attrs)
        sid = attrs.get(records.SLURM_JOB_ID)
        own_id = sid if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" else None
        clock = cost.LocalClock(gpus=len(attrs.get(records.DEVICES) or []), job_id=own_id)
        _confirm_clock[:] = [(f"confirm-{conf[1]['seed']}-{own_id or cost.local_job_key()}", clock)]
        return
    handle = _study()
    if handle is None:
        return
    study, trial_id = handle
    attrs = _where(job_dir)
    for k, v in attrs.items():
        study._storage.set_trial_user_attr(trial_id, k, v)
    # Slurm's accounting knows the job only when it is a Slurm job of its own (submitit_slurm);
    # a pool worker or local job inside an allocation shares the allocation's id.
    sid = attrs.get(records.SLURM_JOB_ID)
    own_id = sid if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" else None
    clock = cost.LocalClock(gpus=len(attrs.get(records.DEVICES) or []), job_id=own_id)
    _clocks[trial_id] = (own_id or cost.local_job_key(), clock)
    _write_cost(study, trial_id, ended=False)
    seed = repeats.seed_of(trial_api.context())
    if seed is not None:  # one of a repeated configuration's seeds: also under its own key
        repeats.on_seed_start(study._storage, trial_id, seed, attrs)


def _where(job_dir: str | None) -> dict[str, Any]:
    """Host, pid, job dir, SLURM id and node, devices: what says where a job runs."""
    attrs: dict[str, Any] = {records.JOB_HOST: socket.gethostname(), records.JOB_PID: os.getpid()}
    if job_dir:
        attrs[records.JOB_DIR] = job_dir
    sid = slurm_job_id()
    if sid:
        attrs[records.SLURM_JOB_ID] = sid
        attrs[records.NODE] = os.environ.get("SLURMD_NODENAME", socket.gethostname())
        attrs[records.SLURM_RESTART_COUNT] = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    gpus = devices.job_devices()  # its GPU slot (or SLURM's GPUs): [] when they are hidden
    if gpus is not None:
        attrs[records.DEVICES] = gpus
    return attrs


def on_job_end(completed: bool, value: Any) -> TrialState | None:
    """Tell the study how this job ended. ``value``: the return, or the exception raised."""
    conf = _confirm_study()
    if conf is not None:  # recorded as a study attribute, never a trial (sweep/confirm.py)
        confirm.on_job_end(conf[0], conf[1], completed, value, trial_api.context())
        _write_confirm_cost(conf[0], int(conf[1]["trial"]))
        return None
    handle = _study()
    if handle is None:
        return None
    study, trial_id = handle
    job_key = _write_cost(study, trial_id, ended=True)
    storage = study._storage
    frozen = storage.get_trial(trial_id)
    if frozen.state.is_finished():
        return frozen.state
    ctx = trial_api.context()
    seed = repeats.seed_of(ctx)
    objectives = ctx.get("objectives") or None
    if completed:  # a seed's cost is its own job's: the aggregate is one run's cost
        own = job_key if seed is not None else None
        value = _with_cost_metrics(study, frozen.number, value, objectives, own)
    if seed is not None:  # the seed ending last tells the aggregate (sweep/repeats.py)
        return repeats.on_seed_end(study, trial_id, seed, completed, value, ctx)
    weights = ctx.get("weights")
    state: TrialState
    values: list[float] | None = None
    if completed:
        for name, metric in numeric_metrics(value).items():
            storage.set_trial_user_attr(trial_id, records.METRIC_PREFIX + name, metric)
        if records.PRUNED_AT_STEP in frozen.user_attrs:
            state = TrialState.PRUNED
        else:
            try:
                values = objective_values(value, len(study.directions), objectives, weights)
                state = TrialState.COMPLETE
            except ObjectiveError as e:
                return _fail(study, frozen, str(e))
            segment = _segment.segment_of(ctx)
            if segment is not None:  # a multi-fidelity segment: pause at its rung, or finish
                ended = _segment.end(study, storage.get_trial(trial_id), values[0], segment)
                if ended == "paused":
                    return None
                if ended == "short":
                    state, values = TrialState.PRUNED, None
    elif isinstance(value, optuna.TrialPruned):
        state = TrialState.PRUNED
    else:
        return _fail(study, frozen, f"{type(value).__name__}: {value}")
    try:
        study.tell(frozen.number, values, state=state, skip_if_finished=True)
    except Exception as e:  # e.g. the driver failed it meanwhile: keep the job's exit clean
        log.warning("could not record trial %d as %s: %s", frozen.number, state.name, e)
    return state


def _fail(study: optuna.Study, frozen: optuna.trial.FrozenTrial, reason: str) -> TrialState:
    try:
        records.fail_trial(study, frozen, reason)
    except Exception as e:  # e.g. storage down: keep the job's exit clean, the driver fails it
        log.warning("could not record trial %d as FAIL: %s", frozen.number, e)
    return TrialState.FAIL


def _write_confirm_cost(study: optuna.Study, number: int) -> None:
    """A confirmation job's cost, under its configuration's trial with a ``confirm-`` job key:
    the study's totals and GPU-hour budget count it; it never changes a trial's value."""
    if not _confirm_clock:
        return
    job_key, clock = _confirm_clock.pop()
    try:
        cost.write(study._storage, study._study_id, number, job_key, clock.record(True))
    except Exception as e:  # storage down: the totals miss this job, nothing else
        log.warning("could not record the cost of a confirmation job: %s", e)


def _write_cost(study: optuna.Study, trial_id: int, *, ended: bool) -> str | None:
    """This job's cost record, measured here (a Slurm job's is replaced from sacct later);
    returns the job's key."""
    found = _clocks.get(trial_id)
    if found is None:
        return None
    job_key, clock = found
    if ended:
        del _clocks[trial_id]
    try:
        number = study._storage.get_trial(trial_id).number
        cost.write(study._storage, study._study_id, number, job_key, clock.record(ended))
    except Exception as e:  # storage down: the sweeper's budget misses this job, nothing else
        log.warning("could not record the cost of trial %d's job: %s", trial_id, e)
    return job_key


def _with_cost_metrics(
    study: optuna.Study, number: int, value: Any, objectives: Any, job_key: str | None = None
) -> Any:
    """A mapping return with ``gpu_hours``/``cpu_hours`` added where an objective names them
    and the task did not return them: the trial's cost so far (all its jobs, this one ended),
    or only job ``job_key``'s (a seed of a repeated configuration)."""
    wanted = [n for n in (objectives or []) if n in cost.METRICS]
    if not wanted or not isinstance(value, Mapping):
        return value
    missing = [n for n in wanted if n not in value]
    if not missing:
        return value
    jobs = cost.job_records(study._storage.get_study_system_attrs(study._study_id))
    mine = jobs.get(number, {})
    spent = cost.totals([mine[job_key]] if job_key in mine else mine.values())
    return {**value, **{n: cost.metric(spent, n) for n in missing}}
