"""What Slurm trials cost, from Slurm's own accounting (local cluster, slurm/start.sh --gpus 4)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nemo_rl_hpo.sweep import cost
from tests.sweeplib import run_app, sacct_runs

pytestmark = [pytest.mark.slurm, pytest.mark.e2e, pytest.mark.slow]


def _slurm(gpus: int) -> list[str]:
    return [
        "hydra/launcher=slurm",
        "hydra.launcher.partition=debug",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        "hydra.launcher.timeout_min=10",
        f"hydra.launcher.gpus_per_node={gpus}",
        "hydra.sweeper.write_report=false",
    ]


def _study(sweep: Path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(sweep / "optuna.journal"))
    )
    return optuna.load_study(study_name="app", storage=storage)


def _sacct_gpu_s(job_id: str) -> tuple[float, int]:
    """(sum over the job's runs of ElapsedRaw x gres/gpu, number of runs), asked here."""
    total, n = 0.0, 0
    for elapsed, tres in sacct_runs(job_id, "ElapsedRaw,AllocTRES"):
        gpus = dict(kv.split("=") for kv in tres.split(",") if "=" in kv).get("gres/gpu", "0")
        total += float(elapsed) * int(gpus)
        n += 1
    return total, n


def _jobs(study: optuna.Study) -> dict[int, dict[str, cost.JobCost]]:
    return cost.job_records(study._storage.get_study_system_attrs(study._study_id))


def test_one_gpu_trials_cost_sacct_elapsed_and_a_budget_stops_them(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = [
        "toy",
        f"hydra.sweep.dir={sweep}",
        *_slurm(1),
        "hydra.sweeper.n_jobs=2",
        "durations=[1]",
    ]
    run_app(*args, "hydra.sweeper.n_trials=6", timeout=600)
    study = _study(sweep)
    jobs = _jobs(study)
    assert len(study.trials) == 6
    for t in study.trials:
        (job,) = jobs[t.number].values()
        # Rule: every trial's cost is Slurm's: Elapsed x 1 GPU of its job.
        assert job.source == "sacct" and job.gpus == 1
        assert job.job_id == t.user_attrs["slurm_job_id"]
        assert job.gpu_s == _sacct_gpu_s(job.job_id)[0] > 0
    # Rule: the sweep's end re-reads sacct; a record that no longer matches it is corrected.
    first = study.trials[0]
    (stale,) = jobs[first.number].values()
    stale.gpu_s = 99.0
    cost.write(study._storage, study._study_id, first.number, str(stale.job_id), stale)
    assert cost.refresh(study, numbers=[first.number], recheck=True) == 1
    assert cost.refresh(study, recheck=True) == 0
    (fixed,) = _jobs(study)[first.number].values()
    assert fixed.gpu_s == _sacct_gpu_s(str(fixed.job_id))[0]
    spent = cost.study_totals(study._storage.get_study_system_attrs(study._study_id)).gpu_s
    # Rule: a budget just above what was spent lets few new trials start, said in one line ...
    tight = (spent + 1.0) / 3600
    out = run_app(
        *args, "hydra.sweeper.n_trials=10", f"hydra.sweeper.budget.gpu_hours={tight}", timeout=600
    )
    said = [ln for ln in (out.stdout + out.stderr).splitlines() if "budget reached" in ln]
    assert len(said) == 1 and "GPU-hours spent" in said[0], out.stdout[-2000:]
    n_after = len(_study(sweep).trials)
    assert 6 < n_after < 10
    # ... and the resume command with a larger budget finishes the study.
    run_app(*args, "hydra.sweeper.n_trials=10", "hydra.sweeper.budget.gpu_hours=1", timeout=600)
    study = _study(sweep)
    assert len(study.trials) == 10
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


def test_a_two_gpu_trial_and_its_confirmation_cost_twice_their_elapsed_time(
    tmp_path: Path,
) -> None:
    run_app(
        "seeded",
        f"hydra.sweep.dir={tmp_path}",
        *_slurm(2),
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.n_jobs=1",
        "hydra.sweeper.confirm.top_k=1",
        "hydra.sweeper.confirm.seeds=1",
    )
    study = _study(tmp_path)
    (t,) = study.trials
    jobs = _jobs(study)[t.number]
    assert len(jobs) == 2, jobs  # the trial's job and its confirmation's
    own = jobs[t.user_attrs["slurm_job_id"]]
    (confirm_key,) = [k for k in jobs if k.startswith(cost.CONFIRM_KEY_PREFIX)]
    confirmed = jobs[confirm_key]
    assert confirmed.job_id != own.job_id and confirm_key == f"confirm-1000-{confirmed.job_id}"
    for job in (own, confirmed):
        elapsed, runs = _sacct_gpu_s(job.job_id)  # type: ignore[arg-type]
        # Rule: gres/gpu=2 in AllocTRES: GPU-seconds are twice the job's elapsed seconds,
        # for a confirmation job (a Slurm job of its own, no trial) as for a trial's.
        assert job.source == "sacct" and job.gpus == 2 and runs == 1
        assert job.gpu_s == 2 * job.wall_s == elapsed
