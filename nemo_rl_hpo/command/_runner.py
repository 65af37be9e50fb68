"""Run one external training command as a trial: start it, watch its metrics, prune it, judge it.

The command is started in its own session (a new process group), so stopping it stops everything
it started: a pruned or timed-out trial gets SIGTERM on the whole group, then SIGKILL after the
grace period. While it runs, each new value of the objective metric is reported to the study
and the pruner is asked; stdout and stderr go to files in the Hydra job dir, and a non-zero exit
raises an error carrying the tail of stderr, which the sweeper keeps as the trial's fail reason.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nemo_rl_hpo import trial
from nemo_rl_hpo.command import _pbt, _raysub
from nemo_rl_hpo.command._metrics import (
    History,
    JsonlReader,
    MetricsReader,
    TensorBoardReader,
    last_values,
)
from nemo_rl_hpo.command._overrides import render_override, render_overrides
from nemo_rl_hpo.command._spec import CommandConfigError, CommandSpec
from nemo_rl_hpo.sweep import records

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


def run_command(
    cfg: Mapping[str, Any] | CommandSpec, job_dir: str | os.PathLike[str] | None = None
) -> dict[str, float]:
    """Run the command of ``cfg`` to the end (or until pruned) and return its last metrics.

    ``job_dir`` defaults to the Hydra job's output dir (the working dir outside Hydra); the
    command's log and checkpoint dirs are ``<job_dir>/logs`` and ``<job_dir>/checkpoints`` (a
    PBT round's checkpoint dir is the one the sweeper names). With ``command.ray_sub`` the
    command is the driver of a ``ray.sub`` job; a job that stops at its wall time is submitted
    again in the same job dir, so the command resumes from its latest ``step_N``.
    """
    spec = CommandSpec.from_config(cfg)
    job = Path(job_dir) if job_dir is not None else _hydra_job_dir()
    job = job.absolute()
    log_dir = job / "logs"
    ckpt_dir = _pbt.checkpoint_dir() or job / "checkpoints"
    for d in (job, log_dir, ckpt_dir):
        d.mkdir(parents=True, exist_ok=True)
    _pbt.seed_checkpoint_dir(ckpt_dir)  # PBT: continue from the own or the donor's step_N

    values = _template_values(spec, job, log_dir, ckpt_dir)
    cwd = _resolve(_fmt(spec.cwd, values, "cwd"), _launch_dir()) if spec.cwd else _launch_dir()
    values["config"] = (
        str(_resolve(_fmt(spec.config, values, "config"), cwd)) if spec.config else ""
    )
    overrides = command_overrides(spec, log_dir, ckpt_dir)
    values["overrides_shell"] = shlex.join(overrides)
    argv = build_argv(spec, values, overrides)
    env = _environment(spec, values)
    rs = spec.ray_sub
    if rs is not None:  # argv is the driver ($COMMAND); the process we run is sbatch --wait
        mounts = _raysub.mounts(rs, cwd, _sweep_dir(job), job)
        env.update(_raysub.environment(rs, shlex.join(argv), job, mounts))
        argv = _raysub.sbatch_argv(rs, cwd, job, values["job_name"])
        if shutil.which("sbatch", path=env.get("PATH")) is None:
            raise CommandFailed(
                "command.ray_sub is set but sbatch is not on PATH; run the sweep where SLURM's "
                "client commands are, or set command.ray_sub: null."
            )
    reader = _reader(spec, values)
    objective = spec.objective_name
    _check_prune_metric(objective)

    trial.set_user_attr(records.COMMAND_ARGV, argv)
    trial.set_user_attr(records.COMMAND_OBJECTIVE, objective)
    trial.set_user_attr(records.COMMAND_TAGS, dict(spec.metrics.tags))
    trial.set_user_attr(records.COMMAND_LOG_DIR, str(log_dir))
    if rs is not None:
        trial.set_user_attr(records.COMMAND_DRIVER, env["COMMAND"])
    log.info("running %s (cwd %s)", shlex.join(argv), cwd)

    watcher = _Watcher(objective)
    started = time.monotonic()
    restarts: list[dict[str, Any]] = []
    job_ids: list[str] = []
    while True:
        attempt = _Attempt(spec, job, argv, cwd, env, values, job_ids)
        attempt.start()
        try:
            while True:
                rc = attempt.wait(spec.poll_interval_s)
                if watcher.update(reader.read(), running=rc is None):
                    log.info("pruned at step %s: stopping %s", watcher.step, attempt.what)
                    attempt.stop()
                    trial.set_user_attr(records.COMMAND_STOPPED, "pruned")
                    return last_values(watcher.history)
                if rc is not None:
                    break
                if spec.timeout_s is not None and time.monotonic() - started > spec.timeout_s:
                    attempt.stop()
                    trial.set_user_attr(records.COMMAND_STOPPED, "timeout")
                    raise CommandTimeout(
                        f"the command ran longer than command.timeout_s={spec.timeout_s:g} s and "
                        f"was stopped (last step {watcher.step}); raise command.timeout_s or "
                        f"shorten the run. Its output is in {job}."
                    )
        finally:
            attempt.cleanup()  # an exception (or Ctrl-C) while it runs: leave nothing behind
        watcher.update(reader.read(), running=False)  # whatever it flushed on exit
        stop = attempt.wall_time_stop(rc)
        if stop is None:
            break
        if rs is None or len(restarts) >= rs.max_restarts:
            raise CommandFailed(
                f"the command stopped at its wall time ({stop}) after {len(restarts)} "
                f"resubmission(s) and command.ray_sub.max_restarts="
                f"{rs.max_restarts if rs else 0}; raise max_restarts or "
                f"command.ray_sub.time_limit. Last step {watcher.step}; output in {job}."
            )
        restart = {
            "job_id": attempt.job_id,
            "reason": stop,
            "step": latest_step(ckpt_dir),
            "time": time.time(),
        }
        restarts.append(restart)
        trial.set_user_attr(records.COMMAND_RESTARTS, restarts)
        log.info(
            "Slurm job %s %s; resubmitting in %s (resumes from step_%s, restart %d of %d)",
            attempt.job_id,
            stop,
            job,
            restart["step"],
            len(restarts),
            rs.max_restarts,
        )
    if rc != 0:
        raise CommandFailed(attempt.failure_message(rc))
    metrics = last_values(watcher.history)
    if objective not in metrics:
        where = Path(values["metrics_dir"])
        raise CommandFailed(
            f"the command exited 0 but wrote no value of {objective!r} "
            f"({spec.metrics.source} {spec.metrics.tags[objective]!r}) under {where}; check "
            "command.metrics (tags, log_subdir_glob or path) and command.log_dir_key."
        )
    return metrics


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
        return self._job_id

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
        rc = _raysub.finished_exit_code(self.job_id)
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
            _raysub.cancel(self.job_id, self.values["job_name"], rs.poll_cancel_s)
        _run_stop_command(self.spec, self.values, self.cwd, self.env)
        terminate_group(self.proc, self.spec.grace_period_s)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()

    def wall_time_stop(self, rc: int | None) -> str | None:
        """Why the run stopped at its wall time, or None when it did not (ray.sub only).

        Saved before it: NeMo RL exits 0 after its timeout-triggered save and prints
        ``timeout_marker``. Killed at it: Slurm's state is TIMEOUT; the run resumes from its
        last periodic save.
        """
        rs = self.spec.ray_sub
        if rs is None or self.job_id is None:
            return None
        logs = _raysub.driver_logs(self.job, self.job_id)
        if (
            rc == 0
            and rs.timeout_marker
            and any(_raysub.contains(p, rs.timeout_marker) for p in logs)
        ):
            return "saved before its wall time"
        if rc != 0 and _raysub.job_state(self.job_id) == "TIMEOUT":
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
        state = _raysub.job_state(job_id) or "?"
        return (
            f"the ray.sub job {job_id} ended {state} (sbatch --wait {how}); "
            + _raysub.failure_detail(self.job, job_id, TAIL_LINES, _TAIL_CHARS)
        )


def latest_step(checkpoint_dir: Path) -> int | None:
    """The highest N of ``checkpoint_dir/step_N`` (NeMo RL's completed checkpoints), or None."""
    found = _pbt.latest_step_dir(checkpoint_dir)
    return int(found.name[5:]) if found is not None else None


def check(cfg: Any) -> None:
    """``hydra.sweeper.check`` for a command app: the ``command`` section must be runnable.

    Runs in the sweeper before any job: a bad key, an empty ``ray_sub.container`` or a value
    that cannot be written as an override is one error line naming the key.
    """
    section = cfg.get("command") if isinstance(cfg, Mapping) else getattr(cfg, "command", None)
    if section is None:
        raise CommandConfigError("the app's config has no `command` section.")
    spec = CommandSpec.from_config(section)
    render_overrides(spec.overrides)
    if spec.ray_sub is not None:
        render_overrides(_raysub.overrides(spec.ray_sub))


def command_overrides(spec: CommandSpec, log_dir: Path, ckpt_dir: Path) -> list[str]:
    """The overrides handed to the command: searched values first, then what each trial
    decides (dirs, cluster shape, save-by time, run names, a PBT round's last step)."""
    out = render_overrides(spec.overrides)
    if spec.log_dir_key:
        out.append(render_override(spec.log_dir_key, str(log_dir)))
    if spec.checkpoint_dir_key:
        out.append(render_override(spec.checkpoint_dir_key, str(ckpt_dir)))
    if spec.ray_sub is not None:
        out.extend(render_overrides(_raysub.overrides(spec.ray_sub)))
    names = trial.run_names()
    if names is not None:
        for role, keys in spec.run_name_keys.items():
            value = names.run if role == "run" else names.group
            out.extend(render_override(str(k), value) for k in keys)
    steps = trial.target_steps()
    if steps is not None:
        if not spec.max_steps_key:
            raise CommandConfigError(
                "a PBT round must stop at a given step, but command.max_steps_key is not set; "
                "name the command's key for the run's length (e.g. grpo.max_num_steps)."
            )
        out.append(render_override(spec.max_steps_key, steps))
    return out


def build_argv(spec: CommandSpec, values: Mapping[str, str], overrides: list[str]) -> list[str]:
    """The command's argv with templates filled; overrides where ``{overrides}`` is, else last."""
    template = shlex.split(spec.command) if isinstance(spec.command, str) else list(spec.command)
    argv: list[str] = []
    placed = False
    for item in template:
        if item == "{overrides}":
            argv.extend(overrides)
            placed = True
        else:
            argv.append(_fmt(item, values, "command"))
    if not placed:
        argv.extend(overrides)
    argv.extend(_fmt(a, values, "extra_args") for a in spec.extra_args)
    return argv


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
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return "(no stderr file)"
    tail = "\n".join(text.rstrip().splitlines()[-lines:])
    if len(tail) > _TAIL_CHARS:
        tail = "..." + tail[-_TAIL_CHARS:]
    return tail or "(stderr is empty)"


class _Watcher:
    """Reports each new objective value (with the other metrics of that step) and asks the
    pruner; remembers the whole history for the final return."""

    def __init__(self, objective: str) -> None:
        self.objective = objective
        self.history: History = {}
        self.step: int | None = None  # last reported step

    def update(self, history: History, running: bool) -> bool:
        """True when the pruner says stop (only asked while the command still runs)."""
        self.history = history
        series = history.get(self.objective, {})
        for step in sorted(s for s in series if self.step is None or s > self.step):
            metrics = {self.objective: series[step]}
            for name, other in history.items():
                if name != self.objective and step in other:
                    metrics[name] = other[step]
            trial.report(step, metrics)
            self.step = step
            if running and trial.should_prune():
                return True
        return False


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


def _check_prune_metric(objective: str) -> None:
    info = trial.info()
    if info is not None and info.prune_metric and info.prune_metric != objective:
        log.warning(
            "the sweeper prunes on %r (first of hydra.sweeper.objectives) but command.objective "
            "is %r; the pruner sees %r when the command logs it. Make them the same.",
            info.prune_metric,
            objective,
            info.prune_metric,
        )


def _reader(spec: CommandSpec, values: Mapping[str, str]) -> MetricsReader:
    m = spec.metrics
    base = Path(values["metrics_dir"])
    if m.source == "tensorboard":
        return TensorBoardReader(base, m.tags, m.log_subdir_glob)
    path = Path(_fmt(m.path, values, "metrics.path"))
    return JsonlReader(path if path.is_absolute() else base / path, m.tags, m.step_field)


def _template_values(spec: CommandSpec, job: Path, log_dir: Path, ckpt: Path) -> dict[str, str]:
    info = trial.info()
    number = str(info.number) if info is not None else ""
    if info is not None:
        job_name = f"hpo-{info.study_name}-{info.number}"
    else:
        job_name = f"hpo-{job.name}"
    values = {
        "python": sys.executable,
        "job_dir": str(job),
        "log_dir": str(log_dir),
        "checkpoint_dir": str(ckpt),
        "trial_number": number,
        "job_name": job_name,
        "config": "",
        "overrides_shell": "",
    }
    values["metrics_dir"] = str(
        _resolve(_fmt(spec.metrics.dir, values, "metrics.dir"), _launch_dir())
    )
    return values


def _environment(spec: CommandSpec, values: Mapping[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    # The command is not a trial-aware job: keep the study's address (and password) out of it.
    env.pop(trial.ENV_TRIAL, None)
    env.pop(trial.ENV_STORAGE_PASSWORD, None)
    env.setdefault("PYTHONUNBUFFERED", "1")
    for key, value in spec.env.items():
        env[str(key)] = _fmt(str(value), values, f"env.{key}")
    return env


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


def _resolve(path: str, base: Path) -> Path:
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else base / p


def _launch_dir() -> Path:
    """Where the user started the app (Hydra may have changed the working dir since)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.cwd)
    except ImportError:  # pragma: no cover - hydra is a dependency
        pass
    return Path.cwd()


def _sweep_dir(job: Path) -> Path:
    """The sweep dir of a multirun (every trial's job dir is inside), else the job dir."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized():
            hc = HydraConfig.get()
            if hc.mode == RunMode.MULTIRUN:
                return _resolve(str(hc.sweep.dir), _launch_dir())
    except ImportError:  # pragma: no cover - hydra is a dependency
        pass
    return job


def _hydra_job_dir() -> Path:
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return Path(HydraConfig.get().runtime.output_dir)
    except ImportError:  # pragma: no cover - hydra is a dependency
        pass
    return Path.cwd()
