"""The schema of an external-command trial, validated up front with errors that name the key."""

from __future__ import annotations

import re
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
class RaySubSpec:
    """Submit each trial's command through NeMo RL's ``ray.sub`` (``sbatch --wait``).

    One key per fact: ``gpus_per_node`` becomes ``--gres=gpu:N``, the command's
    ``gpus_per_node_key`` and ``GPUS_PER_NODE``; ``nodes`` becomes ``--nodes`` and ``nodes_key``
    (``nodes - 1`` with ``dedicated_head``: ray.sub's ``DEDICATED_RAY_HEAD=1`` keeps the first
    node's GPUs out of Ray); ``time_limit`` becomes ``--time`` and, less ``save_margin_s``, the
    command's ``must_save_by_key`` (NeMo RL's ``checkpointing.checkpoint_must_save_by``).
    """

    script: str = "ray.sub"  # relative to command.cwd (the NeMo RL checkout)
    nodes: int = 1  # sbatch --nodes; the command's nodes_key gets the nodes that run GPU work
    # DEDICATED_RAY_HEAD: the first node hosts only Ray's head and the driver (no GPU actors),
    # so the command's nodes_key gets nodes - 1 (NeMo RL's docs/cluster.md: it must)
    dedicated_head: bool = False
    gpus_per_node: int = 8  # --gres=gpu:N, GPUS_PER_NODE and the command's gpus_per_node_key
    nodes_key: str | None = "cluster.num_nodes"
    gpus_per_node_key: str | None = "cluster.gpus_per_node"
    container: str = ""  # CONTAINER: the image ray.sub starts on every node (required)
    # MOUNTS; null: "<command.cwd>:<command.cwd>,<sweep dir>:<sweep dir>" (both must be seen
    # inside the container: the code, and the logs/checkpoints the sweeper reads)
    mounts: str | None = None
    time_limit: str | int | None = (
        None  # sbatch --time ([D-]HH:MM:SS or minutes); null: partition's
    )
    # checkpoint_must_save_by = time_limit - this. NeMo RL's clock starts at its training loop,
    # so the margin covers everything before it and the last save: ray.sub waits up to 30 min
    # for every worker to register, then model loading and the save (15 min) -> 45 min
    save_margin_s: float = 2700.0
    must_save_by_key: str | None = "checkpointing.checkpoint_must_save_by"
    max_restarts: int = 3  # resubmissions of a trial that stopped at its wall time
    # the driver's line that says it stopped early to save before its wall time (NeMo RL's
    # sft.py, dpo.py, grpo.py print it after the timeout-triggered save)
    timeout_marker: str = "Timeout has been reached, stopping training early"
    sbatch_args: list[str] = field(default_factory=list)  # e.g. [--account=me, --partition=gpu]
    env: dict[str, str] = field(default_factory=dict)  # more ray.sub variables (SETUP_COMMAND...)
    poll_cancel_s: float = 60.0  # after scancel, seconds to wait for the job to leave the queue

    def validate(self) -> None:
        """Every value ray.sub would reject, or that would make a trial fail, named by key."""
        if not str(self.container or "").strip():
            raise CommandConfigError(
                "command.ray_sub.container is empty, but ray.sub starts every node in "
                "CONTAINER; set it to the NeMo RL image (e.g. export NEMO_RL_CONTAINER=... for "
                "the presets, or command.ray_sub.container=nvcr.io/nvidia/nemo-rl:<tag>)."
            )
        for name in ("nodes", "gpus_per_node"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CommandConfigError(
                    f"command.ray_sub.{name} must be a whole number of at least 1, got {value!r}."
                )
        if not isinstance(self.dedicated_head, bool):
            raise CommandConfigError(
                f"command.ray_sub.dedicated_head must be true or false, got "
                f"{self.dedicated_head!r}."
            )
        if self.dedicated_head and self.nodes < 2:
            raise CommandConfigError(
                f"command.ray_sub.dedicated_head=true needs command.ray_sub.nodes of at least 2 "
                f"(the first node runs only Ray's head), got nodes={self.nodes}; raise nodes by "
                "one or set dedicated_head=false."
            )
        if "DEDICATED_RAY_HEAD" in self.env:
            raise CommandConfigError(
                "command.ray_sub.env.DEDICATED_RAY_HEAD: set command.ray_sub.dedicated_head "
                "instead; it also gives the command's cluster.num_nodes the nodes - 1 that "
                "NeMo RL needs then."
            )
        if self.max_restarts < 0:
            raise CommandConfigError(
                f"command.ray_sub.max_restarts must be at least 0, got {self.max_restarts}."
            )
        if self.time_limit is not None:
            seconds = slurm_time_seconds(self.time_limit, "command.ray_sub.time_limit")
            if self.must_save_by_key and self.save_margin_s >= seconds:
                raise CommandConfigError(
                    f"command.ray_sub.save_margin_s={self.save_margin_s:g} leaves no training "
                    f"time in command.ray_sub.time_limit={self.time_limit!r} ({seconds} s); "
                    "lower the margin or raise the limit."
                )
        if self.save_margin_s < 0:
            raise CommandConfigError(
                f"command.ray_sub.save_margin_s must be at least 0, got {self.save_margin_s}."
            )


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
    # null: run `command` directly; a mapping: it is the driver ($COMMAND) of a ray.sub job
    ray_sub: RaySubSpec | None = None
    # command keys that receive this trial's run name and its study's name inside a sweep,
    # e.g. {run: [logger.wandb.name, logger.mlflow.run_name], group: [++logger.wandb.group]}
    run_name_keys: dict[str, list[str]] = field(default_factory=dict)
    # PBT: the command key that receives the step a round trains up to (e.g. grpo.max_num_steps)
    max_steps_key: str | None = None
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
            ray_sub = values.pop("ray_sub", None)
            if ray_sub is not None:
                if not isinstance(ray_sub, Mapping):
                    raise CommandConfigError("command.ray_sub must be a mapping or null.")
                rknown = {f.name for f in fields(RaySubSpec)}
                runknown = sorted(set(ray_sub) - rknown)
                if runknown:
                    raise CommandConfigError(
                        f"command.ray_sub has unknown key(s) {runknown}; valid keys are "
                        f"{sorted(rknown)}."
                    )
                ray_sub = RaySubSpec(**ray_sub)
            spec = cls(**values, metrics=MetricsSpec(**metrics), ray_sub=ray_sub)
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

        for role, keys in self.run_name_keys.items():
            if role not in ("run", "group") or not isinstance(keys, list):
                raise CommandConfigError(
                    f"command.run_name_keys.{role}: give 'run' and/or 'group', each a list of "
                    "the command's keys, e.g. {run: [logger.wandb.name], group: "
                    "[++logger.wandb.group]}."
                )
        if self.ray_sub is not None:
            self.ray_sub.validate()

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


_SLURM_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def slurm_time_seconds(value: str | int, key: str) -> int:
    """Seconds in a SLURM ``--time`` value: ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``,
    ``D-H:M:S`` (sbatch's formats)."""
    text = str(value).strip()
    m = _SLURM_TIME.match(text)
    if m is None:
        raise CommandConfigError(
            f"{key}={value!r} is not a SLURM time; write minutes, MM:SS, HH:MM:SS or "
            "D-HH:MM:SS (sbatch --time)."
        )
    days, a, b, c = m.groups()
    if days is not None:  # D-H, D-H:M, D-H:M:S
        h, mi, s = int(a), int(b or 0), int(c or 0)
        total = int(days) * 86400 + h * 3600 + mi * 60 + s
    elif c is not None:  # H:M:S
        total = int(a) * 3600 + int(b) * 60 + int(c)
    elif b is not None:  # M:S
        total = int(a) * 60 + int(b)
    else:  # M
        total = int(a) * 60
    if total <= 0:
        raise CommandConfigError(f"{key}={value!r} must be longer than 0 seconds.")
    return total
