"""One run of an external command: its own process group, or one ray.sub job behind sbatch.

Stopping a run stops everything it started (SIGTERM to the group, SIGKILL after the grace
period; a ray.sub job is cancelled first); a failed run's message carries the tail of stderr or
of ray-driver.log, which the sweeper keeps as the trial's fail reason.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nemo_rl_hpo import slurm, trial
from nemo_rl_hpo.command import _raysub
from nemo_rl_hpo.command._spec import CommandConfigError, CommandSpec
from nemo_rl_hpo.sweep import cost, records

log = logging.getLogger(__name__)

STDOUT_FILE = "command.stdout"
STDERR_FILE = "command.stderr"
TAIL_LINES = 20
_TAIL_CHARS = 1500  # the sweeper keeps 2000 characters of a fail reason


class CommandError(RuntimeError):
    """The command did not produce a result."""


class CommandFailed(CommandError):
    """The command exited non-zero, or exited without writing the objective."""


class CommandTimeout(CommandError):
    """The command ran past ``timeout_s`` and was stopped."""


class _Attempt:
    """One run of the command: a process group, or one ray.sub job behind ``sbatch --wait``."""

    def __init__(
        self,
        spec: CommandSpec,
        job: Path,
        argv: list[str],
        cwd: Path,
        env: Mapping[str, str],
        values: Mapping[str, str],
        job_ids: list[str],
    ) -> None:
        self.spec, self.job, self.argv, self.cwd, self.env = spec, job, argv, cwd, dict(env)
        self.values = values
        self.job_ids = job_ids  # every attempt's Slurm job id, recorded on the trial
        self.proc: subprocess.Popen[Any] | None = None
        self._out_offset = 0
        self._job_id: str | None = None
        self._last_queue_check = 0.0
        self._submitted_at = 0.0
        self._cost_recorded = False

    @property
    def what(self) -> str:
        if self.spec.ray_sub is not None:
            return f"Slurm job {self.job_id or '(not yet submitted)'}"
        return f"process group {self.proc.pid if self.proc else '?'}"

    @property
    def job_id(self) -> str | None:
        """The ray.sub job's id, from sbatch's "Submitted batch job N" line."""
        if self._job_id is None and self.spec.ray_sub is not None:
            self._job_id = _raysub.submitted_job_id(self.job / STDOUT_FILE, self._out_offset)
            if self._job_id is not None:
                self.job_ids.append(self._job_id)
                trial.set_user_attr(records.COMMAND_SLURM_JOB_IDS, list(self.job_ids))
                self._submitted_at = time.time()
                running = cost.JobCost(
                    gpus=self._gpus(), started=self._submitted_at, job_id=self._job_id
                )
                trial.record_job_cost(self._job_id, running.to_attr())
        return self._job_id

    def _gpus(self) -> int:
        rs = self.spec.ray_sub
        return rs.nodes * rs.gpus_per_node if rs is not None else 0

    def record_cost(self) -> None:
        """The ray.sub job's cost once it ended: from sacct (every run of a requeued job), or
        (no accounting) sbatch's wall time since submission × the GPUs asked, marked local."""
        job_id = self.job_id
        if self.spec.ray_sub is None or job_id is None or self._cost_recorded:
            return
        self._cost_recorded = True
        wall = time.time() - self._submitted_at
        gpus = self._gpus()
        asked = cost.JobCost(gpus=gpus, wall_s=wall, gpu_s=wall * gpus, ended=True, job_id=job_id)
        asked.started = self._submitted_at
        found = cost.from_sacct(job_id)
        if found is None:
            found = asked
        else:
            cost.merge_local(found, asked)
        trial.record_job_cost(job_id, found.to_attr())

    def start(self) -> None:
        out_path = self.job / STDOUT_FILE
        self._out_offset = out_path.stat().st_size if out_path.exists() else 0
        with open(out_path, "ab") as out, open(self.job / STDERR_FILE, "ab") as err:
            try:
                self.proc = subprocess.Popen(
                    self.argv,
                    cwd=self.cwd,
                    env=self.env,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
            except OSError as e:
                raise CommandFailed(
                    f"cannot start {self.argv[0]!r} ({e}); check command.command and "
                    f"command.cwd={self.cwd}."
                ) from None
        trial.set_user_attr(records.COMMAND_PID, self.proc.pid)

    def wait(self, timeout: float) -> int | None:
        """The exit code once the run has ended, else None after ``timeout`` seconds.

        A ray.sub job's end is read from Slurm directly: ``sbatch --wait`` may notice it only
        half a minute later, and a trial's slot (and the next job's singleton slot) would idle.
        """
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        if self.spec.ray_sub is None or self.job_id is None:
            return None
        now = time.monotonic()
        if now - self._last_queue_check < max(timeout, 2.0):
            return None
        self._last_queue_check = now
        rc = slurm.exit_code(self.job_id)
        if rc is None:
            return None
        terminate_group(self.proc, self.spec.grace_period_s)  # only sbatch, still waiting
        return rc

    def stop(self) -> None:
        """Stop the run (pruned, timed out): its Slurm job first, then the local group."""
        assert self.proc is not None
        rs = self.spec.ray_sub
        if rs is not None:
            # Killing `sbatch --wait` alone would leave the job running.
            slurm.cancel(self.job_id, self.values["job_name"], rs.poll_cancel_s)
        _run_stop_command(self.spec, self.values, self.cwd, self.env)
        terminate_group(self.proc, self.spec.grace_period_s)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        self.record_cost()

    def wall_time_stop(self, rc: int | None) -> str | None:
        """Why the run stopped at its wall time, or None when it did not (ray.sub only).

        Saved before it: NeMo RL exits 0 after its timeout-triggered save and prints
        ``timeout_marker``. Killed at it: Slurm's state is TIMEOUT; the run resumes from its
        last periodic save. A job whose driver never started (its wall time spent in ray.sub's
        start-up) is not resubmitted: it fails with that reason.
        """
        rs = self.spec.ray_sub
        if rs is None or self.job_id is None:
            return None
        logs = _raysub.driver_logs(self.job, self.job_id)
        if not logs:  # the driver never started (ray.sub's start-up): nothing to resume
            return None
        if (
            rc == 0
            and rs.timeout_marker
            and any(_raysub.contains(p, rs.timeout_marker) for p in logs)
        ):
            return "saved before its wall time"
        if rc != 0 and slurm.final_state(self.job_id) == "TIMEOUT":
            return "was killed at its wall time (TIMEOUT)"
        return None

    def failure_message(self, rc: int) -> str:
        how = f"was killed by signal {-rc}" if rc < 0 else f"exited with code {rc}"
        if self.spec.ray_sub is None:
            return (
                f"the command {how}; last lines of its stderr ({self.job / STDERR_FILE}):\n"
                + stderr_tail(self.job / STDERR_FILE)
            )
        job_id = self.job_id
        if job_id is None:
            return (
                f"sbatch {how} before submitting a job; last lines of its stderr "
                f"({self.job / STDERR_FILE}):\n" + stderr_tail(self.job / STDERR_FILE)
            )
        state = slurm.final_state(job_id) or "?"
        return (
            f"the ray.sub job {job_id} ended {state} (sbatch --wait {how}); "
            + _raysub.failure_detail(self.job, job_id, TAIL_LINES, _TAIL_CHARS)
        )


def terminate_group(proc: subprocess.Popen[Any], grace_period_s: float) -> None:
    """SIGTERM the process group of ``proc``, SIGKILL it after ``grace_period_s``; reap ``proc``."""
    pgid = proc.pid  # start_new_session=True: the child leads its own group
    _killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_period_s
    while time.monotonic() < deadline:
        if proc.poll() is not None and not _group_alive(pgid):
            return
        time.sleep(0.05)
    _killpg(pgid, signal.SIGKILL)
    proc.wait()


def _killpg(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:  # the whole group is gone already
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member changed identity; it still exists
        return True
    return True


def stderr_tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a file (at most ~1500 characters), or a note if it is empty."""
    if not path.is_file():
        return "(no stderr file)"
    return _raysub.tail(path, lines, _TAIL_CHARS) or "(stderr is empty)"


def _run_stop_command(
    spec: CommandSpec, values: Mapping[str, str], cwd: Path, env: Mapping[str, str]
) -> None:
    if not spec.stop_command:
        return
    argv = [_fmt(a, values, "stop_command") for a in spec.stop_command]
    try:
        done = subprocess.run(
            argv,
            cwd=cwd,
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=max(spec.grace_period_s, 10.0),
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("command.stop_command %s failed: %s", shlex.join(argv), e)
        return
    if done.returncode != 0:
        log.warning(
            "command.stop_command %s exited %d: %s",
            shlex.join(argv),
            done.returncode,
            done.stderr.strip()[-500:],
        )


def _fmt(template: str, values: Mapping[str, str], where: str) -> str:
    try:
        return template.format_map(values)
    except KeyError as e:
        raise CommandConfigError(
            f"command.{where}: unknown placeholder {{{e.args[0]}}} in {template!r}; use "
            f"{sorted('{' + k + '}' for k in values if k != 'metrics_dir')} or {{{{ }}}} for "
            "literal braces."
        ) from None
    except (ValueError, IndexError) as e:
        raise CommandConfigError(
            f"command.{where}: {template!r} is not a valid template ({e}); write literal braces "
            "as {{ and }}."
        ) from None
