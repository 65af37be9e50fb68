"""Sweeps whose trials are real Slurm jobs on the local cluster (slurm/start.sh --gpus 4)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nemo_rl_hpo.sweep import cost
from tests.sweeplib import REPO, run_app, sacct_runs, states, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.e2e, pytest.mark.slow]

SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
    "hydra.launcher.gpus_per_node=null",
]
# A one-parameter space for tests about the jobs rather than the search, every trial one job
# to the end (the trial's default pauses at rungs; tests/test_fidelity.py runs that on Slurm).
FIXED = ["~search", "learning_rate=tag(log, interval(1e-3, 1e-2))", "~hydra/sweeper/fidelity"]
SHORT = [
    "max_steps=120",
    "eval_interval=20",
    "checkpoint_interval=20",
    "warmup_ratio=interval(0, 0.33)",
    "scheduler.step_size=range(20, 100, 20)",
    # bf16 is emulated, ~5x slower, on CPUs without AVX-512 (as CI may be); not what these check
    "precision=fp32",
]


def _study(sweep: Path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(sweep / "optuna.journal"))
    )
    return optuna.load_study(study_name="train", storage=storage)


def _sacct(job_id: str) -> str:
    return subprocess.run(
        ["sacct", "-n", "-X", "-j", job_id, "-o", "JobID,State,AllocTRES%60", "--parsable2"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout


def test_pruned_sweep_of_slurm_jobs(tmp_path: Path) -> None:
    run_app(
        REPO / "train.py",
        f"hydra.sweep.dir={tmp_path}",
        *SLURM,
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=2",
        "hydra.sweeper.pruner.n_warmup_steps=20",
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.sampler.seed=0",
        "learning_rate=tag(log, interval(1e-5, 3e-2))",
        *SHORT,
        cwd=REPO,
        timeout=900,
    )
    study = _study(tmp_path)
    counts = states(study)
    # Rule: all six trials finish through Slurm, at least one of them PRUNED by the median.
    assert counts.get("COMPLETE", 0) + counts.get("PRUNED", 0) == 6, counts
    assert counts.get("PRUNED", 0) >= 1, counts
    for t in study.trials:
        job_id = t.user_attrs["slurm_job_id"]
        # Rule: each trial records its Slurm job, and sacct knows it as completed.
        assert re.fullmatch(r"\d+(_\d+)?", job_id)
        assert "COMPLETED" in _sacct(job_id)
        assert t.user_attrs["node"]


def test_fake_gpu_trials_get_a_gpu_each(tmp_path: Path) -> None:
    run_app(
        REPO / "train.py",
        f"hydra.sweep.dir={tmp_path}",
        *[a for a in SLURM if "gpus_per_node" not in a],
        "hydra.launcher.gpus_per_node=1",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "max_steps=20",
        "eval_interval=10",
        "warmup_steps=5",
        *FIXED,
        cwd=REPO,
        timeout=600,
    )
    study = _study(tmp_path)
    assert states(study) == {"COMPLETE": 2}
    for t in study.trials:
        # Rule: the job was allocated one GPU (Slurm's accounting shows the TRES).
        assert "gres/gpu=1" in _sacct(t.user_attrs["slurm_job_id"])


def _start_sweep(sweep: Path, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = sweep.parent / f"{sweep.name}.log"
    args = [
        sys.executable,
        str(REPO / "train.py"),
        "-m",
        f"hydra.sweep.dir={sweep}",
        *SLURM,
        *extra,
    ]
    with open(log, "wb") as f:
        proc = subprocess.Popen(args, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
    return proc, log


def test_requeued_trial_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc, log = _start_sweep(
        sweep,
        "hydra.sweeper.n_trials=1",
        "max_steps=300",
        "eval_interval=20",
        "checkpoint_interval=20",
        "warmup_steps=10",
        *FIXED,
    )
    try:
        wait_for(lambda: (sweep / "0" / "last.pt").exists(), 300, "the first checkpoint", 0.5)
        job_id = _study(sweep).trials[0].user_attrs["slurm_job_id"]
        subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=30)
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    study = _study(sweep)
    (t,) = study.trials
    # Rule: one trial record, complete, with the final value of the full run.
    assert t.state == TrialState.COMPLETE
    assert t.user_attrs["metric:step"] == 300
    assert t.user_attrs["slurm_restart_count"] >= 1
    # Rule: the requeued job resumed from its checkpoint (the step counter proves it).
    job_log = (sweep / "0" / "train.log").read_text()
    match = re.search(r"resumed from .*last\.pt at step (\d+)", job_log)
    assert match and int(match.group(1)) > 0, job_log[-2000:]
    # Rule: the trial's cost counts each run of the requeued job once (sacct --duplicates).
    runs = sacct_runs(job_id, "ElapsedRaw")
    (job,) = cost.job_records(study._storage.get_study_system_attrs(study._study_id))[0].values()
    assert len(runs) >= 2 and job.source == "sacct"
    assert job.wall_s == sum(float(r[0]) for r in runs)


def test_driver_restart_reattaches_to_running_jobs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    extra = [
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        # Jobs must outlive the resumed driver's start-up (~8 s on 2 busy cores): 400 steps
        # (~9 s) sometimes ended first, leaving nothing to re-attach to.
        "max_steps=1200",
        "eval_interval=100",
        "warmup_steps=10",
        *FIXED,
    ]
    proc, log = _start_sweep(sweep, *extra)

    def both_running() -> bool:
        trials = _study(sweep).trials
        return len(trials) == 2 and all("slurm_job_id" in t.user_attrs for t in trials)

    wait_for(both_running, 300, "two running Slurm trials", every=0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ids = [t.user_attrs["slurm_job_id"] for t in _study(sweep).trials]
    assert all(t.state == TrialState.RUNNING for t in _study(sweep).trials)
    resume = re.search(r"Resume this sweep with: (.+)", log.read_text())
    assert resume
    out = subprocess.run(
        resume.group(1), shell=True, cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    study = _study(sweep)
    # Rule: the resumed driver re-attached to both jobs by their ids and recorded their results;
    # it launched nothing new.
    assert states(study) == {"COMPLETE": 2}
    assert [t.user_attrs["slurm_job_id"] for t in study.trials] == ids
    assert (
        out.stdout.count("re-attaching to trial") + out.stderr.count("re-attaching to trial") == 2
    )


def test_trial_over_its_time_limit_fails_with_reason(tmp_path: Path) -> None:
    proc = run_app(
        REPO / "train.py",
        f"hydra.sweep.dir={tmp_path}",
        *[a for a in SLURM if "timeout_min" not in a],
        "hydra.launcher.timeout_min=1",
        # USR2 at 45 s: submitit installs its handler only after unpickling the task, which
        # imports torch; on a cold 2-core CI machine that took longer than the 10 s of a 50 s
        # delay, and USR2 then killed the job outright (no result, so no time-out reason).
        "hydra.launcher.signal_delay_s=15",
        "hydra.launcher.max_num_timeout=0",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.max_failure_rate=1.0",
        "max_steps=100000",
        "eval_interval=500",
        "warmup_steps=10",
        *FIXED,
        cwd=REPO,
        timeout=600,
        check=False,
    )
    study = _study(tmp_path)
    (t,) = study.trials
    # Rule: over its limit the trial is recorded FAIL, with the reason, and the sweep ends.
    assert t.state == TrialState.FAIL, proc.stdout[-2000:]
    reason = t.user_attrs["fail_reason"].lower()
    assert "timed-out" in reason or "timeout" in reason or "time limit" in reason, reason
