"""What each job cost, in GPU-seconds (and CPU-seconds), from the scheduler where it keeps
accounts and from the job's own clock where not.

One record per job (``records.COST_PREFIX``): the job writes it when it starts (so a running job
counts as in flight) and when it ends, measured locally (wall time × the GPUs in its
``CUDA_VISIBLE_DEVICES``, its CPU seconds); a Slurm job's record is replaced by Slurm's own
accounting once the job has ended (``sacct``: Elapsed × gres/gpu of AllocTRES, summed over
every run of a requeued job, queue time from Submit/Start). A trial's cost is the sum over its
jobs (seeds, ray.sub resubmissions); a trial that failed or was pruned cost what it ran.

Records live in the study's system attributes, not the trial's: a finished trial cannot be
written to, and Slurm's accounting arrives after the job told its result.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from nemo_rl_hpo import slurm
from nemo_rl_hpo.sweep import records

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage
    from optuna.trial import FrozenTrial

log = logging.getLogger(__name__)

SOURCE_SACCT = "sacct"
SOURCE_LOCAL = "local"
# How long after a job's end its accounting may lag (sacct shows COMPLETING for a moment).
SACCT_WAIT_S = 30.0


# ------------------------------------------------------------------------ one job's record
@dataclass
class JobCost:
    """What one job used. ``ended`` False: still running (``wall_s`` counts from ``started``)."""

    gpus: int
    wall_s: float = 0.0
    queue_s: float = 0.0
    gpu_s: float = 0.0
    cpu_s: float | None = None
    source: str = SOURCE_LOCAL
    started: float = 0.0  # unix time the job started (local record)
    ended: bool = False
    job_id: str | None = None  # the Slurm id, where the job ran under Slurm

    def to_attr(self) -> dict[str, Any]:
        out = {
            "gpus": self.gpus,
            "wall_s": round(self.wall_s, 3),
            "queue_s": round(self.queue_s, 3),
            "gpu_s": round(self.gpu_s, 3),
            "source": self.source,
            "started": self.started,
            "ended": self.ended,
        }
        if self.cpu_s is not None:
            out["cpu_s"] = round(self.cpu_s, 3)
        if self.job_id:
            out["job_id"] = self.job_id
        return out

    @classmethod
    def from_attr(cls, raw: Mapping[str, Any]) -> JobCost:
        cpu = raw.get("cpu_s")
        return cls(
            gpus=int(raw.get("gpus", 0) or 0),
            wall_s=float(raw.get("wall_s", 0.0) or 0.0),
            queue_s=float(raw.get("queue_s", 0.0) or 0.0),
            gpu_s=float(raw.get("gpu_s", 0.0) or 0.0),
            cpu_s=None if cpu is None else float(cpu),
            source=str(raw.get("source", SOURCE_LOCAL)),
            started=float(raw.get("started", 0.0) or 0.0),
            ended=bool(raw.get("ended", True)),
            job_id=raw.get("job_id"),
        )


CONFIRM_KEY_PREFIX = "confirm-"  # a confirmation job's record: confirm-<seed>-<job id or key>


def confirm_job_key(seed: Any, job: str) -> str:
    """The key of a confirmation job's record under its configuration's trial."""
    return f"{CONFIRM_KEY_PREFIX}{seed}-{job}"


def key(trial_number: int, job_key: str) -> str:
    """The record's attribute (also written by ``nemo_rl_hpo.trial.record_job_cost``)."""
    return f"{records.COST_PREFIX}{trial_number}:{job_key}"


def _parse_key(attr: str) -> tuple[int, str] | None:
    if not attr.startswith(records.COST_PREFIX):
        return None
    number, _, job_key = attr[len(records.COST_PREFIX) :].partition(":")
    try:
        return int(number), job_key
    except ValueError:
        return None


def write(storage: BaseStorage, study_id: int, trial_number: int, job_key: str, c: JobCost) -> None:
    storage.set_study_system_attr(study_id, key(trial_number, job_key), c.to_attr())


def job_records(system_attrs: Mapping[str, Any]) -> dict[int, dict[str, JobCost]]:
    """Every job's record, by trial number and job key."""
    out: dict[int, dict[str, JobCost]] = {}
    for attr, raw in system_attrs.items():
        parsed = _parse_key(attr)
        if parsed is None or not isinstance(raw, Mapping):
            continue
        out.setdefault(parsed[0], {})[parsed[1]] = JobCost.from_attr(raw)
    return out


# ------------------------------------------------------------------ measured by the job
def local_job_key() -> str:
    """A key for a job Slurm does not know (a local process, a pool worker's trial)."""
    return f"local-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def process_start_time() -> float | None:
    """Unix time this process started (Linux ``/proc``), None where it cannot be read."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        with open("/proc/stat") as f:
            boot = next(int(ln.split()[1]) for ln in f if ln.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def job_start_time() -> float:
    """When this job started holding its resources: its process's start for a process started
    for the job (a submitit job, local or Slurm: Python's and the app's start-up are paid for
    too), now for a trial in a reused process (a pool worker, the sweeper itself)."""
    now = time.time()
    if os.environ.get("SUBMITIT_EXECUTOR"):
        started = process_start_time()
        if started is not None and now - 3600 < started <= now:
            return started
    return now


def cpu_seconds() -> float:
    """CPU seconds of this process and its waited-for children so far."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class LocalClock:
    """A job's own measurement: started at its start (:func:`job_start_time`), read at its
    end. CPU seconds count from the clock's creation, this process's children included."""

    gpus: int
    job_id: str | None = None
    started: float = field(default_factory=job_start_time)
    _cpu0: float = field(default_factory=cpu_seconds)

    def record(self, ended: bool) -> JobCost:
        wall = max(0.0, time.time() - self.started) if ended else 0.0
        return JobCost(
            gpus=self.gpus,
            wall_s=wall,
            gpu_s=wall * self.gpus,
            cpu_s=(cpu_seconds() - self._cpu0) if ended else None,
            source=SOURCE_LOCAL,
            started=self.started,
            ended=ended,
            job_id=self.job_id,
        )


# --------------------------------------------------------------- from Slurm's accounting
def from_sacct(job_id: str, wait_s: float = SACCT_WAIT_S) -> JobCost | None:
    """The job's cost from sacct once every run of it has ended; None when sacct cannot say.

    ``gpu_s`` = Elapsed × gres/gpu of AllocTRES (the job's GPUs over all its nodes), summed over
    every run of a requeued job: a run killed by a node failure used its GPUs until then, and
    the run after the requeue is a run of its own.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            runs = slurm.runs(job_id)
        except slurm.AccountingUnavailable:
            return None
        if runs is not None or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    if not runs:
        return None
    cpu = [r.cpu_s for r in runs if r.cpu_s is not None]
    return JobCost(
        gpus=max(r.gpus for r in runs),
        wall_s=sum(r.elapsed_s for r in runs),
        queue_s=sum(r.queue_s for r in runs),
        gpu_s=sum(r.elapsed_s * r.gpus for r in runs),
        cpu_s=sum(cpu) if cpu else None,
        source=SOURCE_SACCT,
        ended=True,
        job_id=job_id,
    )


def settle_slurm_job(
    storage: BaseStorage,
    study_id: int,
    trial_number: int,
    job_id: str,
    *,
    wait_s: float = SACCT_WAIT_S,
    job_key: str | None = None,
) -> JobCost | None:
    """After a Slurm job ended: its record from sacct, or (accounting down) the job's own
    measurement closed with the launcher's clock, marked local for ``status --refresh-cost``.
    ``job_key``: the record's key where it is not the job id (a confirmation job's).
    """
    job_key = job_key or job_id
    k = key(trial_number, job_key)
    found = from_sacct(job_id, wait_s)
    before = storage.get_study_system_attrs(study_id).get(k)
    old = JobCost.from_attr(before) if isinstance(before, Mapping) else None
    if found is None:
        log.warning(
            "Slurm's accounting has no record of job %s (slurmdbd down?): trial %d's cost is "
            "the job's own wall time x GPUs; `nemo-rl-hpo status --refresh-cost` fills it in "
            "later",
            job_id,
            trial_number,
        )
        if old is None or old.ended:
            return old
        # The job died before it could close its record: its wall time ends now.
        found = JobCost(
            gpus=old.gpus,
            wall_s=max(0.0, time.time() - old.started),
            source=SOURCE_LOCAL,
            started=old.started,
            ended=True,
            job_id=job_id,
        )
        found.gpu_s = found.wall_s * found.gpus
    elif old is not None:
        merge_local(found, old)
    write(storage, study_id, trial_number, job_key, found)
    return found


_said_no_gres = False


def merge_local(found: JobCost, local: JobCost) -> None:
    """Complete sacct's record with what only the job saw: its start, its CPU seconds where
    the cluster gathers none, and its GPUs where AllocTRES has no gres/gpu (a cluster whose
    ``AccountingStorageTRES`` does not track it: Elapsed × the GPUs the job saw, said once)."""
    global _said_no_gres
    found.started = local.started
    if found.cpu_s is None:
        found.cpu_s = local.cpu_s
    if found.gpus == 0 and local.gpus > 0:
        if not _said_no_gres:
            _said_no_gres = True
            log.warning(
                "Slurm's accounting has no gres/gpu for job %s although it saw %d GPU(s) "
                "(add gres/gpu to AccountingStorageTRES in slurm.conf); GPU-hours use the "
                "GPUs the jobs saw",
                found.job_id,
                local.gpus,
            )
        found.gpus = local.gpus
        found.gpu_s = found.wall_s * local.gpus


def _own_slurm_jobs(jobs: Mapping[str, JobCost]) -> dict[str, str]:
    """Record key -> Slurm job id, for the records of Slurm jobs of their own: a trial's
    (keyed by the job id) and its configuration's confirmation jobs (``confirm-<seed>-<id>``)."""
    return {
        k: c.job_id
        for k, c in jobs.items()
        if c.job_id and (k == c.job_id or k.startswith(CONFIRM_KEY_PREFIX))
    }


def settle_trial(storage: BaseStorage, study_id: int, trial_number: int) -> None:
    """Settle every Slurm job of a trial whose record is not from sacct yet (see above)."""
    jobs = job_records(storage.get_study_system_attrs(study_id)).get(trial_number, {})
    for job_key, c in jobs.items():
        if c.job_id and c.source != SOURCE_SACCT and job_key == c.job_id:
            settle_slurm_job(storage, study_id, trial_number, c.job_id)


def settle_confirmation(storage: BaseStorage, study_id: int, trial_number: int, seed: Any) -> None:
    """Settle a configuration's ended confirmation job on ``seed`` from sacct, when it was a
    Slurm job of its own (its record, under the configuration's trial, names the job id)."""
    prefix = confirm_job_key(seed, "")
    jobs = job_records(storage.get_study_system_attrs(study_id)).get(trial_number, {})
    for job_key, c in jobs.items():
        if job_key.startswith(prefix) and c.job_id and c.ended and c.source != SOURCE_SACCT:
            settle_slurm_job(storage, study_id, trial_number, c.job_id, job_key=job_key)


def slurm_job_ids(trial: FrozenTrial) -> list[str]:
    """Every Slurm job a trial ran: its own (launcher=slurm) and its ray.sub jobs."""
    ids = []
    own = trial.user_attrs.get(records.SLURM_JOB_ID)
    if own:
        ids.append(str(own))
    ids.extend(str(i) for i in trial.user_attrs.get(records.COMMAND_SLURM_JOB_IDS, []) or [])
    return ids


def refresh(
    study: optuna.Study, *, numbers: Iterable[int] | None = None, recheck: bool = False
) -> int:
    """Ask sacct again for every Slurm job whose record is not from sacct yet; how many changed.

    ``recheck``: also the records already from sacct, kept only where sacct still says the
    same. slurmdbd is eventually consistent: a record read the moment a job ended has been
    seen revised afterwards (CI: 4 s at the job's end, 2 s later), so a sweep re-reads its own
    jobs (``numbers``) once at its end, when the accounting has had time to settle.
    """
    study_id = study._study_id
    storage = study._storage
    have = job_records(storage.get_study_system_attrs(study_id))
    wanted = None if numbers is None else set(numbers)
    changed = 0
    for t in study.get_trials(deepcopy=False):
        if not t.state.is_finished() or (wanted is not None and t.number not in wanted):
            continue
        jobs = {i: i for i in slurm_job_ids(t)} | _own_slurm_jobs(have.get(t.number, {}))
        for job_key, job_id in jobs.items():
            old = have.get(t.number, {}).get(job_key)
            if old is not None and old.source == SOURCE_SACCT and not recheck:
                continue
            found = from_sacct(job_id, wait_s=0.0)
            if found is None:
                continue
            if old is not None:
                merge_local(found, old)
                if found.to_attr() == old.to_attr():
                    continue
                if old.source == SOURCE_SACCT:
                    log.info(
                        "Slurm's accounting revised job %s: %.0f -> %.0f GPU-seconds",
                        job_id,
                        old.gpu_s or 0.0,
                        found.gpu_s or 0.0,
                    )
            write(storage, study_id, t.number, job_key, found)
            changed += 1
    return changed


# ------------------------------------------------------------------------------ totals
# Names an objective may give to optimize a trial's cost (the job adds them to its return).
METRICS = ("gpu_hours", "cpu_hours")


@dataclass
class Totals:
    """Cost of a set of jobs: ended ones, and an estimate of the running ones so far."""

    gpu_s: float = 0.0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    queue_s: float = 0.0
    jobs: int = 0
    in_flight_gpu_s: float = 0.0
    in_flight_cpu_s: float = 0.0
    gpus_in_use: int = 0
    cores_in_use: float = 0.0  # estimated: the ended jobs' mean CPU use per wall second
    running_jobs: int = 0
    local_jobs: int = 0  # ended Slurm jobs whose record is not from the accounting (yet)
    sacct_jobs: int = 0  # ended jobs whose record is from sacct

    @property
    def source(self) -> str:
        """sacct, local or mixed: where the ended jobs' numbers come from."""
        if self.jobs and self.sacct_jobs == self.jobs:
            return SOURCE_SACCT
        return "mixed" if self.sacct_jobs else SOURCE_LOCAL

    @property
    def gpu_hours(self) -> float:
        return self.gpu_s / 3600.0

    @property
    def cpu_hours(self) -> float:
        return self.cpu_s / 3600.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "gpu_hours": round(self.gpu_hours, 6),
            "cpu_hours": round(self.cpu_hours, 6),
            "gpu_s": round(self.gpu_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "wall_s": round(self.wall_s, 3),
            "queue_s": round(self.queue_s, 3),
            "jobs": self.jobs,
            "jobs_without_accounting": self.local_jobs,
            "source": self.source,
            "in_flight_gpu_hours": round(self.in_flight_gpu_s / 3600.0, 6),
        }


def totals(jobs: Iterable[JobCost], now: float | None = None) -> Totals:
    """Sum of ended jobs; running ones as in flight (elapsed × GPUs; CPU at the ended jobs'
    mean CPU use per wall second, one core when none ended yet)."""
    now = time.time() if now is None else now
    out = Totals()
    running: list[JobCost] = []
    for j in jobs:
        if not j.ended:
            running.append(j)
            continue
        out.jobs += 1
        out.gpu_s += j.gpu_s
        out.cpu_s += j.cpu_s or 0.0
        out.wall_s += j.wall_s
        out.queue_s += j.queue_s
        out.local_jobs += j.source != SOURCE_SACCT and j.job_id is not None
        out.sacct_jobs += j.source == SOURCE_SACCT
    cpu_rate = out.cpu_s / out.wall_s if out.wall_s > 0 and out.cpu_s > 0 else 1.0
    for j in running:
        elapsed = max(0.0, now - j.started) if j.started else 0.0
        out.in_flight_gpu_s += elapsed * j.gpus
        out.in_flight_cpu_s += elapsed * cpu_rate
        out.gpus_in_use += j.gpus
        out.cores_in_use += cpu_rate
        out.running_jobs += 1
    return out


def combined(parts: Iterable[Totals]) -> Totals:
    """The sum of several totals (e.g. every trial's)."""
    out = Totals()
    for t in parts:
        for f in fields(Totals):
            setattr(out, f.name, getattr(out, f.name) + getattr(t, f.name))
    return out


def trial_totals(system_attrs: Mapping[str, Any]) -> dict[int, Totals]:
    """Each trial's cost, by trial number."""
    return {n: totals(jobs.values()) for n, jobs in job_records(system_attrs).items()}


def study_totals(system_attrs: Mapping[str, Any], now: float | None = None) -> Totals:
    return totals((j for jobs in job_records(system_attrs).values() for j in jobs.values()), now)


def metric(t: Totals, name: str) -> float:
    """A trial's cost metric (one of METRICS) from its totals."""
    return t.gpu_hours if name == "gpu_hours" else t.cpu_hours
