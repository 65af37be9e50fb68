"""The schema of an external-command trial, validated up front with errors that name the key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

SOURCES = ("tensorboard", "jsonl")


class CommandConfigError(ValueError):
    """A ``command`` section that cannot run; the message names the key and the fix."""


@dataclass
class MetricsSpec:
    """Where the command's metrics are and what they are called."""

    source: str = "tensorboard"  # tensorboard | jsonl
    # metric name (as returned to the sweeper) -> TensorBoard tag, or JSONL field
    tags: dict[str, str] = field(default_factory=dict)
    dir: str = "{log_dir}"  # template: the dir the command logs under
    log_subdir_glob: str = "exp_*/tensorboard"  # tensorboard: event dirs below `dir`, merged
    path: str = "metrics.jsonl"  # jsonl: file relative to `dir` (or absolute)
    step_field: str = "step"  # jsonl: the field holding the step


@dataclass
class CommandSpec:
    """One external command per trial: what to run, which overrides, where its metrics are.

    Templates (``command``, ``config``, ``env`` values, ``cwd``, ``metrics.dir``) may use
    ``{python}``, ``{config}``, ``{job_dir}``, ``{log_dir}``, ``{checkpoint_dir}``,
    ``{trial_number}``, ``{job_name}`` and ``{overrides_shell}`` (``{{``/``}}`` for braces).
    """

    # argv list, or a string split like a shell line; an item "{overrides}" marks where the
    # rendered overrides go (default: after everything else)
    command: list[str] | str = field(default_factory=list)
    config: str | None = None  # the command's own config file ({config}); relative to cwd
    overrides: dict[str, Any] = field(default_factory=dict)  # command key -> value
    extra_args: list[str] = field(default_factory=list)  # verbatim args after the overrides
    log_dir_key: str | None = None  # command key that receives <job_dir>/logs
    checkpoint_dir_key: str | None = None  # command key that receives <job_dir>/checkpoints
    env: dict[str, str] = field(default_factory=dict)  # extra environment for the command
    cwd: str | None = None  # working dir of the command; relative to where the app started
    timeout_s: float | None = None  # seconds before the command is stopped and the trial fails
    # run before SIGTERM when a trial is stopped, e.g. ["scancel", "--name={job_name}"] for a
    # command that only submits the real work (`sbatch --wait`)
    stop_command: list[str] | None = None
    metrics: MetricsSpec = field(default_factory=MetricsSpec)
    objective: str | None = None  # metric name the pruner sees (default: the first of tags)
    poll_interval_s: float = 1.0  # seconds between metric reads while the command runs
    grace_period_s: float = 10.0  # seconds between SIGTERM and SIGKILL when stopping it

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | CommandSpec) -> CommandSpec:
        """Build and validate from a mapping (e.g. an OmegaConf ``command`` section)."""
        if isinstance(cfg, CommandSpec):
            spec = cfg
        else:
            raw = _plain(cfg)
            if not isinstance(raw, Mapping):
                raise CommandConfigError(
                    f"the command section must be a mapping, got {type(raw).__name__}."
                )
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(raw) - known)
            if unknown:
                raise CommandConfigError(
                    f"command has unknown key(s) {unknown}; valid keys are {sorted(known)}."
                )
            values = dict(raw)
            metrics = values.pop("metrics", None) or {}
            if not isinstance(metrics, Mapping):
                raise CommandConfigError("command.metrics must be a mapping.")
            mknown = {f.name for f in fields(MetricsSpec)}
            munknown = sorted(set(metrics) - mknown)
            if munknown:
                raise CommandConfigError(
                    f"command.metrics has unknown key(s) {munknown}; valid keys are "
                    f"{sorted(mknown)}."
                )
            spec = cls(**values, metrics=MetricsSpec(**metrics))
        spec.validate()
        return spec

    def validate(self) -> None:
        if not self.command:
            raise CommandConfigError(
                "command.command is empty; give the argv, e.g. "
                "['python', 'examples/run_sft.py', '--config', '{config}']."
            )
        if not isinstance(self.command, (str, list)) or (
            isinstance(self.command, list) and not all(isinstance(a, str) for a in self.command)
        ):
            raise CommandConfigError("command.command must be a string or a list of strings.")
        if not isinstance(self.overrides, Mapping):
            raise CommandConfigError(
                "command.overrides must map the command's keys to values, e.g. "
                "{policy.optimizer.kwargs.lr: ${learning_rate}}."
            )
        m = self.metrics
        if m.source not in SOURCES:
            raise CommandConfigError(
                f"command.metrics.source must be one of {list(SOURCES)}, got {m.source!r}."
            )
        if not m.tags:
            raise CommandConfigError(
                "command.metrics.tags is empty; map metric names to TensorBoard tags (or JSONL "
                "fields), e.g. {val_loss: validation/val_loss}."
            )
        objective = self.objective_name
        if objective not in m.tags:
            raise CommandConfigError(
                f"command.objective={objective!r} is not a metric of command.metrics.tags "
                f"({sorted(m.tags)}); set it to one of them."
            )
        for name, value, low in (
            ("poll_interval_s", self.poll_interval_s, 0.01),
            ("grace_period_s", self.grace_period_s, 0.0),
        ):
            if value < low:
                raise CommandConfigError(
                    f"command.{name} must be at least {low} seconds, but got {value}."
                )
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise CommandConfigError(
                f"command.timeout_s must be positive (or null for no limit), got {self.timeout_s}."
            )

    @property
    def objective_name(self) -> str:
        return self.objective or next(iter(self.metrics.tags), "")


def _plain(cfg: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return cfg
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg
