"""The thin Hydra Sweeper both plugins are: Hydra talks to it, it forwards to an implementation.

The implementation is imported when Hydra instantiates the sweeper, not when Hydra scans its
plugins at every app start.
"""

from __future__ import annotations

import importlib
from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class ForwardingSweeper(Sweeper):
    """Subclasses name their implementation as ``module:Class`` in ``implementation``."""

    implementation = ""

    def __init__(self, **kwargs: Any) -> None:
        module, name = self.implementation.split(":")
        self.sweeper = getattr(importlib.import_module(module), name)(**kwargs)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        self.sweeper.sweep(arguments)
