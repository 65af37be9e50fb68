"""The task function every trial job runs: the user's function wrapped with trial bookkeeping.

It runs inside Hydra's ``run_job`` (so inside ``hydra.job.env_set``), in whatever process the
launcher chose: the sweeper's own (basic), a local subprocess or a SLURM job. Picklable, so
submitit can ship it.
"""

from __future__ import annotations

from typing import Any

from hydra.types import TaskFunction
from omegaconf import DictConfig


class TrialTask:
    """Call the user's task, recording where it ran and telling the study how it ended."""

    def __init__(self, task_function: TaskFunction) -> None:
        self.task_function = task_function
        # Hydra derives the job name from the task function's module/file; keep them visible.
        self.__module__ = getattr(task_function, "__module__", __name__)
        self.__name__ = getattr(task_function, "__name__", "task")

    def __call__(self, cfg: DictConfig) -> Any:
        from hydra.core.hydra_config import HydraConfig

        from nemo_rl_hpo.sweep import job

        job_dir = None
        if HydraConfig.initialized():
            job_dir = str(HydraConfig.get().runtime.output_dir)
        job.on_job_start(job_dir)
        try:
            ret = self.task_function(cfg)
        except BaseException as e:
            job.on_job_end(False, e)
            raise
        job.on_job_end(True, ret)
        return ret
