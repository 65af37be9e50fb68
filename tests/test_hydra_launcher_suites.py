"""Hydra's own launcher test suites, run against our ``local`` and ``pool`` launchers.

As hydra-submitit-launcher and hydra-joblib-launcher test theirs
(plugins/*/tests/test_*_launcher.py in facebookresearch/hydra): ``LauncherTestSuite`` sweeps
Hydra's test configs with the basic sweeper in this process (one batch of jobs per ``launch``),
``IntegrationTestSuite`` runs a generated app with ``-m`` in a subprocess and checks job names,
working dirs and ``hydra.utils`` paths. Both launchers compose each job's config in the sweeper
and ship it to the job (upstream re-composes from overrides in the job), so these suites check
that what a job sees is still exactly what Hydra's own launchers give it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from hydra.test_utils.test_utils import TSweepRunner

from hydra_plugins.nemo_rl_hpo.launchers import LocalLauncher, PoolLauncher

# Jobs are tiny (return 100, print a path); a minute is a generous limit for a local one.
LOCAL = ["hydra.launcher.timeout_min=1"]
# Two warm workers: the suites' sweeps have at most two jobs per batch, and 2 cores here.
POOL = ["hydra.launcher.max_workers=2"]
# GPU slots (nemo_rl_hpo/sweep/devices.py) on two named devices: a batch of jobs is split into
# one-job launches on threads, each holding its own device. The ids need no GPU: a job only
# sees CUDA_VISIBLE_DEVICES set.
SLOTS = ["hydra.launcher.devices=[0,1]", "hydra.launcher.gpus_per_trial=1"]
TARGETS = {
    "local": "hydra_plugins.nemo_rl_hpo.launchers.LocalLauncher",
    "pool": "hydra_plugins.nemo_rl_hpo.launchers.PoolLauncher",
}


@pytest.fixture(autouse=True)
def _version_base_of_a_fresh_process(hydra_restore_singletons: None) -> None:
    """Run Hydra's suites as Hydra runs them: in a process where no version base was set yet.

    The suites expect Hydra 1.1's default (a job runs inside its output dir), which is what an
    unset version base gives; an earlier test's ``initialize_config_dir(version_base="1.3")``
    sets it for the whole pytest process. ``hydra_restore_singletons`` puts it back afterwards.
    """
    from hydra.version import _UNSPECIFIED_, VersionBase

    VersionBase.instance().version_base = _UNSPECIFIED_


@pytest.mark.parametrize("cls", [LocalLauncher, PoolLauncher])
def test_discovery(cls: type[Launcher]) -> None:
    # Hydra finds both launchers through its plugin discovery, as it finds its own.
    assert cls.__name__ in [x.__name__ for x in Plugins.instance().discover(Launcher)]


@pytest.mark.parametrize(
    "launcher_name, overrides",
    [
        pytest.param("local", LOCAL, id="local"),
        pytest.param("pool", POOL, id="pool"),
        pytest.param("local", LOCAL + SLOTS, id="local-gpu-slots"),
        pytest.param("pool", POOL + SLOTS, id="pool-gpu-slots"),
    ],
)
class TestLaunchers(LauncherTestSuite):
    """Hydra's launcher contract: returns, configs, overrides and job dirs of each job."""

    def test_jobs_ran_in_our_launcher_in_other_processes(
        self,
        hydra_sweep_runner: TSweepRunner,
        launcher_name: str,
        overrides: list[str],
        tmpdir: Path,
    ) -> None:
        def task(_: Any) -> int:
            return os.getpid()

        sweep = hydra_sweep_runner(
            calling_file=None,
            calling_module="hydra.test_utils.a_module",
            task_function=task,
            config_path="configs",
            config_name="compose.yaml",
            overrides=[f"hydra/launcher={launcher_name}", "+a=0,1", *overrides],
            temp_dir=tmpdir,
        )
        with sweep:
            assert sweep.returns is not None
            rets = sweep.returns[0]
            # The suite above exercised our class (the preset resolved to it) ...
            assert {r.hydra_cfg.hydra.launcher._target_ for r in rets} == {TARGETS[launcher_name]}
            # ... and the jobs ran outside the sweeping process, as a user's trials do.
            assert len(rets) == 2 and all(r.return_value != os.getpid() for r in rets)


@pytest.mark.e2e  # each case runs a generated app with -m in a subprocess
@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [
        pytest.param(
            {},
            [
                "-m",
                "hydra/hydra_logging=disabled",
                "hydra/job_logging=disabled",
                "hydra/launcher=local",
                *LOCAL,
            ],
            id="local",
        ),
        pytest.param(
            {},
            [
                "-m",
                "hydra/hydra_logging=disabled",
                "hydra/job_logging=disabled",
                "hydra/launcher=pool",
                *POOL,
            ],
            id="pool",
        ),
    ],
)
class TestLaunchersIntegration(IntegrationTestSuite):
    """A real app with ``-m``: job names, sweep dirs, chdir, original cwd, absolute paths."""
