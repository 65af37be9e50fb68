"""``${nemo_rl_hpo.n_jobs:THREADS_PER_TRIAL,${hydra.launcher}}``: trials in flight by default.

An app's config can let the sweep use the machine it runs on (``conf/config.yaml`` does):
local launchers (``local``, ``pool``) get one trial per GPU slot, or cores // threads per trial
on a CPU machine (nemo_rl_hpo/sweep/devices.py); the basic launcher runs one trial at a time;
any other launcher (SLURM: the machine of the sweeper is not where trials run) keeps the
sweeper's own default of 2. Registered on import of launchers.py (which Hydra's plugin scan
imports at every app start, before any config is resolved) and so in every job too.
"""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from hydra_plugins.nemo_rl_hpo.config import N_JOBS


def default_n_jobs(threads_per_trial: Any, launcher: Any) -> int:
    target = str(launcher.get("_target_", "")) if launcher is not None else ""
    name = target.rsplit(".", 1)[-1]
    if name in ("LocalLauncher", "PoolLauncher"):
        from nemo_rl_hpo.sweep.devices import local_trials

        return local_trials(
            int(threads_per_trial or 1), launcher.get("gpus_per_trial"), launcher.get("devices")
        )
    if name == "BasicLauncher":
        return 1
    return N_JOBS


if not OmegaConf.has_resolver("nemo_rl_hpo.n_jobs"):
    OmegaConf.register_new_resolver("nemo_rl_hpo.n_jobs", default_n_jobs)
