"""What the project records in an Optuna study, in one place: every attribute key, failing a
trial with a reason, and counting trials by state.

The study is the only state a sweep shares between its processes (the sweeper, the jobs, a
resumed or a cooperating sweeper, ``nemo-rl-hpo status``), so its keys are a contract: each key
below says who writes it and who reads it. Plain Optuna studies have none of them; every reader
falls back to Optuna's own fields.

Kept free of an optuna import at module level: ``nemo_rl_hpo.trial`` (imported by every job,
also outside sweeps) reads its keys from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

# ------------------------------------------------------------------ study user attributes
# Written once per run by the sweeper (hydra_plugins/nemo_rl_hpo/_study.py); read by the report
# (report/trials.SweepInfo: reproduce commands, objective names) and the CLI (best, status).
STUDY_COMMAND = "nemo_rl_hpo:command"  # ["python", "train.py"]: the app, relative to STUDY_CWD
STUDY_CWD = "nemo_rl_hpo:cwd"  # where the sweep was started
STUDY_BASE_OVERRIDES = "nemo_rl_hpo:base_overrides"  # fixed overrides of every trial (masked)
STUDY_OBJECTIVES = "nemo_rl_hpo:objectives"  # objective names, in direction order
STUDY_SWEEP_DIR = "nemo_rl_hpo:sweep_dir"  # hydra.sweep.dir, absolute
STUDY_SAMPLER = "nemo_rl_hpo:sampler"  # the sampler's class name
STUDY_KIND = "nemo_rl_hpo:kind"  # KIND_OPTUNA or KIND_PBT
STUDY_STORAGE = "nemo_rl_hpo:storage"  # the storage URL, password masked
STUDY_RESUME_COMMAND = "nemo_rl_hpo:resume_command"  # the shell line that resumes the sweep
# Written by the sweeper when repeats > 1 ({"n", "seed_key", "aggregate"}); read
# by the report, `nemo-rl-hpo best` and `status` (a trial's value aggregates its seeds).
STUDY_REPEATS = "nemo_rl_hpo:repeats"
# Written by the sweeper with hydra/sweeper/fidelity (settings, step_key, rungs); read by the
# report, `best` and `status`.
STUDY_FIDELITY = "nemo_rl_hpo:fidelity"
# Written by the confirmation stage (sweep/confirm.py) when it starts: its settings, the candidate
# trial numbers and a note (fewer candidates than top_k, ties); read by confirm.read_confirmation
# (best, status, the results JSON, the report, the end-of-sweep summary).
STUDY_CONFIRM = "nemo_rl_hpo:confirm"
# Written by each confirmation job (sweep/confirm.py, called from sweep/job.py) as a *study* user
# attribute, never on a trial (no sampler, pruner or budget reads study attributes):
# confirm:<trial>:<seed>:job where it runs (job_host, job_pid, slurm_job_id; read by the stage's
# resume, liveness.job_alive), confirm:<trial>:<seed> = {seed, state, value, metrics, reason}.
CONFIRM_PREFIX = "confirm:"
# Written and read by sweep/warm_start.py: a study already warm-started from <name>.
STUDY_WARM_STARTED_PREFIX = "nemo_rl_hpo:warm_started:"
# Written and read by the PBT proposer (pbt/_proposer.py): the seed resumes repeat decisions.
STUDY_PBT_SEED = "pbt:seed"
# Written by the PBT sweeper at the end (the scheduler's results); read by people.
STUDY_PBT_RESULTS = "pbt:results"

# Written by the sweeper at each start (its budget: {"gpu_hours", "cpu_hours"}, None
# when unset); read by `nemo-rl-hpo status` (spent / in flight / remaining).
STUDY_BUDGET = "nemo_rl_hpo:budget"

KIND_OPTUNA = "optuna"
KIND_PBT = "pbt"

# ----------------------------------------------------------------- study system attributes
# What each job cost: COST_PREFIX + "<trial number>:<job key>" -> {"gpus", "wall_s", "queue_s",
# "gpu_s", "cpu_s" (where measured), "source": "sacct" | "local", "started", "ended", "job_id"}
# (sweep/cost.py). The job key is the Slurm job id where the job ran under Slurm. Written by the
# job at its start and end (sweep/job.py, local), by the command runner for each ray.sub job
# (command/_attempt.py, sacct), by the sweeper after a Slurm job ended and by `status
# --refresh-cost` (sacct). Read through sweep/cost.py by the budget, status, the report and the
# results files. On the study, not the trial: Slurm's accounting arrives after the trial ended.
COST_PREFIX = "nemo_rl_hpo:cost:"

# ----------------------------------------------------------------- trial system attributes
# Written and read by the trial loop (sweep/core.py) only.
SYS_OWNER = "nemo_rl_hpo:owner"  # {"host", "pid", "token"} of the sweeper that launched a trial
SYS_HEARTBEAT = "nemo_rl_hpo:heartbeat"  # unix time of the owner's last sign of life
# A trial that never ran and uses no budget (not counted): asked after the global budget was
# spent (the Optuna proposer), or orphaned before its launch (the loop's recover: its sweeper
# was killed between asking for it and launching it).
SYS_OVERFLOW = "nemo_rl_hpo:overflow"
# Written by the job when a segment of a multi-fidelity trial stops at its rung (sweep/job.py)
# ({"step", "since"}); cleared by the fidelity proposer when it promotes the trial
# (nemo_rl_hpo/fidelity/). Read by the loop: a paused trial stays RUNNING (one configuration,
# one Optuna trial) but is neither an orphan nor a job that died without telling.
SYS_PAUSED = "nemo_rl_hpo:paused"

# ------------------------------------------------------------------ trial user attributes
# Written by the loop when it launches a trial; read by report/trials.py (reproduce command).
OVERRIDES = "overrides"  # the trial's overrides (hydra.* left out)
# Written by fail_trial below (loop, job, proposers); read by the loop's failure summary, the
# progress line, the results files and `nemo-rl-hpo export`.
FAIL_REASON = "fail_reason"
FAIL_REASON_MAX_CHARS = 2000
# Written by fail_trial when the loop fails a trial whose sweeper died; read by PBT's resume
# (an orphaned round is re-issued, not replayed as a failure).
ORPHANED = "orphaned"
# Not written in this repository; an app or tool that marks a trial interrupted (preempted)
# keeps it out of PBT's replayed records, like an orphan.
INTERRUPTED = "interrupted"
# Written by the Optuna proposer when it enqueues a failed configuration again; read by
# counted_trials (a retried failure does not use budget) and the retry rule itself.
RETRY_OF = "retry_of"  # number of the failed trial this one retries
ATTEMPT = "attempt"  # 1, 2, ...: which retry this is
# Written by the job when it starts (sweep/job.py); read by the loop's re-attach (is the job
# alive?), the launchers' failure reason (slurm.py), `nemo-rl-hpo status/export`, the results.
JOB_HOST = "job_host"
JOB_PID = "job_pid"
JOB_DIR = "job_dir"
SLURM_JOB_ID = "slurm_job_id"  # ARRAYID_TASK for array tasks
NODE = "node"
SLURM_RESTART_COUNT = "slurm_restart_count"
# Written by the Hydra adapter (hydra_plugins/nemo_rl_hpo/_jobs.py) each time Slurm ended a
# trial's job before it started and the job was submitted again: a list of {job_id, state,
# reason}, oldest first (the job that ran records its own SLURM_JOB_ID). Read by people, export.
LOST_JOBS = "lost_jobs"
DEVICES = "devices"  # the GPUs the job saw (its CUDA_VISIBLE_DEVICES, a list; [] hidden)
# Written by each seed job of a repeated configuration (sweep/repeats.py): repeat:<i> its end
# {seed, state, values, metrics, reason}, repeat:<i>:curves, :reports (prune metric), :job.
# Read by sweep/job.end (the last seed tells the aggregate), the report, best, status.
REPEAT_PREFIX = "repeat:"
# Written by the job through nemo_rl_hpo.trial; read by the report, the CLI and job.on_job_end.
CURVES = "curves"  # {metric: {step: value}} of every reported metric
LAST_STEP = "last_step"
PRUNED_AT_STEP = "pruned_at_step"  # set when should_prune() said yes: the job ends PRUNED
METRIC_PREFIX = "metric:"  # metric:<name>: the numeric metrics the task returned
# Written by sweep/warm_start.py; WARM_START_PRIOR is read by counted_trials (not our run).
WARM_START_FROM = "warm_start_from"  # "<study>#<number>" of the configuration's origin
WARM_START_PRIOR = "warm_start_prior"  # observation copied from an earlier study
# Written by the external-command trial (command/_runner.py); read by people and the report.
COMMAND_ARGV = "command_argv"
COMMAND_OBJECTIVE = "command_objective"
COMMAND_TAGS = "command_tags"
COMMAND_LOG_DIR = "command_log_dir"
COMMAND_PID = "command_pid"
COMMAND_STOPPED = "command_stopped"  # "pruned" or "timeout"
COMMAND_DRIVER = "command_driver"  # ray.sub: the driver line handed over as $COMMAND
COMMAND_SLURM_JOB_IDS = "command_slurm_job_ids"  # ray.sub: every job the trial submitted
# ray.sub: one {job_id, reason, step, time} per resubmission after the job hit its wall time
COMMAND_RESTARTS = "command_restarts"
# ray.sub: one {job_id, startup_s} per job whose driver started: seconds from the job's start to
# the driver's launch (ray.sub's "[NRL_PHASE][...][+Ns] head: cluster ready" line), outside NeMo
# RL's save-by clock; what command.ray_sub.save_margin_s must cover (with loading and the save)
COMMAND_STARTUP = "command_startup"
# Multi-fidelity trials (hydra/sweeper/fidelity=asha|hyperband, nemo_rl_hpo/fidelity/):
# FIDELITY_BRACKET (int) and FIDELITY_TARGET (the step the running segment stops at) written by
# the fidelity proposer at launch, read by its re-attach and the scheduler; FIDELITY_RUNGS, one
# {step, value, job, started, ended} per segment, appended by the job when the segment ends
# (sweep/job.py); FIDELITY_PAUSED_S, seconds spent paused, added by the proposer on promotion;
# FIDELITY_END ("max_resource" | "not promoted" | "stopped") written when the trial is final.
# Read by the scheduler, `best`, `status`, the report and the results JSON.
FIDELITY_BRACKET = "fidelity:bracket"
FIDELITY_TARGET = "fidelity:target"
FIDELITY_RUNGS = "fidelity:rungs"
FIDELITY_PAUSED_S = "fidelity:paused_s"
FIDELITY_END = "fidelity:end"
FIDELITY_CHECKPOINT = "fidelity:checkpoint_dir"  # where the trial's segments checkpoint
# Written by the fidelity proposer when it promotes: the claim round of the pause it promoted
# from (fidelity/_claims.py); read when an orphaned segment is paused again.
FIDELITY_ROUND = "fidelity:round"
# Written by the PBT proposer (from pbt.Job.user_attrs); read by PBT's resume
# (RoundRecord.from_user_attrs), the report's PBT pages, `nemo-rl-hpo export`.
PBT_PREFIX = "pbt:"
PBT_MEMBER = "pbt:member"  # int: the member (population slot) that ran the round
PBT_ROUND = "pbt:round"  # int: 0-based round; it trains steps [round, round+1) * interval
PBT_ATTEMPT = "pbt:attempt"  # int: 0 for the first run of this member round, 1.. for retries
PBT_PARENT = "pbt:parent"  # int | None: member whose checkpoint and params it copied (exploit)
PBT_PARAMS = "pbt:params"  # dict: the hyperparameters the round trained with
PBT_START_CHECKPOINT = "pbt:start_checkpoint"  # str | None: checkpoint the round started from
PBT_CHECKPOINT = "pbt:checkpoint"  # str: checkpoint the round saved


# ---------------------------------------------------------------------------- functions
def fail_trial(
    study: optuna.Study, trial: FrozenTrial | optuna.Trial, reason: str, *, orphaned: bool = False
) -> bool:
    """Record ``trial`` FAIL with one line saying why; False when it had already finished.

    Every place that decides a trial failed (the job, the loop, a proposer) goes through here,
    so the reason is always where the readers above look for it.
    """
    from optuna.trial import TrialState

    storage = study._storage
    trial_id = trial._trial_id
    if storage.get_trial(trial_id).state.is_finished():
        return False
    try:
        storage.set_trial_user_attr(trial_id, FAIL_REASON, reason[:FAIL_REASON_MAX_CHARS])
        if orphaned:
            storage.set_trial_user_attr(trial_id, ORPHANED, True)
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    except Exception:  # finished meanwhile (the job told its own result first)
        if storage.get_trial(trial_id).state.is_finished():
            return False
        raise
    return True


def is_paused(trial: FrozenTrial) -> bool:
    """A RUNNING trial between two segments (its job ended at a rung; see SYS_PAUSED)."""
    return bool(trial.system_attrs.get(SYS_PAUSED))


def repeat_key(index: int, what: str | None = None) -> str:
    """``repeat:<index>`` (a seed's end record) or ``repeat:<index>:<what>`` (its curves, ...)."""
    return f"{REPEAT_PREFIX}{index}" + (f":{what}" if what else "")


def fail_reason(trial: FrozenTrial, default: str = "?") -> str:
    return str(trial.user_attrs.get(FAIL_REASON, default))


def count_states(trials: Iterable[FrozenTrial]) -> dict[str, int]:
    """Trials per state, every state named (zeros included, in Optuna's order).

    Trials that never ran (asked after the budget was spent, or orphaned before their launch,
    see SYS_OVERFLOW) are bookkeeping of the loop, not runs: they are not counted.
    """
    from optuna.trial import TrialState

    counts = {s.name: 0 for s in TrialState}
    for t in trials:
        if t.system_attrs.get(SYS_OVERFLOW):
            continue
        counts[t.state.name] += 1
    return counts


def counts_line(counts: dict[str, int]) -> str:
    """``8 COMPLETE, 1 FAIL``: the non-zero counts, for a log line."""
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items()) if v)
