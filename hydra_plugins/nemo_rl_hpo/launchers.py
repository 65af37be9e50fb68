"""hydra-submitit-launcher's launchers, waking up as soon as a job ends.

Upstream's ``launch`` waits with ``job.results()``, which polls once a second; with one trial
per ``launch`` call (our asynchronous sweeper) that second is idle slot time after every trial.
These subclasses poll ``job.done()`` at ``poll_interval_s`` instead and are otherwise upstream's
code path (same executor, parameters, folders and job pickles). The ``local`` and ``slurm``
launcher presets point at them.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from omegaconf import OmegaConf

from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    BaseSubmititLauncher,
)
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    LocalLauncher as _UpstreamLocal,
)
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    SlurmLauncher as _UpstreamSlurm,
)

log = logging.getLogger(__name__)


class _FastPollMixin(BaseSubmititLauncher):  # type: ignore[misc]
    poll_interval_s: float = 0.05

    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        import submitit

        assert self.config is not None
        assert len(job_overrides) > 0
        params = self.params
        init_params: dict[str, Any] = {"folder": params["submitit_folder"]}
        specific_init_keys = {"max_num_timeout"}
        init_params.update(
            **{f"{self._EXECUTOR}_{x}": y for x, y in params.items() if x in specific_init_keys}
        )
        init_keys = specific_init_keys | {"submitit_folder"}
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init_params)
        baseparams = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                x if x in baseparams else f"{self._EXECUTOR}_{x}": y
                for x, y in params.items()
                if x not in init_keys
            }
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        job_params: list[Any] = []
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            job_params.append(
                (
                    list(overrides),
                    "hydra.sweep.dir",
                    idx,
                    f"job_id_for_{idx}",
                    Singleton.get_state(),
                )
            )
        jobs = executor.map_array(self, *zip(*job_params, strict=True))
        while not all(j.done() for j in jobs):
            time.sleep(self.poll_interval_s)
        return [j.results()[0] for j in jobs]


class LocalLauncher(_FastPollMixin, _UpstreamLocal):  # type: ignore[misc]
    """submitit_local, returning within ``poll_interval_s`` of a job's end."""

    _EXECUTOR = "local"


class SlurmLauncher(_FastPollMixin, _UpstreamSlurm):  # type: ignore[misc]
    """submitit_slurm, checking for results every ``poll_interval_s`` (sacct is throttled)."""

    _EXECUTOR = "slurm"
    poll_interval_s = 1.0
