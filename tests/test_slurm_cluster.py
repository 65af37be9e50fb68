"""The local Slurm cluster of slurm/start.sh works the way submitit and the launcher presets need.

    slurm/start.sh --gpus 4 && pytest -m slurm tests/test_slurm_cluster.py

These tests fail (they do not skip) when no cluster answers: selecting ``-m slurm`` means one
is expected. Each test uses a fresh submitit folder: job ids restart at 1 after a reset, and a
reused folder could hold a stale result under the same id.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest

# The job processes cannot import this test module: send its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[1]
STATE = Path(os.environ.get("NEMO_SLURM_DIR", "/tmp/nemo-rl-hpo-slurm"))
START_HINT = "start it with `slurm/start.sh --gpus 4` (after `slurm/install.sh`)"


def _run(*cmd: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def slurm_conf(slurm_cluster: str) -> Iterator[str]:
    """SLURM_CONF of a cluster whose node is up, exported for submitit's sbatch/sacct calls."""
    conf = os.environ.get("SLURM_CONF") or str(STATE / "slurm.conf")
    if not Path(conf).is_file():
        pytest.fail(f"no Slurm config at {conf}; {START_HINT}")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf
    try:
        proc = _run("sinfo", "-h", "-N", "-o", "%T")
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.fail(f"sinfo did not answer ({e}); {START_HINT}")
    state = proc.stdout.strip()
    if proc.returncode != 0 or state not in {"idle", "mixed", "allocated"}:
        pytest.fail(f"Slurm node is not up (sinfo: {state or proc.stderr.strip()!r}); {START_HINT}")
    yield conf
    if old is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old


def _executor(folder: Path, **params: object):  # type: ignore[no-untyped-def]
    import submitit

    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    # Small requests so that two jobs fit the 2-core test node side by side.
    executor.update_parameters(
        timeout_min=10, slurm_partition="debug", cpus_per_task=1, mem_gb=1, **params
    )
    return executor


def _sacct_state(job_id: str) -> str:
    proc = _run("sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id)
    return proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else ""


def _wait_sacct(job_id: str, prefix: str, timeout_s: float = 60) -> str:
    """sacct lags the controller by a moment: poll until the job's state starts with ``prefix``."""
    deadline = time.monotonic() + timeout_s
    state = ""
    while time.monotonic() < deadline:
        state = _sacct_state(job_id)
        if state.startswith(prefix):
            return state
        time.sleep(0.5)
    raise AssertionError(f"sacct shows job {job_id} as {state!r}, expected {prefix}*")


def _gpu_count() -> int:
    gres = _run("sinfo", "-h", "-N", "-o", "%G").stdout.strip()
    m = re.search(r"gpu:(\d+)", gres)
    return int(m.group(1)) if m else 0


def _env(name: str) -> str | None:
    return os.environ.get(name)


def _sleep(seconds: float) -> str:
    time.sleep(seconds)
    return "slept"


def _array_member(x: int) -> tuple[int, str | None]:
    return x * x, os.environ.get("SLURM_ARRAY_TASK_ID")


def test_job_runs_and_returns(slurm_conf: str, tmp_path: Path) -> None:
    job = _executor(tmp_path).submit(pow, 2, 10)
    assert job.result() == 1024
    # Accounting works: the job is on record as COMPLETED (submitit reads states from sacct).
    _wait_sacct(job.job_id, "COMPLETED")


def test_array_of_three(slurm_conf: str, tmp_path: Path) -> None:
    jobs = _executor(tmp_path).map_array(_array_member, [1, 2, 3])
    results = [j.result() for j in jobs]
    assert [r[0] for r in results] == [1, 4, 9]
    # Each ran as its own array task: the Hydra launcher always submits arrays.
    assert sorted(r[1] for r in results) == ["0", "1", "2"]


def test_cancel_is_recorded_cancelled(slurm_conf: str, tmp_path: Path) -> None:
    job = _executor(tmp_path).submit(_sleep, 300)
    _wait_sacct(job.job_id, "RUNNING")
    job.cancel()
    # KillWait=5 keeps this to a few seconds; the default 30 s would make every cancel slow.
    _wait_sacct(job.job_id, "CANCELLED", timeout_s=30)


def test_fake_gpu_request_sets_cuda_visible_devices(slurm_conf: str, tmp_path: Path) -> None:
    n = _gpu_count()
    if n < 1:
        pytest.fail("the node has no (fake) GPUs; restart with `slurm/start.sh --gpus 4`")
    job = _executor(tmp_path, gpus_per_node=1).submit(_env, "CUDA_VISIBLE_DEVICES")
    assert job.result() == "0"


def test_more_gpus_than_exist_is_rejected(slurm_conf: str, tmp_path: Path) -> None:
    import submitit

    n = _gpu_count()
    if n < 1:
        pytest.fail("the node has no (fake) GPUs; restart with `slurm/start.sh --gpus 4`")
    with pytest.raises(submitit.core.utils.FailedJobError, match="node configuration"):
        _executor(tmp_path, gpus_per_node=n + 1).submit(_env, "CUDA_VISIBLE_DEVICES")


APP = """
import os
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg):
    job = os.environ.get("SLURM_JOB_ID")
    out = Path(HydraConfig.get().runtime.output_dir)
    (out / "result.txt").write_text(f"{cfg.x} {job}")
    return float(cfg.x)


if __name__ == "__main__":
    main()
"""


def test_hydra_app_outside_repo_runs_on_slurm_preset(slurm_conf: str, tmp_path: Path) -> None:
    """Any installed app finds hydra/launcher=slurm (pkg://nemo_rl_hpo.hydra_conf)."""
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "my_app.py").write_text(textwrap.dedent(APP))
    (app_dir / "config.yaml").write_text("x: 0\n")
    sweep_dir = tmp_path / "sweep"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [
            sys.executable,
            "my_app.py",
            "-m",
            "hydra/launcher=slurm",
            "hydra.launcher.gpus_per_node=null",
            "hydra.launcher.partition=debug",
            f"hydra.sweep.dir={sweep_dir}",
            "x=1,2",
        ],
        cwd=app_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted((sweep_dir / str(i) / "result.txt").read_text().split() for i in (0, 1))
    assert [r[0] for r in results] == ["1", "2"]
    # Both ran as Slurm jobs, not in the sweeper's process.
    assert all(r[1] != "None" for r in results), results
