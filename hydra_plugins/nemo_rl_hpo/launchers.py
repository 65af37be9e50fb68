"""hydra-submitit-launcher's launchers, waking up as soon as a job ends.

Upstream's ``launch`` waits with ``job.results()``, which polls once a second; with one trial
per ``launch`` call (our asynchronous sweeper) that second is idle slot time after every trial.
These subclasses poll ``job.done()`` at ``poll_interval_s`` instead, and ship each job the config
the sweeper already composed instead of its overrides; otherwise they are upstream's code path
(same executor, parameters, folders, requeue). The ``local`` and ``slurm`` launcher presets
point at them. ``PoolLauncher`` (preset ``pool``) keeps warm worker processes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides, run_job, setup_globals
from hydra.errors import CompactHydraException
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

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
from hydra_plugins.nemo_rl_hpo import _resolvers  # noqa: F401  (registers ${nemo_rl_hpo.n_jobs:...})
from hydra_plugins.nemo_rl_hpo._slurm import JobDied
from nemo_rl_hpo.slurm import submit_retrying
from nemo_rl_hpo.sweep import devices as dev
from nemo_rl_hpo.sweep.context import ENV_TRIAL

log = logging.getLogger(__name__)


def shown_overrides(overrides: Sequence[str]) -> str:
    """A job's overrides for the log: without the trial context (JSON the job reads, not a user)."""
    return " ".join(o for o in filter_overrides(overrides) if f".env_set.{ENV_TRIAL}=" not in o)


class DeviceSlotError(CompactHydraException):
    """Bad GPU-slot options (``gpus_per_trial``, ``devices``): one line, before any job."""


def _device_slots(n_slots: int, gpus_per_trial: Any, devices: Any, key: str) -> dev.SlotPool:
    """The launcher's GPU slots (nemo_rl_hpo/sweep/devices.py), checked at set-up."""
    try:
        return dev.SlotPool(dev.plan(n_slots, gpus_per_trial, devices, slots_key=key))
    except dev.DeviceConfigError as e:
        raise DeviceSlotError(str(e)) from None


def _one_thread_per_job(
    launch: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int, n: int
) -> list[JobReturn]:
    """A batch of jobs (Hydra's basic sweeper) as one-job launches, each holding its own slot."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, n), thread_name_prefix="slot") as ex:
        futs = [
            ex.submit(launch, [list(ov)], initial_job_idx + i) for i, ov in enumerate(job_overrides)
        ]
        return [f.result()[0] for f in futs]


class _FastPollMixin(BaseSubmititLauncher):  # type: ignore[misc]
    poll_interval_s: float = 0.05
    # How long a finished job's result file may take to appear; None: submitit's 15 s, meant
    # for network file systems. Only a job that died without a result ever waits it out.
    results_timeout_s: int | None = None

    _slots: dev.SlotPool | None = None

    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        slots = self._slots
        if slots is None or not slots.managed:
            return self._launch(job_overrides, initial_job_idx, None)
        if len(job_overrides) > 1:
            return _one_thread_per_job(
                self.launch, job_overrides, initial_job_idx, len(slots.slots)
            )
        with slots.hold() as slot:  # released when the job ends, also killed or crashed
            return self._launch(job_overrides, initial_job_idx, slot)

    def _launch(
        self, job_overrides: Any, initial_job_idx: int, slot: dev.Slot | None
    ) -> list[JobReturn]:
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
        if slot is not None:
            _give_slot(executor, slot)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        assert self.hydra_context is not None
        job_params: list[Any] = []
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            log.info("\t#%d : %s", idx, shown_overrides(overrides))
            # Composed here (cached per group choices), not re-composed from YAML in the job.
            sweep_config = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(overrides)
            )
            job_params.append(
                (
                    sweep_config,
                    "hydra.sweep.dir",
                    idx,
                    f"job_id_for_{idx}",
                    Singleton.get_state(),
                )
            )
        # A controller restart fails sbatch; the trial waits for it instead of failing.
        jobs = submit_retrying(lambda: executor.map_array(self, *zip(*job_params, strict=True)))
        if self.results_timeout_s is not None:
            for j in jobs:
                j._results_timeout_s = self.results_timeout_s
        while not all(j.done() for j in jobs):
            time.sleep(self.poll_interval_s)
        results = []
        for j in jobs:
            try:
                results.append(j.results()[0])
            except Exception as e:  # no result: the sweeper gets the job id and Slurm's verdict
                raise JobDied.from_submitit(j, e, scheduler=self._EXECUTOR) from e
        return results

    def __call__(
        self,
        sweep_config: DictConfig | list[str],
        job_dir_key: str,
        job_num: int,
        job_id: str,
        singleton_state: dict[Any, Any],
    ) -> JobReturn:
        """Run one trial in the job, from the config the sweeper composed.

        Upstream re-composes the config from the YAML files in every job (~0.25 s of a short
        job's start-up, bench/overhead.py); the sweeper has it at hand already. A list of
        overrides (a job pickled by upstream's launch) is composed here as upstream does.
        """
        if not isinstance(sweep_config, DictConfig):
            return super().__call__(  # type: ignore[no-any-return]
                sweep_config, job_dir_key, job_num, job_id, singleton_state
            )
        import submitit

        assert self.hydra_context is not None and self.task_function is not None
        Singleton.set_state(singleton_state)
        setup_globals()
        with open_dict(sweep_config.hydra.job):
            sweep_config.hydra.job.id = submitit.JobEnvironment().job_id
            sweep_config.hydra.job.num = job_num
        return run_job(
            hydra_context=self.hydra_context,
            task_function=self.task_function,
            config=sweep_config,
            job_dir_key=job_dir_key,
            job_subdir_key="hydra.sweep.subdir",
        )


class LocalLauncher(_FastPollMixin, _UpstreamLocal):  # type: ignore[misc]
    """submitit_local, returning within ``poll_interval_s`` of a job's end.

    ``gpus_per_trial`` / ``devices``: each running trial gets its own GPUs (a slot of
    nemo_rl_hpo/sweep/devices.py) instead of submitit's same-first-k for every job.
    """

    _EXECUTOR = "local"
    # A local job writes its result before its process exits: a killed one (OOM, SIGKILL) has
    # none, and waiting 15 s for it only delays the trial's FAIL and the next trial.
    results_timeout_s = 2

    def __init__(self, gpus_per_trial: int | None = None, devices: Any = None, **params: Any):
        super().__init__(**params)
        self._gpu_options = (gpus_per_trial, devices)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        n_jobs = OmegaConf.select(config, "hydra.sweeper.n_jobs", default=None)
        # No n_jobs (Hydra's basic sweeper: a batch at once): one slot per GPU slot.
        n_jobs = int(n_jobs or dev.local_trials(1, *self._gpu_options))
        self._slots = _device_slots(n_jobs, *self._gpu_options, "hydra.sweeper.n_jobs")

    def __getstate__(self) -> dict[str, Any]:
        """The job gets a pickled launcher: without the sweeper's slots (locks, other jobs)."""
        state = dict(self.__dict__)
        state.pop("_slots", None)
        return state


def _give_slot(executor: Any, slot: dev.Slot) -> None:
    """Make submitit_local start the job with exactly its slot's devices.

    submitit sets ``CUDA_VISIBLE_DEVICES`` to ``visible_gpus[:gpus_per_node]``; ``visible_gpus``
    is a parameter of its LocalExecutor only (not of the AutoExecutor around it) and takes
    integers, so other ids (MIG or GPU UUIDs) are exported by a setup line instead.
    """
    ids = slot.devices or ()
    if all(d.isdigit() for d in ids):
        executor._executor.update_parameters(
            gpus_per_node=len(ids), visible_gpus=[int(d) for d in ids]
        )
    else:
        executor.update_parameters(
            gpus_per_node=0, local_setup=[f"export {dev.ENV}={','.join(ids)}"]
        )


class SlurmLauncher(_FastPollMixin, _UpstreamSlurm):  # type: ignore[misc]
    """submitit_slurm, checking for results every ``poll_interval_s`` (sacct is throttled)."""

    _EXECUTOR = "slurm"
    poll_interval_s = 1.0


class PoolLauncher(Launcher):  # type: ignore[misc]
    """Trials in warm worker processes that are started once and reused (``hydra/launcher=pool``).

    submitit_local starts a fresh Python for every trial: importing torch and the app costs
    seconds, which is most of a short trial's slot time (bench/utilization.py). Here a
    ``concurrent.futures`` process pool keeps ``max_workers`` processes alive for the whole
    sweep; each trial's config is composed in the sweeper (cached per group choices) and run
    with Hydra's ``run_job`` in a worker, as hydra-joblib-launcher does. Payloads travel with
    cloudpickle (the task function usually lives in ``__main__``).

    Each worker is its own one-process pool bound to a slot (nemo_rl_hpo/sweep/devices.py):
    with GPUs, slot ``i``'s worker owns the same ``gpus_per_trial`` devices for the whole
    sweep (its ``CUDA_VISIBLE_DEVICES`` is set before the app is imported).

    Trade-offs against ``local``: no per-trial time limit or log of the submitit job; a worker
    that dies (segfault, out of memory, ``os._exit``) fails the trial it ran (``retry_failed``
    runs it again) and its slot starts a new worker with the same devices.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        start_method: str = "spawn",
        max_trials_per_worker: int | None = None,
        gpus_per_trial: int | None = None,
        devices: Any = None,
    ) -> None:
        self.max_workers = max_workers
        self.start_method = start_method
        self.max_trials_per_worker = max_trials_per_worker
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self._pools: dict[int, ProcessPoolExecutor] = {}
        self._lock = threading.Lock()
        self._gpu_options = (gpus_per_trial, devices)
        self._slots: dev.SlotPool | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function
        n_jobs = OmegaConf.select(config, "hydra.sweeper.n_jobs", default=None)
        # Neither set (Hydra's basic sweeper): one worker per GPU slot, else per core.
        workers = self.max_workers or n_jobs or dev.local_trials(1, *self._gpu_options)
        key = "hydra.sweeper.n_jobs" if workers == n_jobs else "hydra.launcher.max_workers"
        self._slots = _device_slots(int(workers), *self._gpu_options, key)

    def _executor(self, slot: dev.Slot) -> ProcessPoolExecutor:
        with self._lock:
            if slot.index not in self._pools:
                import multiprocessing

                import cloudpickle

                kwargs: dict[str, Any] = {}
                if self.max_trials_per_worker:  # Python >= 3.11
                    kwargs["max_tasks_per_child"] = int(self.max_trials_per_worker)
                # What every trial shares travels once per worker, not once per trial.
                shared = cloudpickle.dumps(
                    (self.hydra_context, self.task_function, Singleton.get_state())
                )
                self._pools[slot.index] = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=multiprocessing.get_context(self.start_method),
                    initializer=_init_worker,
                    initargs=(shared, slot.env()),
                    **kwargs,
                )
            return self._pools[slot.index]

    def _discard(self, slot: dev.Slot, pool: ProcessPoolExecutor) -> None:
        """Drop a slot's broken worker; the slot's next trial starts a new one."""
        with self._lock:
            if self._pools.get(slot.index) is pool:
                del self._pools[slot.index]
        pool.shutdown(wait=False, cancel_futures=True)

    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        import cloudpickle

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        assert self.task_function is not None and self._slots is not None
        if len(job_overrides) > 1:
            return _one_thread_per_job(
                self.launch, job_overrides, initial_job_idx, len(self._slots.slots)
            )
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        (overrides,) = job_overrides
        idx = initial_job_idx
        log.info("\t#%d : %s", idx, shown_overrides(overrides))
        sweep_config = self.hydra_context.config_loader.load_sweep_config(
            self.config, list(overrides)
        )
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = idx
            sweep_config.hydra.job.num = idx
        payload = cloudpickle.dumps(sweep_config)
        with self._slots.hold() as slot:  # a free worker; returned on any end of the trial
            pool = self._executor(slot)
            try:
                return [cloudpickle.loads(pool.submit(_run_in_worker, payload).result())]
            except BrokenProcessPool:
                self._discard(slot, pool)
                raise RuntimeError(
                    "a worker process of hydra/launcher=pool died while this trial ran "
                    "(crash, out of memory or killed)"
                ) from None


# In a pool worker: the sweep's Hydra context, task function and singletons, set once.
_worker_shared: tuple[Any, Any] | None = None


def _init_worker(shared: bytes, env: dict[str, str] | None = None) -> None:
    """Install the sweeper's Hydra singletons once: doing it per trial rescans every plugin.

    ``env`` (the worker's GPU slot) is set first, before unpickling imports the app.
    """
    import cloudpickle

    os.environ.update(env or {})
    global _worker_shared
    hydra_context, task_function, singleton_state = cloudpickle.loads(shared)
    setup_globals()
    Singleton.set_state(singleton_state)
    _worker_shared = (hydra_context, task_function)


def _run_in_worker(payload: bytes) -> bytes:
    """One trial inside a pool worker: Hydra's run_job, as in a submitit job."""
    import cloudpickle
    from hydra.core.hydra_config import HydraConfig

    assert _worker_shared is not None, "pool worker started without _init_worker"
    hydra_context, task_function = _worker_shared
    sweep_config = cloudpickle.loads(payload)
    setup_globals()
    HydraConfig.instance().set_config(sweep_config)
    ret = run_job(
        hydra_context=hydra_context,
        task_function=task_function,
        config=sweep_config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    try:
        return bytes(cloudpickle.dumps(ret))
    except Exception:  # an exception or value that does not pickle: keep its text
        value = ret._return_value
        ret._return_value = RuntimeError(f"{type(value).__name__}: {value}")
        return bytes(cloudpickle.dumps(ret))
