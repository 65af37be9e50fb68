"""A trial's command submitted through NeMo RL's ``ray.sub``: sbatch line, environment, verdict.

``ray.sub`` (NeMo RL's multi-node launcher) is an sbatch script configured by environment
variables: it runs ``$COMMAND`` (the driver) inside ``$CONTAINER`` with ``$MOUNTS``, writes the
driver's output to ``$BASE_LOG_DIR/<job id>-logs/ray-driver.log`` (``<job id>-<restart count>-logs``
after a Slurm requeue), checks ``GPUS_PER_NODE`` against the node's GPUs and exits with the
driver's exit code, so ``sbatch --wait`` reports the trial's outcome. This module turns one
``command.ray_sub`` section into that sbatch line and environment, with every fact written once
(GPUs per node feeds ``--gres``, ``GPUS_PER_NODE`` and the command's ``cluster.gpus_per_node``),
and reads a finished job back: its id, its Slurm state, the tail of its driver log.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from nemo_rl_hpo.command._spec import CommandConfigError, RaySubSpec, slurm_time_seconds

log = logging.getLogger(__name__)

DRIVER_LOG = "ray-driver.log"
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


def overrides(spec: RaySubSpec) -> dict[str, object]:
    """The command keys ``ray_sub`` decides: node and GPU counts, the save-by time."""
    out: dict[str, object] = {}
    if spec.nodes_key:
        out[spec.nodes_key] = spec.nodes
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


def _sacct(job_id: str, fields: str) -> str | None:
    """sacct's parsable lines for the job's allocation (-X); None when sacct cannot answer."""
    try:
        return subprocess.run(
            ["sacct", "-n", "-X", "-P", "-o", fields, "-j", job_id],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None


def job_state(job_id: str, timeout_s: float = 30.0) -> str | None:
    """The job's state in sacct (COMPLETED, FAILED, TIMEOUT, CANCELLED, ...), None if unknown.

    sacct learns of a job's end a moment after ``sbatch --wait`` returns; poll briefly.
    """
    deadline = time.monotonic() + timeout_s
    state: str | None = None
    while True:
        out = _sacct(job_id, "State")
        if out is None:
            return None
        lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
        state = lines[-1].split()[0] if lines else None  # "CANCELLED by 0" -> CANCELLED
        if state not in (None, "RUNNING", "PENDING", "COMPLETING", "REQUEUED", "RESIZING"):
            return state
        if time.monotonic() > deadline:
            return state
        time.sleep(0.5)


_FINAL = (
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
)


def finished_exit_code(job_id: str) -> int | None:
    """The job's exit code once it has left the queue, as ``sbatch --wait`` would return it.

    ``sbatch --wait`` polls with a growing interval (up to ~30 s after the job ended, measured
    on the local Slurm); asking squeue/sacct directly notices the end within one poll. None
    while the job is still queued or running (or Slurm cannot say yet).
    """
    try:
        queued = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%T"],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
        if queued.returncode == 0 and queued.stdout.strip():
            return None
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = _sacct(job_id, "State,ExitCode")
    if out is None:
        return None
    lines = [ln for ln in out.splitlines() if ln.strip()]
    if not lines:
        return None
    state, _, code = lines[-1].partition("|")
    state = state.split()[0] if state.strip() else ""
    if state not in _FINAL:
        return None
    try:
        rc = int(code.split(":")[0])
    except ValueError:
        rc = 1
    return rc if (rc != 0 or state == "COMPLETED") else 1


def cancel(job_id: str | None, job_name: str, wait_s: float) -> None:
    """scancel the trial's job (by id, else by its unique name) and wait until it has left
    the queue, so its processes are gone when the trial is recorded stopped."""
    if shutil.which("scancel") is None:
        log.warning("scancel is not on PATH: the trial's Slurm job keeps running")
        return
    target = [job_id] if job_id else [f"--name={job_name}", f"--user={_user()}"]
    subprocess.run(["scancel", *target], capture_output=True, text=True, check=False, timeout=30)
    deadline = time.monotonic() + wait_s
    query = ["squeue", "-h", "-o", "%i %T"] + (
        ["-j", job_id] if job_id else [f"--name={job_name}", f"--user={_user()}"]
    )
    while time.monotonic() < deadline:
        try:
            out = subprocess.run(query, capture_output=True, text=True, timeout=15, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return
        if out.returncode != 0 or not out.stdout.strip():
            return
        time.sleep(0.5)
    log.warning("Slurm job %s still in the queue %.0f s after scancel", job_id or job_name, wait_s)


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


def failure_detail(job_dir: Path, job_id: str | None, lines: int, max_chars: int) -> str:
    """What to quote for a failed job: the driver log's tail, else ray.sub's own output."""
    if job_id is None:
        return ""
    for log_file in reversed(driver_logs(job_dir, job_id)):
        text = tail(log_file, lines, max_chars)
        if text:
            return f"last lines of {log_file}:\n{text}"
    out = job_dir / f"slurm-{job_id}.out"
    text = tail(out, lines, max_chars)
    if text:
        return f"no {DRIVER_LOG} (the driver never started); last lines of {out}:\n{text}"
    return f"no {DRIVER_LOG} and no {out}"


def _user() -> str:
    import getpass

    return getpass.getuser()
