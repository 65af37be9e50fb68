"""Scheduler faults on a real Slurm: slurmctld restarted mid-sweep, a node that fails.

These tests start a Slurm cluster of their own (``slurm/start.sh`` with a private state dir and
ports, no /etc link) and restart its controller or take its node down for real; the shared test
cluster other tests use is never touched. Counts come from the study after the sweep ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nemo_rl_hpo.sweep import cost
from tests.sweeplib import APPS, REPO

pytestmark = [pytest.mark.slurm, pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

# Per test process, so two runs at once do not share a cluster; the shared one has 16817-16819.
STATE = Path(
    os.environ.get("NEMO_FAULTS_SLURM_DIR", f"/tmp/nemo-rl-hpo-slurm-faults-{os.getpid()}")
)
PORT_BASE = os.environ.get("NEMO_FAULTS_SLURM_PORT_BASE", str(17000 + 3 * (os.getpid() % 1000)))
SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
    "hydra.launcher.gpus_per_node=null",
]


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "NEMO_SLURM_DIR": str(STATE),
        "NEMO_SLURM_PORT_BASE": PORT_BASE,
        "SLURM_CONF": str(STATE / "slurm.conf"),
    }


def _run(*cmd: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(cmd), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc


@pytest.fixture(scope="module")
def own_slurm() -> Iterator[str]:
    """A second single-node Slurm beside the shared one; purged afterwards. Yields the node."""
    _run("bash", "slurm/install.sh", timeout=600)
    _run("bash", "slurm/start.sh", "--no-system-conf", timeout=300)
    try:
        yield _run("sinfo", "-h", "-N", "-o", "%N").stdout.split()[0]
    finally:
        _run("bash", "slurm/stop.sh", "--purge", check=False)


@pytest.fixture(autouse=True)
def _keep_cluster_logs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[None]:
    """On failure, copy the cluster's logs and sacct's view of every job under the test's tmp
    dir, and say where: the module's cluster is purged at the end, and with it why Slurm did
    what it did."""
    yield
    rep = getattr(request.node, "rep_call", None)  # set by conftest's hook
    if rep is None or not rep.failed:
        return
    kept = tmp_path / "slurm-logs"
    if (STATE / "log").is_dir():
        shutil.copytree(STATE / "log", kept, dirs_exist_ok=True)
    kept.mkdir(parents=True, exist_ok=True)
    fields = "JobID,JobName%30,State%20,Reason%30,ExitCode,Submit,Start,End,NodeList"
    acct = _run("sacct", "-a", "-S", "now-1days", "-o", fields, "--parsable2", check=False)
    (kept / "sacct.txt").write_text(acct.stdout + acct.stderr)
    print(f"\nSlurm logs of the failed test kept in {kept}")


def _study(sweep: Path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(sweep / "optuna.journal"))
    )
    return optuna.load_study(study_name="app", storage=storage)


def _at_work(sweep: Path) -> set[int]:
    """Running trials whose job started its work (it records its dir first)."""
    if not (sweep / "optuna.journal").exists():
        return set()
    return {
        t.number
        for t in _study(sweep).get_trials(deepcopy=False)
        if t.state == TrialState.RUNNING and "job_dir" in t.user_attrs
    }


def _wait(predicate, timeout: float, what: str, proc=None) -> None:  # type: ignore[no-untyped-def]
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep ended (exit {proc.returncode}) before {what}")
        try:
            if predicate():
                return
        except Exception:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _sweep(sweep: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = sweep.parent / f"{sweep.name}.log"
    args = [
        sys.executable,
        str(APPS / "toy" / "app.py"),
        "-m",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweeper.write_report=false",
        *SLURM,
        *extra,
    ]
    with open(log, "wb") as f:
        proc = subprocess.Popen(
            args, cwd=APPS / "toy", stdout=f, stderr=subprocess.STDOUT, env=_env()
        )
    return proc, log


def _slept(t: optuna.trial.FrozenTrial) -> tuple[float, float]:
    start, end = (Path(t.user_attrs["job_dir"]) / "slept.txt").read_text().split()
    return float(start), float(end)


def test_controller_restart_mid_sweep_loses_nothing(own_slurm: str, tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    n_trials = 6
    proc, log = _sweep(
        sweep, f"hydra.sweeper.n_trials={n_trials}", "hydra.sweeper.n_jobs=2", "durations=[6]"
    )
    try:
        _wait(lambda: len(_at_work(sweep)) == 2, 300, "two Slurm jobs at work", proc)
        in_flight = _at_work(sweep)
        pid = int((STATE / "run" / "slurmctld.pid").read_text())
        os.kill(pid, 15)
        t_down = time.time()
        _wait(lambda: not Path(f"/proc/{pid}").exists(), 30, "slurmctld to exit")
        time.sleep(20)
        _run("bash", "slurm/start.sh", "--no-system-conf")  # starts only what is not running
        t_up = time.time()
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    out = log.read_text()
    trials = _study(sweep).get_trials(deepcopy=False)
    # Rule: nothing lost, counted twice or left RUNNING: exactly n_trials complete.
    assert [t.state for t in trials].count(TrialState.COMPLETE) == n_trials, out[-3000:]
    assert len(trials) == n_trials
    assert len({t.user_attrs["slurm_job_id"] for t in trials}) == n_trials
    # Rule: the trials in flight when slurmctld went away finished and were recorded.
    for t in trials:
        if t.number in in_flight:
            assert _slept(t)[1] < t_up, "the job should have ended while slurmctld was down"
    # Rule: a trial asked during the outage was submitted once the controller was back (its
    # sbatch was retried, not failed), and the outage was said once.
    waited = [t for t in trials if t_down < t.datetime_start.timestamp() < t_up]  # type: ignore[union-attr]
    assert waited, out[-3000:]
    assert all(_slept(t)[0] > t_up - 2 for t in waited)
    assert out.count("Slurm controller unreachable") == 1, out[-3000:]
    assert out.count("Slurm controller back after") == 1, out[-3000:]
    first = min(_slept(t)[0] for t in waited)
    print(
        f"\nFAULT slurmctld restart: away {t_up - t_down:.1f} s; "
        f"retried job at work {first - t_up:.1f} s after"
    )


def test_node_failure_fails_lost_trials_with_slurms_reason_and_retries_them(
    own_slurm: str, tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep"
    n_trials = 4
    proc, log = _sweep(
        sweep,
        f"hydra.sweeper.n_trials={n_trials}",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.retry_failed=1",
        "durations=[30,30,3,3,3,3]",  # by trial number: 0 and 1 run long, on the node that fails
        # The scheduler must not requeue the killed jobs itself (Slurm's default would re-run
        # them in place): this is the path of a cluster with JobRequeue=0.
        "+hydra.launcher.additional_parameters.no_requeue=true",
    )
    node = own_slurm
    try:
        _wait(lambda: _at_work(sweep) == {0, 1}, 300, "trials 0 and 1 at work", proc)
        lost = {0, 1}
        _run("scontrol", "update", f"nodename={node}", "state=down", "reason=fault-test")
        t_down = time.time()
        # Kept out of service for a while (ReturnToService=2 would take it back at once).
        _run("scontrol", "update", f"nodename={node}", "state=drain", "reason=fault-test")
        time.sleep(10)
        _run("scontrol", "update", f"nodename={node}", "state=resume")
        t_back = time.time()
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        _run("scontrol", "update", f"nodename={node}", "state=resume", check=False)
    trials = _study(sweep).get_trials(deepcopy=False)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    retries = {t.user_attrs.get("retry_of"): t for t in trials if "retry_of" in t.user_attrs}
    # Rule: each trial whose job the node took down failed with Slurm's verdict ...
    assert {t.number for t in failed} == lost, [(t.number, t.state) for t in trials]
    jobs = cost.job_records(_study(sweep)._storage.get_study_system_attrs(_study(sweep)._study_id))
    for t in failed:
        assert "NODE_FAIL" in t.user_attrs["fail_reason"], t.user_attrs["fail_reason"]
        # ... and was run again, complete.
        assert retries[t.number].state == TrialState.COMPLETE
        # Rule: the killed run is paid for once, as Slurm accounted it up to the failure.
        (job,) = jobs[t.number].values()
        assert job.source == "sacct" and job.wall_s == _elapsed(job.job_id) > 0
    # Rule: the sweep still reaches n_trials complete, nothing left RUNNING.
    assert [t.state for t in trials].count(TrialState.COMPLETE) == n_trials
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    done = max(t.datetime_complete.timestamp() for t in trials)  # type: ignore[union-attr]
    print(
        f"\nFAULT node down: {t_back - t_down:.1f} s; "
        f"sweep done {done - t_back:.1f} s after it was back"
    )


def _elapsed(job_id: str | None) -> float:
    out = _run("sacct", "-n", "-X", "-P", "--duplicates", "-o", "ElapsedRaw", "-j", str(job_id))
    return sum(float(x) for x in out.stdout.split())


def test_accounting_down_costs_are_measured_locally_and_refreshed_later(
    own_slurm: str, tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep"
    pidfile = STATE / "run" / "slurmdbd.pid"
    pid = int(pidfile.read_text())
    os.kill(pid, signal.SIGTERM)  # this test's own cluster: slurmdbd down, slurmctld up
    _wait(lambda: not Path(f"/proc/{pid}").exists(), 30, "slurmdbd to stop")
    try:
        proc, log = _sweep(sweep, "hydra.sweeper.n_trials=1", "durations=[2]")
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        _run("bash", "slurm/start.sh", "--no-system-conf", timeout=300)  # slurmdbd back
    study = _study(sweep)
    (t,) = study.trials
    (job,) = cost.job_records(study._storage.get_study_system_attrs(study._study_id))[0].values()
    # Rule: without accounting the job's own wall time stands, marked local ...
    assert t.state == TrialState.COMPLETE
    assert job.source == "local" and job.job_id == t.user_attrs["slurm_job_id"]
    assert job.wall_s >= 2
    assert "Slurm's accounting has no record of job" in log.read_text()
    # ... until `status --refresh-cost` fills it in from sacct (slurmctld hands its records
    # to slurmdbd once it is back).
    cmd = [sys.executable, "-m", "nemo_rl_hpo.cli", "status", str(sweep), "--refresh-cost"]

    def refreshed() -> bool:
        subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, timeout=60, check=True)
        rec = cost.job_records(study._storage.get_study_system_attrs(study._study_id))[0]
        return next(iter(rec.values())).source == "sacct"

    _wait(refreshed, 120, "the accounting to come back")
    (job,) = cost.job_records(study._storage.get_study_system_attrs(study._study_id))[0].values()
    # slurmdbd may still correct the job's end by a second while slurmctld's backlog lands.
    assert job.wall_s == pytest.approx(_elapsed(job.job_id), abs=1.0)
