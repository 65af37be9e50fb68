"""The job side of a trial: where it runs, what it reports, whether to stop, and how it ended.

The job, not the sweeper, writes its records and its final state into the shared storage, so a
result is never lost when the sweeper dies while trials run (SLURM jobs outlive it), and a
requeued job still produces exactly one record. The sweeper only fails trials whose job ended
without telling.

A trial may be run by several jobs: the seeds of a repeated configuration
(``repeats``, ``sweep/repeats.py``). Every rule here is written for that general
case, a :class:`Part` of ``n`` jobs, and a trial run by one job is the part 0 of 1: its reports
are the trial's intermediate values, its end is the trial's end. So there is one ``report``,
one ``should_prune`` and one job end, whatever runs the trial:

- **report**: the job's metrics at a step go to its own curves; the trial's intermediate value
  at that step is ``aggregate`` over the parts that have reported that step so far (rewritten as
  lagging parts get there), and the study's pruner judges that.
- **should_prune**: yes once the trial is pruned or finished (a sibling failed), else the
  pruner's answer on the trial's aggregate curve.
- **end**: each part records how it ended; a failed part fails the trial at once (its reason
  prefixed with the part's label, ``seed 2 (seed=2): ...``); the part ending last tells the
  trial ``aggregate`` of the parts' values (PRUNED if it was pruned) and the aggregate of their
  metrics. A multi-fidelity segment (``nemo_rl_hpo/fidelity``) then pauses at its rung instead.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nemo_rl_hpo.errors import named
from nemo_rl_hpo.fidelity import segment as fidelity_segment
from nemo_rl_hpo.sweep import confirm, cost, devices, records
from nemo_rl_hpo.sweep import context as trial_context
from nemo_rl_hpo.sweep.aggregate import combine
from nemo_rl_hpo.sweep.objectives import ObjectiveError, numeric_metrics, objective_values

log = logging.getLogger(__name__)

REPEAT_CONTEXT_KEY = "repeat"  # a seed job's entry (sweep/repeats.CONTEXT_KEY)


@dataclass(frozen=True)
class Part:
    """Which of its trial's jobs this one is: part ``index`` of ``n``.

    A trial run by one job is ``Part()``: its records are the trial's own keys. The parts of a
    trial run by several jobs (seeds) keep their own records under ``repeat:<index>...`` keys,
    and the trial's are their ``aggregate``.
    """

    index: int = 0
    n: int = 1
    aggregate: str = "mean"
    seed: Any = None
    label: str = ""  # prefixes the part's failure reason ("seed 2 (seed=2)")
    launch: str | None = None  # which launch of the part (the loop knows its end by it)

    @classmethod
    def of_seed(cls, seed: Mapping[str, Any]) -> Part:
        """Seed ``index`` of a repeated configuration (the trial context's ``repeat`` entry)."""
        i = int(seed["index"])
        key = seed.get("seed_key", "seed")
        label = f"seed {i} ({key}={seed['seed']})"
        return cls(
            i, int(seed["n"]), str(seed["aggregate"]), seed["seed"], label, seed.get("launch")
        )

    @classmethod
    def of_context(cls, ctx: Mapping[str, Any]) -> Part:
        rep = ctx.get(REPEAT_CONTEXT_KEY)
        return cls.of_seed(rep) if isinstance(rep, dict) and "index" in rep else cls()

    def key(self, what: str | None = None, index: int | None = None) -> str | None:
        """The user attribute where part ``index`` (default: this one) keeps its own ``what``
        (None: its end record); None where the trial's own keys hold it (a single job)."""
        if self.n == 1:
            return None
        return records.repeat_key(self.index if index is None else index, what)

    @property
    def curves_key(self) -> str:
        return self.key("curves") or records.CURVES

    def prefixed(self, reason: str) -> str:
        return f"{self.label}: {reason}" if self.label else reason


# This process's running jobs: trial id -> (job key, its clock). A pool worker or the basic
# launcher runs several trials one after the other in one process.
_clocks: dict[int, tuple[str, cost.LocalClock]] = {}
_confirm_clock: list[tuple[str, cost.LocalClock]] = []  # this process's confirmation job


# ------------------------------------------------------------------------------ handle
def current() -> tuple[optuna.Trial, Part, dict[str, Any]] | None:
    """This job's trial, its part and its context; None outside a sweep."""
    meta = trial_context.info()
    if meta is None:
        return None
    t = trial_context.open_trial(meta.storage, meta.study_name, meta.number, meta.pruner)
    ctx = trial_context.context()
    return t, Part.of_context(ctx), ctx


# --------------------------------------------------------------------------- job start
def _confirm_study() -> tuple[optuna.Study, dict[str, Any]] | None:
    """The study and the confirmation of a confirmation job (sweep/confirm.py), else None."""
    ctx = trial_context.context()
    job = confirm.job_of(ctx)
    if job is None or not ctx.get("storage") or not ctx.get("study"):
        return None
    return trial_context.open_study(str(ctx["storage"]), str(ctx["study"])), job


def on_job_start(job_dir: str | None) -> None:
    """Record where this job runs (host, pid, SLURM id, restarts, devices) on its trial."""
    conf = _confirm_study()
    if conf is not None:  # a confirmation job: no trial of its own (sweep/confirm.py)
        attrs = _where(job_dir)
        confirm.on_job_start(conf[0], conf[1], attrs)
        sid = attrs.get(records.SLURM_JOB_ID)
        own_id = sid if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" else None
        clock = cost.LocalClock(gpus=len(attrs.get(records.DEVICES) or []), job_id=own_id)
        key = cost.confirm_job_key(conf[1]["seed"], own_id or cost.local_job_key())
        _confirm_clock[:] = [(key, clock)]
        return
    handle = current()
    if handle is None:
        return
    trial, part, _ = handle
    attrs = _where(job_dir)
    storage = trial.storage
    for k, v in attrs.items():  # the trial's keys hold the job that started last
        storage.set_trial_user_attr(trial._trial_id, k, v)
    own = part.key("job")
    if own is not None:  # and each part's own, for a trial of several jobs
        storage.set_trial_user_attr(trial._trial_id, own, {**attrs, "seed": part.seed})
    # Slurm's accounting knows the job only when it is a Slurm job of its own (submitit_slurm);
    # a pool worker or local job inside an allocation shares the allocation's id.
    sid = attrs.get(records.SLURM_JOB_ID)
    own_id = sid if os.environ.get("SUBMITIT_EXECUTOR") == "slurm" else None
    clock = cost.LocalClock(gpus=len(attrs.get(records.DEVICES) or []), job_id=own_id)
    _clocks[trial._trial_id] = (own_id or cost.local_job_key(), clock)
    _write_cost(trial.study, trial._trial_id, ended=False)


def _where(job_dir: str | None) -> dict[str, Any]:
    """Host, pid, job dir, SLURM id and node, devices: what says where a job runs."""
    attrs: dict[str, Any] = {records.JOB_HOST: socket.gethostname(), records.JOB_PID: os.getpid()}
    if job_dir:
        attrs[records.JOB_DIR] = job_dir
    sid = trial_context.slurm_job_id()
    if sid:
        attrs[records.SLURM_JOB_ID] = sid
        attrs[records.NODE] = os.environ.get("SLURMD_NODENAME", socket.gethostname())
        attrs[records.SLURM_RESTART_COUNT] = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    gpus = devices.job_devices()  # its GPU slot (or SLURM's GPUs): [] when they are hidden
    if gpus is not None:
        attrs[records.DEVICES] = gpus
    return attrs


# ------------------------------------------------------------------------------ report
def report(
    trial: optuna.Trial,
    part: Part,
    step: int,
    metrics: float | Mapping[str, float],
    prune_metric: str | None,
) -> None:
    """Record this part's metrics at ``step``; write the trial's intermediate value there."""
    if isinstance(metrics, Mapping):
        values = {str(k): float(v) for k, v in metrics.items() if _is_number(v)}
        prune_key = prune_metric if prune_metric in values else next(iter(values), None)
    else:
        prune_key = prune_metric or "value"
        values = {prune_key: float(metrics)}
    storage = trial.storage
    trial_id = trial._trial_id
    frozen = storage.get_trial(trial_id)
    if frozen.state.is_finished():
        return
    curves = dict(frozen.user_attrs.get(part.curves_key, {}))
    for name, v in values.items():
        curves.setdefault(name, {})[str(step)] = v
    storage.set_trial_user_attr(trial_id, part.curves_key, curves)
    value = values.get(prune_key) if prune_key is not None else None
    if value is None or not math.isfinite(value) or len(trial.study.directions) > 1:
        return  # Optuna has no intermediate values for multi-objective studies
    at_step = [value]
    own = part.key("reports")
    if own is not None:  # the other parts' latest reports at this step count too
        mine = {**frozen.user_attrs.get(own, {}), str(step): value}
        storage.set_trial_user_attr(trial_id, own, mine)
        attrs = storage.get_trial(trial_id).user_attrs
        for j in range(part.n):
            other = attrs.get(records.repeat_key(j, "reports"), {}) if j != part.index else {}
            if str(step) in other:
                at_step.append(float(other[str(step)]))
    storage.set_trial_intermediate_value(trial_id, step, combine(part.aggregate, at_step))
    storage.set_trial_user_attr(trial_id, records.LAST_STEP, int(step))


def should_prune(trial: optuna.Trial, part: Part) -> bool:
    """Yes once the trial is pruned or finished; else the study's pruner on its curve.

    A yes marks the trial, so that it ends PRUNED once its jobs return, whatever they return.
    """
    storage = trial.storage
    frozen = storage.get_trial(trial._trial_id)
    if frozen.state.is_finished() or records.PRUNED_AT_STEP in frozen.user_attrs:
        return True
    if len(trial.study.directions) > 1:
        return False
    if not trial.study.pruner.prune(trial.study, frozen):
        return False
    storage.set_trial_user_attr(trial._trial_id, records.PRUNED_AT_STEP, frozen.last_step)
    by = f" ({part.label})" if part.label else ""
    log.info("trial %d pruned at step %s%s", trial.number, frozen.last_step, by)
    return True


# ----------------------------------------------------------------------------- job end
def on_job_end(completed: bool, value: Any) -> TrialState | None:
    """Tell the study how this job ended. ``value``: the return, or the exception raised."""
    conf = _confirm_study()
    if conf is not None:  # recorded as a study attribute, never a trial (sweep/confirm.py)
        confirm.on_job_end(conf[0], conf[1], completed, value, trial_context.context())
        _write_confirm_cost(conf[0], int(conf[1]["trial"]))
        return None
    handle = current()
    if handle is None:
        return None
    trial, part, ctx = handle
    job_key = _write_cost(trial.study, trial._trial_id, ended=True)
    if completed:  # a part's cost is its own job's: the folded value is one run's cost
        own = job_key if part.key() is not None else None
        value = _with_cost_metrics(trial.study, trial.number, value, ctx.get("objectives"), own)
    return end(trial.study, trial._trial_id, part, completed, value, ctx)


def end(
    study: optuna.Study,
    trial_id: int,
    part: Part,
    completed: bool,
    value: Any,
    ctx: Mapping[str, Any],
) -> TrialState | None:
    """Record how this part ended; the part that completes the set tells the trial.

    Returns the trial's state once told (or failed), None while other parts still run or when
    a segment paused the trial at its rung.
    """
    storage = study._storage
    frozen = storage.get_trial(trial_id)
    if frozen.state.is_finished():
        return frozen.state
    prefix = str(ctx.get("param_prefix") or "")  # how the sweeper's user names its keys
    values: list[float] | None = None
    metrics: dict[str, float] = {}
    reason: str | None = None
    if completed:
        metrics = dict(numeric_metrics(value))
        state = "PRUNED" if records.PRUNED_AT_STEP in frozen.user_attrs else "COMPLETE"
        try:
            values = objective_values(
                value, len(study.directions), ctx.get("objectives") or None, ctx.get("weights")
            )
        except ObjectiveError as e:
            if state == "COMPLETE":
                state, reason = "FAIL", named(e, prefix)
    elif isinstance(value, optuna.TrialPruned):
        state = "PRUNED"
    else:
        state, reason = "FAIL", f"{type(value).__name__}: {named(value, prefix)}"
    segment = fidelity_segment.segment_of(ctx)
    mine: dict[str, Any] = {"seed": part.seed, "state": state, "values": values, "metrics": metrics}
    if segment is not None:  # parts of one segment: an earlier segment's records do not count
        mine["segment"] = int(segment["target"])
    if part.launch is not None:
        mine["launch"] = part.launch
    if reason:
        mine["reason"] = reason[: records.FAIL_REASON_MAX_CHARS]
    done, frozen = _ended_parts(storage, frozen, part, mine)
    if len(done) == part.n:
        for name in set.intersection(*(set(r.get("metrics") or {}) for r in done)):
            metric = combine(part.aggregate, [r["metrics"][name] for r in done])
            storage.set_trial_user_attr(trial_id, records.METRIC_PREFIX + name, metric)
    if state == "FAIL":
        return _fail(study, frozen, part.prefixed(str(reason)))
    if len(done) < part.n:
        return None
    told: list[float] | None = None
    final = TrialState.PRUNED
    if records.PRUNED_AT_STEP not in frozen.user_attrs and all(
        r["state"] == "COMPLETE" for r in done
    ):
        final = TrialState.COMPLETE
        told = [
            combine(part.aggregate, [r["values"][k] for r in done])
            for k in range(len(done[0]["values"]))
        ]
        if segment is not None:  # the segment ended: pause at its rung, or finish
            ended = fidelity_segment.end(study, frozen, told[0], segment)
            if ended == "paused":
                return None
            if ended == "short":
                final, told = TrialState.PRUNED, None
    try:
        study.tell(frozen.number, told, state=final, skip_if_finished=True)
    except Exception as e:  # e.g. the driver failed it meanwhile: keep the job's exit clean
        log.warning("could not record trial %d as %s: %s", frozen.number, final.name, e)
    return final


def _ended_parts(
    storage: Any, frozen: FrozenTrial, part: Part, mine: dict[str, Any]
) -> tuple[list[dict[str, Any]], FrozenTrial]:
    """The end records of the trial's parts that ended (this one's included), and the trial as
    it is now (a part's siblings may have written since ``frozen`` was read)."""
    own = part.key()
    if own is None:  # the trial's only job: nothing else has written to it meanwhile
        return [mine], frozen
    storage.set_trial_user_attr(frozen._trial_id, own, mine)
    # Written before read: of two parts ending together, at least the later sees both.
    latest = storage.get_trial(frozen._trial_id)
    done = [mine]
    for j in range(part.n):
        r = latest.user_attrs.get(part.key(None, j)) if j != part.index else None
        if isinstance(r, dict) and r.get("segment") == mine.get("segment"):
            done.append(r)
    return done, latest


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
    or only job ``job_key``'s (one part of a trial of several: the parts' costs are folded)."""
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


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
