"""GPU slots: each running trial gets its own devices, handed back when it ends (any way).

The e2e tests give the launchers a fake device list (``hydra.launcher.devices``), so they run on
a CPU machine: what is checked is each trial's ``CUDA_VISIBLE_DEVICES`` (recorded by the job as
the ``devices`` attribute) and when it slept (``slept.txt``, stamped inside the trial).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from nemo_rl_hpo.sweep import devices as dev
from tests.sweeplib import load, run_app

FAKE = "hydra.launcher.devices=[0,1,2,3]"
SKEWED = "durations=[0.3,2.0,0.3,0.3,1.2,0.3,0.3,0.8]"  # trial k sleeps durations[k % 8]


# ------------------------------------------------------------------------------ planning
def test_slots_cut_the_visible_devices_into_fixed_disjoint_groups() -> None:
    slots = dev.plan(2, 2, env={"CUDA_VISIBLE_DEVICES": "4,5,6,7"})
    assert [s.devices for s in slots] == [("4", "5"), ("6", "7")]
    assert slots[1].env() == {"CUDA_VISIBLE_DEVICES": "6,7"}


def test_auto_is_one_device_per_trial_with_gpus_and_hands_off_without(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert [s.devices for s in dev.plan(2, None, env={"CUDA_VISIBLE_DEVICES": "0,1"})] == [
        ("0",),
        ("1",),
    ]
    # A CPU-only machine: no slot touches CUDA_VISIBLE_DEVICES (nothing changes for its trials).
    monkeypatch.setattr(dev.glob, "glob", lambda pattern: [])
    assert all(s.env() == {} for s in dev.plan(3, None, env={}))
    # gpus_per_trial=0 hides the GPUs on purpose.
    assert dev.plan(1, 0, env={"CUDA_VISIBLE_DEVICES": "0"})[0].env() == {
        "CUDA_VISIBLE_DEVICES": ""
    }


def test_device_nodes_are_found_when_cuda_visible_devices_is_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nodes = ["/dev/nvidia1", "/dev/nvidiactl", "/dev/nvidia0", "/dev/nvidia-uvm"]
    monkeypatch.setattr(dev.glob, "glob", lambda pattern: nodes)
    assert dev.visible_devices({})[0] == ["0", "1"]


def test_too_many_trials_for_the_devices_is_one_line_naming_both_numbers() -> None:
    with pytest.raises(dev.DeviceConfigError) as e:
        dev.plan(5, 1, devices=[0, 1, 2, 3])
    msg = str(e.value)
    assert "\n" not in msg
    assert "n_jobs=5" in msg and "need 5 devices" in msg and "only 4" in msg
    with pytest.raises(dev.DeviceConfigError, match="gpus_per_trial must be 0 or more"):
        dev.plan(1, -1, devices=[0])
    with pytest.raises(dev.DeviceConfigError, match="twice"):
        dev.plan(1, 1, devices="0,0")


def test_a_slot_is_held_by_one_thread_at_a_time_and_returned_on_error() -> None:
    pool = dev.SlotPool(dev.plan(3, 1, devices="a,b,c"))
    holders: dict[int, int] = {}
    clash: list[int] = []
    lock = threading.Lock()

    def trial(k: int) -> None:
        try:
            with pool.hold() as slot:
                with lock:
                    if slot.index in holders:
                        clash.append(slot.index)
                    holders[slot.index] = k
                time.sleep(0.002)
                with lock:
                    del holders[slot.index]
                if k % 5 == 0:
                    raise RuntimeError("a crashing trial")
        except RuntimeError:
            pass

    threads = [threading.Thread(target=trial, args=(k,)) for k in range(60)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Rule: no two trials ever hold the same slot; crashed trials gave theirs back.
    assert clash == []
    assert sorted(pool._free) == [0, 1, 2]


# ------------------------------------------------------------------------------------ e2e
def _runs(sweep_dir: Path) -> list[tuple[int, str, tuple[str, ...], float, float]]:
    """(number, state, devices, sleep start, sleep end) of every trial that slept."""
    out = []
    for t in load(sweep_dir, "app").trials:
        slept = Path(t.user_attrs["job_dir"]) / "slept.txt"
        start, end = (float(x) for x in slept.read_text().split())
        out.append((t.number, t.state.name, tuple(t.user_attrs["devices"]), start, end))
    return out


def _no_overlap_on_a_device(runs: list[tuple[int, str, tuple[str, ...], float, float]]) -> None:
    for a in runs:
        for b in runs:
            if a[0] < b[0] and set(a[2]) & set(b[2]):
                # Rule: two trials on one device never ran at the same time.
                assert a[4] <= b[3] or b[4] <= a[3], (a, b)


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_local_trials_get_their_own_device_and_a_killed_trial_gives_it_back(
    tmp_path: Path,
) -> None:
    run_app(
        "toy",
        f"hydra.sweep.dir={tmp_path}",
        "hydra/launcher=local",
        FAKE,
        "hydra.launcher.gpus_per_trial=1",
        "hydra.sweeper.n_jobs=4",
        "hydra.sweeper.n_trials=12",
        SKEWED,
        "kill_above=1.5",  # x in [-2, 3]: trials above SIGKILL themselves after sleeping
        "hydra.sweeper.sampler.seed=3",
        "hydra.sweeper.max_failure_rate=1.0",
        "hydra.sweeper.write_report=false",
    )
    runs = _runs(tmp_path)
    assert len(runs) == 12
    assert all(len(r[2]) == 1 and r[2][0] in "0123" for r in runs)
    assert len({r[2] for r in runs}) == 4  # four trials in flight used all four devices
    _no_overlap_on_a_device(runs)
    study = load(tmp_path, "app")
    killed = [r for r, t in zip(runs, study.trials, strict=True) if t.params["x"] > 1.5]
    assert killed and all(r[1] == "FAIL" for r in killed), "seed 3 samples some x above 1.5"
    # Rule: a SIGKILLed trial's device goes to a trial that starts after it died.
    reused = [k for k in killed if any(r[2] == k[2] and r[3] >= k[4] for r in runs)]
    assert reused, killed


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_pool_workers_keep_their_devices_across_trials(tmp_path: Path) -> None:
    run_app(
        "toy",
        f"hydra.sweep.dir={tmp_path}",
        "hydra/launcher=pool",
        FAKE,
        "hydra.sweeper.n_jobs=4",
        "hydra.sweeper.n_trials=12",
        SKEWED,
        "hydra.sweeper.write_report=false",
    )
    runs = _runs(tmp_path)
    _no_overlap_on_a_device(runs)
    by_worker: dict[int, set[tuple[str, ...]]] = {}
    for t in load(tmp_path, "app").trials:
        by_worker.setdefault(t.user_attrs["job_pid"], set()).add(tuple(t.user_attrs["devices"]))
    # Rule: each warm worker ran every one of its trials on the same device, its own.
    assert len(by_worker) == 4
    assert all(len(d) == 1 for d in by_worker.values())
    assert len(set().union(*by_worker.values())) == 4


@pytest.mark.e2e
@pytest.mark.timeout(120)
@pytest.mark.parametrize("launcher", ["local", "pool"])
def test_more_trials_than_devices_is_one_error_line_before_any_job(
    tmp_path: Path, launcher: str
) -> None:
    proc = run_app(
        "toy",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"hydra/launcher={launcher}",
        FAKE,
        "hydra.sweeper.n_jobs=5",
        check=False,
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    lines = [ln for ln in out.splitlines() if "need 5 devices" in ln]
    assert len(lines) == 1 and "only 4" in lines[0], out
    assert "Traceback" not in out
    assert not (tmp_path / "sweep").exists()  # no study, no job


# ------------------------------------------------------------------------ CPU slots (n_jobs)
def test_default_n_jobs_uses_the_machine_for_local_launchers_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from omegaconf import OmegaConf

    from hydra_plugins.nemo_rl_hpo._resolvers import default_n_jobs

    monkeypatch.setattr(dev, "cpu_cores", lambda: 8)
    monkeypatch.setattr(dev.glob, "glob", lambda pattern: [])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)

    def launcher(name: str, **kw: object) -> object:
        return OmegaConf.create({"_target_": f"x.{name}", **kw})

    # Rule: CPU slots: threads per trial x trials in flight = cores.
    assert default_n_jobs(1, launcher("PoolLauncher")) == 8
    assert default_n_jobs(2, launcher("LocalLauncher")) == 4
    assert default_n_jobs(16, launcher("PoolLauncher")) == 1
    # Rule: with GPUs, one trial per GPU slot (never more trials than the devices hold).
    assert default_n_jobs(1, launcher("PoolLauncher", devices=[0, 1, 2])) == 3
    assert default_n_jobs(1, launcher("LocalLauncher", devices="0,1,2,3", gpus_per_trial=2)) == 2
    assert default_n_jobs(1, launcher("LocalLauncher", devices=[0, 1], gpus_per_trial=0)) == 8
    # Rule: the basic launcher runs one at a time; SLURM keeps the sweeper's default of 2.
    assert default_n_jobs(1, launcher("BasicLauncher")) == 1
    assert default_n_jobs(1, launcher("SlurmLauncher")) == 2


def test_pool_without_n_jobs_has_one_worker_per_gpu_slot() -> None:
    """Hydra's basic sweeper sets no n_jobs: the pool then sizes itself to the devices."""
    from omegaconf import OmegaConf

    from hydra_plugins.nemo_rl_hpo.launchers import PoolLauncher

    pool = PoolLauncher(devices=[0, 1, 2])
    pool.setup(hydra_context=None, task_function=None, config=OmegaConf.create({"hydra": {}}))  # type: ignore[arg-type]
    assert pool._slots is not None
    assert [s.devices for s in pool._slots.slots] == [("0",), ("1",), ("2",)]
