"""A trial's command submitted through NeMo RL's ``ray.sub``: sbatch line, environment, verdict.

``ray.sub`` (NeMo RL's multi-node launcher) is an sbatch script configured by environment
variables: it runs ``$COMMAND`` (the driver) inside ``$CONTAINER`` with ``$MOUNTS``, writes the
driver's output to ``$BASE_LOG_DIR/<job id>-logs/ray-driver.log`` (``<job id>-<restart count>-logs``
after a Slurm requeue), checks ``GPUS_PER_NODE`` against the node's GPUs and exits with the
driver's exit code, so ``sbatch --wait`` reports the trial's outcome. This module turns one
``command.ray_sub`` section into that sbatch line and environment, with every fact written once
(GPUs per node feeds ``--gres``, ``GPUS_PER_NODE`` and the command's ``cluster.gpus_per_node``),
and reads a finished job back: its id and the tail of its driver log (Slurm is asked about the
job in ``nemo_rl_hpo/slurm.py``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from nemo_rl_hpo.command._spec import CommandConfigError, RaySubSpec, slurm_time_seconds

DRIVER_LOG = "ray-driver.log"
# The Ray head's container output (srun -o): ray.sub's worker wait runs there, before the driver
HEAD_LOG = "ray-head.log"
# ray.sub's line when not every worker unit registered within its 30 minutes (no driver then)
WORKER_TIMEOUT = "Timed out waiting for all workers to connect"
# sbatch's "Submitted batch job N", or "N" / "N;cluster" with --parsable
_SUBMITTED = re.compile(rb"^(?:Submitted batch job )?(\d+)(?:;\S*)?\s*$", re.M)


def must_save_by(spec: RaySubSpec) -> str | None:
    """NeMo RL's ``checkpoint_must_save_by`` ('DD:HH:MM:SS') for the job's wall time, or None.

    NeMo RL's TimeoutChecker counts from the start of its training loop and saves once the
    elapsed time plus one average step would pass this, then stops; the margin must also cover
    what the job spends before that loop (Ray start-up, model loading) and the save itself.
    """
    if spec.time_limit is None or not spec.must_save_by_key:
        return None
    limit = slurm_time_seconds(spec.time_limit, "command.ray_sub.time_limit")
    left = max(1, int(limit - spec.save_margin_s))
    days, rest = divmod(left, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{days:02d}:{hours:02d}:{minutes:02d}:{seconds:02d}"


def gpu_nodes(spec: RaySubSpec) -> int:
    """The nodes whose GPUs Ray schedules on: all of them, or all but the dedicated head.

    ray.sub (``DEDICATED_RAY_HEAD=1``) registers ``GPUS_PER_NODE`` worker units on every other
    node only; NeMo RL asks Ray for ``cluster.num_nodes x cluster.gpus_per_node`` GPUs and
    fails with "Maximum number of retries reached" when that is more (its docs/cluster.md).
    """
    return spec.nodes - 1 if spec.dedicated_head else spec.nodes


def overrides(spec: RaySubSpec) -> dict[str, object]:
    """The command keys ``ray_sub`` decides: node and GPU counts, the save-by time."""
    out: dict[str, object] = {}
    if spec.nodes_key:
        out[spec.nodes_key] = gpu_nodes(spec)
    if spec.gpus_per_node_key:
        out[spec.gpus_per_node_key] = spec.gpus_per_node
    deadline = must_save_by(spec)
    if deadline is not None and spec.must_save_by_key:
        out[spec.must_save_by_key] = deadline
    return out


def mounts(spec: RaySubSpec, cwd: Path, sweep_dir: Path, job_dir: Path) -> str:
    """``MOUNTS``: the given value, else the command's working dir and the sweep dir.

    The driver writes TensorBoard files and checkpoints under the job dir, which the sweeper
    reads on the host: a job dir that no mount makes visible at the same path would be lost
    inside the container, so that is an error naming the key.
    """
    if spec.mounts is None:
        dirs: list[Path] = []
        for d in (cwd.absolute(), sweep_dir.absolute()):
            if not any(d == p or p in d.parents for p in dirs):
                dirs = [p for p in dirs if d not in p.parents] + [d]
        return ",".join(f"{d}:{d}" for d in dirs)
    value = str(spec.mounts)
    same_path = []
    for item in value.split(","):
        parts = item.strip().split(":")
        if len(parts) >= 2 and parts[0] == parts[1]:
            same_path.append(Path(parts[0]))
    job = job_dir.absolute()
    if not any(job == p or p in job.parents for p in same_path):
        raise CommandConfigError(
            f"command.ray_sub.mounts={value!r} does not mount the trial's job dir {job} at the "
            "same path, so the driver's TensorBoard files and checkpoints would stay inside the "
            f"container; add '{sweep_dir.absolute()}:{sweep_dir.absolute()}' (or leave mounts "
            "null for the working dir and the sweep dir)."
        )
    return value


def sbatch_argv(spec: RaySubSpec, cwd: Path, job_dir: Path, job_name: str) -> list[str]:
    """``sbatch --wait ... ray.sub``: blocks until the job ends and exits with its exit code."""
    script = Path(os.path.expanduser(spec.script))
    if not script.is_absolute():
        script = cwd / script
    argv = [
        "sbatch",
        "--wait",
        f"--job-name={job_name}",  # distinct per trial: ray.sub has --dependency=singleton
        f"--nodes={spec.nodes}",
        f"--gres=gpu:{spec.gpus_per_node}",
        f"--output={job_dir}/slurm-%j.out",  # ray.sub's own trace; the driver's is ray-driver.log
    ]
    if spec.time_limit is not None:
        argv.append(f"--time={spec.time_limit}")
    argv.extend(str(a) for a in spec.sbatch_args)
    argv.append(str(script))
    return argv


def environment(spec: RaySubSpec, driver: str, job_dir: Path, mounts_value: str) -> dict[str, str]:
    """ray.sub's variables; sbatch exports the submitting environment to the job."""
    env = {str(k): str(v) for k, v in spec.env.items()}
    env.update(
        {
            "COMMAND": driver,
            "CONTAINER": str(spec.container),
            "MOUNTS": mounts_value,
            "BASE_LOG_DIR": str(job_dir),
            "GPUS_PER_NODE": str(spec.gpus_per_node),
            # always written: a DEDICATED_RAY_HEAD exported in the submitting shell would
            # otherwise reach ray.sub and disagree with the command's cluster.num_nodes
            "DEDICATED_RAY_HEAD": "1" if spec.dedicated_head else "0",
        }
    )
    return env


def submitted_job_id(stdout_file: Path, offset: int = 0) -> str | None:
    """The job id sbatch printed after ``offset`` in its stdout (plain or ``--parsable``)."""
    try:
        with open(stdout_file, "rb") as f:
            f.seek(offset)
            found = _SUBMITTED.findall(f.read())
    except OSError:
        return None
    return found[-1].decode() if found else None


def driver_logs(job_dir: Path, job_id: str) -> list[Path]:
    """``<job id>-logs/ray-driver.log`` and any ``<job id>-<restart>-logs/ray-driver.log``."""
    found = [p for p in job_dir.glob(f"{job_id}-*logs/{DRIVER_LOG}") if p.is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime)


def contains(path: Path, text: str) -> bool:
    try:
        with open(path, "rb") as f:
            return text.encode() in f.read()
    except OSError:
        return False


def tail(path: Path, lines: int, max_chars: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    out = "\n".join(text.rstrip().splitlines()[-lines:])
    return "..." + out[-max_chars:] if len(out) > max_chars else out


# ray.sub's phase line in the head's log when the driver is launched: seconds since job start
_DRIVER_LAUNCH = re.compile(
    r"^\[NRL_PHASE\]\[[^\]]*\]\[\+(\d+)s\] head: cluster ready, launching driver", re.M
)


def startup_seconds(job_dir: Path, job_id: str) -> int | None:
    """Seconds from the job's start to its driver's launch, from ray.sub's ``[NRL_PHASE]`` line
    in the head's log (container start, Ray, the wait for every worker); None if not found."""
    for head in sorted(job_dir.glob(f"{job_id}-*logs/{HEAD_LOG}")):
        found = _DRIVER_LAUNCH.findall(tail(head, 400, 1 << 17))
        if found:
            return int(found[-1])
    return None


def startup_failure(job_dir: Path, job_id: str) -> str | None:
    """Why the job's driver never started, when ray.sub says so; None otherwise.

    ray.sub starts the driver only once every worker unit has registered with Ray, and gives
    up after 30 minutes (its ``WORKER_DEADLINE``), writing :data:`WORKER_TIMEOUT` to the head's
    log and exiting 1 without a ``ray-driver.log``. That wait counts in the job's wall time.
    """
    if driver_logs(job_dir, job_id):
        return None
    for head in sorted(job_dir.glob(f"{job_id}-*logs/{HEAD_LOG}")):
        found = [ln for ln in tail(head, 200, 1 << 16).splitlines() if WORKER_TIMEOUT in ln]
        if found:
            line = found[-1].strip()
            return (
                f"the driver never started: ray.sub gave up waiting for Ray's workers to "
                f"register ({line[line.index(WORKER_TIMEOUT) :]}, in {head}); a node failed to "
                f"start its Ray worker: see the ray-worker-*.log files next to it"
            )
    return None


def failure_detail(job_dir: Path, job_id: str | None, lines: int, max_chars: int) -> str:
    """What to quote for a failed job: the driver log's tail, else why the driver never
    started (ray.sub's start-up timeout), else ray.sub's own output."""
    if job_id is None:
        return ""
    for log_file in reversed(driver_logs(job_dir, job_id)):
        text = tail(log_file, lines, max_chars)
        if text:
            return f"last lines of {log_file}:\n{text}"
    startup = startup_failure(job_dir, job_id)
    if startup is not None:
        return startup
    out = job_dir / f"slurm-{job_id}.out"
    text = tail(out, lines, max_chars)
    if text:
        return f"no {DRIVER_LOG} (the driver never started); last lines of {out}:\n{text}"
    return f"no {DRIVER_LOG} and no {out}"
