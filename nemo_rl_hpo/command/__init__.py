"""Sweep an existing training command that is not a Hydra app (e.g. NeMo RL's ``run_*.py``).

A Hydra app's task function calls :func:`run_command` with its ``command`` section; see
``examples/command/`` and ``docs/command.md``.
"""

from __future__ import annotations

from nemo_rl_hpo.command._attempt import (
    CommandError,
    CommandFailed,
    CommandTimeout,
    stderr_tail,
    terminate_group,
)
from nemo_rl_hpo.command._metrics import JsonlReader, TensorBoardReader
from nemo_rl_hpo.command._overrides import (
    OverrideError,
    quote,
    render_override,
    render_overrides,
    render_value,
)
from nemo_rl_hpo.command._runner import (
    PreparedCommand,
    build_argv,
    check,
    command_overrides,
    latest_step,
    prepare_command,
    run_command,
)
from nemo_rl_hpo.command._spec import (
    CommandConfigError,
    CommandSpec,
    MetricsSpec,
    RaySubSpec,
    slurm_time_seconds,
)

__all__ = [
    "CommandConfigError",
    "CommandError",
    "CommandFailed",
    "CommandSpec",
    "CommandTimeout",
    "JsonlReader",
    "MetricsSpec",
    "OverrideError",
    "PreparedCommand",
    "TensorBoardReader",
    "RaySubSpec",
    "build_argv",
    "check",
    "command_overrides",
    "latest_step",
    "prepare_command",
    "quote",
    "render_override",
    "render_overrides",
    "render_value",
    "run_command",
    "slurm_time_seconds",
    "stderr_tail",
    "terminate_group",
]
