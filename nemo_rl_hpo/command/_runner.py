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
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_rl_hpo import job_dirs, trial
from nemo_rl_hpo.command import _pbt, _raysub
from nemo_rl_hpo.command._attempt import (
    CommandFailed,
    CommandTimeout,
    _Attempt,
    _fmt,
)
from nemo_rl_hpo.command._metrics import (
    History,
    JsonlReader,
    MetricsReader,
    TensorBoardReader,
    last_values,
)
from nemo_rl_hpo.command._overrides import render_override, render_overrides
from nemo_rl_hpo.command._spec import CommandConfigError, CommandSpec, RaySubSpec
from nemo_rl_hpo.fidelity.segment import segment_of
from nemo_rl_hpo.step_dirs import latest_step_dir
from nemo_rl_hpo.sweep import records

log = logging.getLogger(__name__)


@dataclass
class PreparedCommand:
    """One trial's command, rendered exactly as :func:`run_command` runs it."""

    spec: CommandSpec
    job: Path  # the trial's job dir
    log_dir: Path  # <job>/logs: the command's log_dir_key
    checkpoint_dir: Path  # <job>/checkpoints, or the PBT round's own
    cwd: Path
    values: dict[str, str]  # the template values ({config}, {job_name}, ...)
    overrides: list[str]  # the command's own overrides, each one argv item
    driver: list[str]  # the command's argv (with ray_sub: the driver, ray.sub's $COMMAND)
    argv: list[str]  # what is started: the command, or `sbatch --wait ... ray.sub`
    env: dict[str, str]


def prepare_command(
    cfg: Mapping[str, Any] | CommandSpec, job_dir: str | os.PathLike[str] | None = None
) -> PreparedCommand:
    """Render the trial's command (argv, overrides, environment) without running it.

    The one place a trial's command line is decided: :func:`run_command` runs what this
    returns, and a test (or a user) can check the exact line a sweep would start.
    """
    spec = CommandSpec.from_config(cfg)
    job = Path(job_dir) if job_dir is not None else job_dirs.job_dir()
    job = job.absolute()
    log_dir = job / "logs"
    ckpt_dir = _pbt.checkpoint_dir() or job / "checkpoints"
    for d in (job, log_dir, ckpt_dir):
        d.mkdir(parents=True, exist_ok=True)
    values = _template_values(spec, job, log_dir, ckpt_dir)
    cwd = (
        _resolve(_fmt(spec.cwd, values, "cwd"), job_dirs.launch_dir())
        if spec.cwd
        else job_dirs.launch_dir()
    )
    values["config"] = (
        str(_resolve(_fmt(spec.config, values, "config"), cwd)) if spec.config else ""
    )
    overrides = command_overrides(spec, log_dir, ckpt_dir)
    values["overrides_shell"] = shlex.join(overrides)
    driver = build_argv(spec, values, overrides)
    argv = driver
    env = _environment(spec, values)
    rs = spec.ray_sub
    if rs is not None:  # argv is the driver ($COMMAND); the process we run is sbatch --wait
        mounts = _raysub.mounts(rs, cwd, job_dirs.sweep_dir(job), job)
        env.update(_raysub.environment(rs, shlex.join(driver), job, mounts))
        argv = _raysub.sbatch_argv(rs, cwd, job, values["job_name"])
    return PreparedCommand(spec, job, log_dir, ckpt_dir, cwd, values, overrides, driver, argv, env)


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
    prepared = prepare_command(cfg, job_dir)
    spec, job, values, cwd = prepared.spec, prepared.job, prepared.values, prepared.cwd
    log_dir, ckpt_dir, argv, env = (
        prepared.log_dir,
        prepared.checkpoint_dir,
        prepared.argv,
        prepared.env,
    )
    _pbt.seed_checkpoint_dir(ckpt_dir)  # PBT: continue from the own or the donor's step_N
    rs = spec.ray_sub
    if rs is not None and shutil.which("sbatch", path=env.get("PATH")) is None:
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
    watcher.step = latest_step(ckpt_dir)  # steps up to a checkpoint it resumes from: told before
    started = time.monotonic()
    restarts: list[dict[str, Any]] = []
    startups: list[dict[str, Any]] = []
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
        if rs is not None and attempt.job_id is not None:
            _record_startup(rs, job, attempt.job_id, startups)
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
        if rs is not None and attempt.job_id is not None:
            startup = _raysub.startup_failure(job, attempt.job_id)
            if startup is not None:
                raise CommandFailed(f"the ray.sub job {attempt.job_id} exited 0, but {startup}.")
        where = Path(values["metrics_dir"])
        raise CommandFailed(
            f"the command exited 0 but wrote no value of {objective!r} "
            f"({spec.metrics.source} {spec.metrics.tags[objective]!r}) under {where}; check "
            "command.metrics (tags, log_subdir_glob or path) and command.log_dir_key."
        )
    _check_rung_checkpoint(ckpt_dir)
    _check_round_end(spec, watcher.history)
    return metrics


def _check_rung_checkpoint(ckpt_dir: Path) -> None:
    """A segment that pauses at a rung must leave ``step_<rung>``: the next one resumes there.

    NeMo RL saves at the last step of a run (``is_last_step``) only with
    ``checkpointing.enabled``; a run that saved nothing there would be promoted from an older
    step (or from scratch) and compute something else than an uninterrupted run.
    """
    segment = segment_of(trial.context())
    if segment is None or int(segment["target"]) >= int(segment["max"]):
        return
    target, found = int(segment["target"]), latest_step(ckpt_dir)
    if found != target:
        raise CommandFailed(
            f"the trial pauses at step {target} but the command left "
            f"{'no step_N' if found is None else f'step_{found}'} in {ckpt_dir}; a paused trial "
            "resumes from step_<rung>: enable the command's checkpointing (NeMo RL: "
            "checkpointing.enabled=true saves at the last step) and set command.checkpoint_dir_key."
        )


def _record_startup(rs: RaySubSpec, job: Path, job_id: str, startups: list[dict[str, Any]]) -> None:
    """Record how long the ray.sub job took to launch its driver; warn when that alone used the
    margin ``checkpoint_must_save_by`` leaves (NeMo RL's clock starts only after it)."""
    seconds = _raysub.startup_seconds(job, job_id)
    if seconds is None:
        return
    startups.append({"job_id": job_id, "startup_s": seconds})
    trial.set_user_attr(records.COMMAND_STARTUP, startups)
    if rs.time_limit is not None and rs.must_save_by_key and seconds >= rs.save_margin_s:
        log.warning(
            "ray.sub job %s launched its driver %d s after it started, but "
            "command.ray_sub.save_margin_s=%g must also cover model loading and the last save: "
            "the job may be killed at its wall time before NeMo RL saves; raise the margin.",
            job_id,
            seconds,
            rs.save_margin_s,
        )


def _check_round_end(spec: CommandSpec, history: History) -> None:
    """A PBT round (or a rung's segment) is ranked on the objective at its last step; a value
    from an earlier step, with training logged past it (a run that does not validate at its
    end), would rank it on stale numbers. A run that ended early (NeMo RL's own early stop) is
    judged at the step it ended."""
    end = trial.target_steps()
    objective = spec.objective_name
    last = max(history.get(objective, {}), default=None)
    last_logged = max((s for series in history.values() for s in series), default=None)
    if end is None or last is None or last_logged is None or last >= last_logged:
        return
    raise CommandFailed(
        f"this PBT round (or rung) trains to step {end} and the command logged up to step "
        f"{last_logged}, but its last {objective!r} is from step {last}, so the sweeper would "
        "rank it on a stale value; make the command validate at its last step (NeMo RL: "
        "grpo.val_at_end=true, sft.val_at_end, dpo.val_at_end; the nemo_rl presets set it) or "
        "make hydra.sweeper.perturbation_interval a multiple of its validation period."
    )


def latest_step(checkpoint_dir: Path) -> int | None:
    """The highest N of ``checkpoint_dir/step_N`` (NeMo RL's completed checkpoints), or None."""
    found = latest_step_dir(checkpoint_dir)
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
        _resolve(_fmt(spec.metrics.dir, values, "metrics.dir"), job_dirs.launch_dir())
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


def _resolve(path: str, base: Path) -> Path:
    p = Path(os.path.expanduser(path))
    return p if p.is_absolute() else base / p
