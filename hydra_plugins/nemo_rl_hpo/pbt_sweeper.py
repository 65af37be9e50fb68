"""``hydra/sweeper=pbt``: a thin Hydra Sweeper forwarding to the PBT implementation."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class PBTSweeper(Sweeper):
    """Population-based training with checkpoint exploit/explore over any launcher."""

    def __init__(self, **kwargs: Any) -> None:
        from hydra_plugins.nemo_rl_hpo._pbt_impl import PBTSweeperImpl

        self.sweeper = PBTSweeperImpl(**kwargs)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        self.sweeper.sweep(arguments)
