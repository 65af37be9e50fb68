"""A Slurm job that Slurm ended before the trial started is lost infrastructure, not a failed trial.

Slurm fails a job whose batch step cannot be set up (an output file it cannot open, a launch or
node failure) before the app runs: no output at all, ExitCode 0:53 for the I/O case. The sweeper
submits such a job again, a bounded number of times, and records every lost job on the trial
(``lost_jobs``); a job that ran and died still fails the trial with Slurm's verdict.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tests.sweeplib import APPS, wait_for


class _ScriptedLauncher:
    """``launch`` raises the given JobDied errors in turn, then returns a finished job."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def launch(self, job_overrides: list[list[str]], initial_job_idx: int) -> list[object]:
        from hydra.core.utils import JobStatus

        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)

        class _Ret:
            status = JobStatus.COMPLETED

        return [_Ret()]


def _lost(job_id: str) -> Exception:
    from hydra_plugins.nemo_rl_hpo._slurm import JobDied

    return JobDied(
        "the job never started (no output; sacct: ExitCode 0:53, Reason None)",
        job_id=job_id,
        scheduler="slurm",
        state="FAILED",
        never_started=True,
    )


def test_job_slurm_ended_before_it_started_is_submitted_again_within_a_bound() -> None:
    from hydra_plugins.nemo_rl_hpo import _launch
    from hydra_plugins.nemo_rl_hpo._slurm import JobDied

    study = optuna.create_study()
    # Rule: a job Slurm ended before it started is submitted again; the trial records each lost
    # job (id, state, Slurm's words) and its outcome is that of the job that ran.
    jobs = _launch.HydraJobs()
    jobs.launcher = _ScriptedLauncher(_lost("5"), _lost("7"))  # type: ignore[assignment]
    trial = study.ask()
    outcome = jobs.launch(trial, ["x=1"], {})
    assert outcome.ok and jobs.launcher.calls == 3  # type: ignore[attr-defined]
    lost = study.trials[0].user_attrs["lost_jobs"]
    assert [j["job_id"] for j in lost] == ["5", "7"]
    assert all(j["state"] == "FAILED" and "0:53" in j["reason"] for j in lost)

    # Rule: the resubmissions are bounded: past LOST_JOB_RESUBMITS the trial fails with a reason
    # that says how many jobs were lost and Slurm's last verdict.
    n = _launch.LOST_JOB_RESUBMITS + 1
    jobs.launcher = _ScriptedLauncher(*[_lost(str(i)) for i in range(n + 5)])  # type: ignore[assignment]
    trial = study.ask()
    outcome = jobs.launch(trial, ["x=1"], {})
    assert not outcome.ok and jobs.launcher.calls == n  # type: ignore[attr-defined]
    assert outcome.error is not None and outcome.error.startswith(f"{n} Slurm jobs of this trial")
    assert "Slurm job 3 ended FAILED; the job never started" in outcome.error
    assert len(study.trials[1].user_attrs["lost_jobs"]) == n

    # Rule: a job that ran and died (killed, NODE_FAIL while running) is not resubmitted here:
    # it fails the trial with Slurm's verdict (retry_failed decides about a re-run).
    died = JobDied("killed", job_id="9", scheduler="slurm", state="NODE_FAIL")
    jobs.launcher = _ScriptedLauncher(died)  # type: ignore[assignment]
    outcome = jobs.launch(study.ask(), ["x=1"], {})
    assert not outcome.ok and outcome.error == "Slurm job 9 ended NODE_FAIL; killed"
    assert jobs.launcher.calls == 1  # type: ignore[attr-defined]


@pytest.mark.slurm
@pytest.mark.e2e
def test_job_that_could_not_open_its_log_runs_again(tmp_path: Path) -> None:
    """A real Slurm job ended before its batch script ran; the trial completes on a later job."""
    sweep = tmp_path / "sweep"
    late = tmp_path / "late"  # the jobs' batch output dir: missing until the first job is lost
    log = tmp_path / "sweep.log"
    args = [
        sys.executable,
        str(APPS / "toy" / "app.py"),
        "-m",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweeper.write_report=false",
        "hydra.sweeper.n_trials=1",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=debug",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        "hydra.launcher.timeout_min=10",
        "hydra.launcher.gpus_per_node=null",
        # What a late mkdir of submitit's %j folder did: Slurm cannot open the batch step's
        # log and ends the job FAILED (ExitCode 0:53) before anything runs.
        f"+hydra.launcher.additional_parameters.output={late}/%j.out",
        f"+hydra.launcher.additional_parameters.error={late}/%j.err",
    ]
    with open(log, "w") as f:
        proc = subprocess.Popen(args, cwd=APPS / "toy", stdout=f, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "submitting it again" in log.read_text(), 300, "a lost job")
        late.mkdir()
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(sweep / "optuna.journal"))
    )
    (t,) = optuna.load_study(study_name="app", storage=storage).trials
    lost = t.user_attrs["lost_jobs"]
    # Rule: the trial completed on a job that ran; every job Slurm ended before it started is
    # recorded with its id and Slurm's words, and none of them is the job that ran. (The dir
    # is made after the first loss is logged; a resubmission may beat it: 1 to 3 lost jobs.)
    assert t.state == optuna.trial.TrialState.COMPLETE
    assert 1 <= len(lost) <= 3, lost
    ids = [j["job_id"] for j in lost]
    assert len(set(ids)) == len(ids) and t.user_attrs["slurm_job_id"] not in ids
    for j in lost:
        assert j["state"] == "FAILED", j
        assert "never started" in j["reason"] and "ExitCode 0:53" in j["reason"], j
    assert log.read_text().count("submitting it again") == len(lost)
