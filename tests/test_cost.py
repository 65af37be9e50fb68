"""What a job cost, the compute budget and the anytime plot, without a cluster (the Slurm
accounting itself: test_cost_slurm.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nemo_rl_hpo import slurm
from nemo_rl_hpo.report import cost_figures
from nemo_rl_hpo.sweep import cost
from nemo_rl_hpo.sweep.budget import Budget, BudgetError
from nemo_rl_hpo.sweep.budget import status as budget_status
from nemo_rl_hpo.sweep.core import AsyncSweep, LaunchOutcome, Proposal, SweepSettings
from tests.sweeplib import load, run_app


def test_slurm_fields_are_read_as_slurm_writes_them() -> None:
    tres = "billing=2,cpu=2,gres/gpu=8,mem=2000M,node=2"
    # Rule: AllocTRES counts are the job's totals; a missing TRES is 0.
    assert slurm.tres_count(tres, "gres/gpu") == 8
    assert slurm.tres_count("cpu=1,mem=1000M,node=1", "gres/gpu") == 0
    # Rule: durations with days, hours, minutes and fractions.
    assert slurm.duration_s("1-02:03:04") == 93784
    assert slurm.duration_s("00:01.500") == 1.5
    assert slurm.duration_s("") == 0.0


def _job(gpus: int, wall: float, *, ended: bool = True, started: float = 0.0) -> cost.JobCost:
    return cost.JobCost(
        gpus=gpus, wall_s=wall, gpu_s=gpus * wall, cpu_s=wall, ended=ended, started=started
    )


def test_a_cluster_that_does_not_account_gpus_uses_the_gpus_the_job_saw() -> None:
    sacct = cost.JobCost(gpus=0, wall_s=100.0, source="sacct", ended=True, job_id="7")
    local = cost.JobCost(gpus=2, wall_s=99.0, gpu_s=198.0, cpu_s=50.0, started=5.0, ended=True)
    cost.merge_local(sacct, local)
    # Rule: Slurm's elapsed time, the job's GPUs and CPU seconds, the job's start.
    assert (sacct.gpus, sacct.gpu_s, sacct.cpu_s, sacct.started) == (2, 200.0, 50.0, 5.0)
    assert sacct.source == "sacct"


def test_running_jobs_count_as_in_flight_at_their_elapsed_time() -> None:
    now = 1000.0
    t = cost.totals([_job(2, 100.0), _job(1, 50.0), _job(4, 0, ended=False, started=now - 30)], now)
    # Rule: ended jobs are spent (wall x GPUs); a running one is elapsed x GPUs in flight.
    assert t.gpu_s == 250.0 and t.jobs == 2
    assert t.in_flight_gpu_s == 120.0 and t.gpus_in_use == 4
    both = cost.combined([t, cost.totals([_job(1, 10.0)], now)])
    assert both.gpu_s == 260.0 and both.jobs == 3


def test_a_budget_that_is_not_positive_hours_is_one_line_naming_the_key() -> None:
    for raw, key in (({"gpu_hours": -1}, "gpu_hours"), ({"gpu_hour": 1}, "gpu_hour")):
        with pytest.raises(BudgetError, match=key) as err:
            Budget.from_mapping(raw, where="hydra.sweeper.budget")
        assert "\n" not in str(err.value) and "hydra.sweeper.budget" in str(err.value)


def _study_with_jobs(jobs: dict[int, list[cost.JobCost]]) -> optuna.Study:
    study = optuna.create_study()
    for number, records in jobs.items():
        t = study.ask()
        assert t.number == number
        for i, c in enumerate(records):
            cost.write(study._storage, study._study_id, number, f"job{i}", c)
        study.tell(t, float(10 - number))
    return study


def test_budget_says_once_spent_plus_in_flight_reaches_it() -> None:
    now = time.time()
    study = _study_with_jobs(
        {0: [_job(1, 1800.0)], 1: [_job(2, 0, ended=False, started=now - 900)]}
    )
    attrs = study._storage.get_study_system_attrs(study._study_id)
    # Rule: 0.5 spent + 0.5 in flight reaches a 1.0 GPU-hour budget, with the amounts.
    line = Budget(gpu_hours=1.0).check(attrs, now)
    assert line is not None and "0.5 GPU-hours spent + 0.5 in flight >= 1" in line
    # ... and does not reach 1.5; status shows what is left and when it runs out.
    assert Budget(gpu_hours=1.5).check(attrs, now) is None
    (gpu,) = budget_status(attrs, Budget(gpu_hours=1.5), now)
    assert gpu.remaining_h == pytest.approx(0.5, abs=1e-3)
    assert gpu.eta_s == pytest.approx(900, rel=0.01)  # 0.5 h left at 2 GPUs busy


def test_a_cpu_budget_counts_cpu_seconds() -> None:
    study = _study_with_jobs({0: [_job(0, 3600.0)]})  # a CPU-only job: 1 CPU-hour, 0 GPU
    attrs = study._storage.get_study_system_attrs(study._study_id)
    line = Budget(cpu_hours=1.0).check(attrs)
    assert line is not None and line.startswith("CPU-hour budget reached: 1 CPU-hours spent")
    assert Budget(gpu_hours=1.0).check(attrs) is None
    # Rule: without any GPU use, status shows CPU-hours too.
    assert [s.kind for s in budget_status(attrs, Budget())] == ["GPU", "CPU"]


def test_anytime_curve_ends_at_the_total_and_counts_failed_trials() -> None:
    study = _study_with_jobs({0: [_job(1, 360.0)], 1: [_job(1, 720.0), _job(2, 360.0)]})
    t = study.ask()  # a failed trial: paid for, no value
    cost.write(study._storage, study._study_id, t.number, "x", _job(1, 360.0))
    study.tell(t, state=TrialState.FAIL)
    costs = cost.trial_totals(study._storage.get_study_system_attrs(study._study_id))
    a = cost_figures.anytime(study.trials, costs, study.direction)
    # Rule: x is the cumulative cost in finishing order; y the best so far.
    assert a.unit == "GPU-hours"
    assert a.cost == pytest.approx([0.1, 0.5, 0.6])
    assert a.best == [10.0, 9.0, 9.0]
    assert a.cost[-1] == pytest.approx(
        cost.study_totals(study._storage.get_study_system_attrs(study._study_id)).gpu_hours
    )
    assert a.one_run == pytest.approx(0.25)  # median complete trial: (0.1 + 0.4) / 2


@pytest.mark.e2e
def test_pool_trials_cost_wall_time_per_gpu_under_a_budget_and_the_report_plots_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        f"hydra.sweep.dir={tmp_path}",
        "hydra/launcher=pool",
        "hydra.launcher.devices=[0,1]",
        "hydra.launcher.gpus_per_trial=1",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "durations=[0.6]",
    ]
    first = run_app(
        "toy", *args, "hydra.sweeper.budget.gpu_hours=1e-4", "hydra.sweeper.write_report=false"
    )
    # Rule: once spent + in flight reach the budget (0.36 GPU-s), no trial starts; one line.
    assert len(load(tmp_path, "app").trials) < 4
    said = [ln for ln in (first.stdout + first.stderr).splitlines() if "budget reached" in ln]
    assert len(said) == 1 and "GPU-hours spent" in said[0] and ">= 0.0001" in said[0]
    assert "(stopped at the compute budget)" in first.stdout.strip().splitlines()[-1]
    # Rule: the same command with a raised budget tops the study up to n_trials.
    run_app("toy", *args, "hydra.sweeper.budget.gpu_hours=1")
    study = load(tmp_path, "app")
    assert len(study.trials) == 4 and all(t.state == TrialState.COMPLETE for t in study.trials)
    records = cost.job_records(study._storage.get_study_system_attrs(study._study_id))
    for t in study.trials:
        (job,) = records[t.number].values()
        # Rule: a pool trial on fake GPU 0 or 1 costs its wall time x 1 GPU, measured locally.
        assert job.gpus == 1 and job.source == "local" and job.ended
        assert job.gpu_s == pytest.approx(job.wall_s)
        assert 0.6 <= job.wall_s <= t.duration.total_seconds()
    results = json.loads((tmp_path / "optimization_results.json").read_text())
    total = sum(j.gpu_s for js in records.values() for j in js.values()) / 3600
    # Rule: the results carry the totals, and each trial its own cost.
    assert results["cost"]["gpu_hours"] == pytest.approx(total, abs=1e-6)
    assert results["budget"] == {"gpu_hours": 1.0, "cpu_hours": None}
    assert all(r["cost"]["gpu_hours"] > 0 for r in results["trials"])
    # Rule: the report has the anytime plot, whose last point is the total.
    page = (tmp_path / "report" / "anytime.html").read_text()
    assert "cumulative GPU-hours" in page
    costs = cost.trial_totals(study._storage.get_study_system_attrs(study._study_id))
    a = cost_figures.anytime(study.trials, costs, study.direction)
    assert a.cost[-1] == pytest.approx(total, abs=1e-6)
    assert "GPU-hours" in (tmp_path / "report" / "index.html").read_text()
    summary = (tmp_path / "summary.txt").read_text()
    assert f"cost: {total:.4g} GPU-hours" in summary and "GPU-hour budget 1" in summary
    # `status` shows spent, in flight and remaining of the budget.
    from nemo_rl_hpo.cli import main

    capsys.readouterr()
    assert main(["status", str(tmp_path)]) == 0
    shown = capsys.readouterr().out
    assert "GPU-hours" in shown and "spent" in shown and "of 1 remaining" in shown


@pytest.mark.e2e
def test_bad_budget_is_one_line_before_any_trial(tmp_path: Path) -> None:
    proc = run_app(
        "toy", f"hydra.sweep.dir={tmp_path}", "hydra.sweeper.budget.gpu_hours=0", check=False
    )
    assert proc.returncode != 0
    assert "hydra.sweeper.budget.gpu_hours must be a positive number of hours" in proc.stderr
    assert not (tmp_path / "optuna.db").exists() or not load(tmp_path, "app").trials


@pytest.mark.e2e
def test_gpu_hours_can_be_an_objective_traded_against_the_loss(tmp_path: Path) -> None:
    run_app(
        "toy",
        f"hydra.sweep.dir={tmp_path}",
        "hydra/launcher=basic",
        "hydra/sweeper/sampler=nsgaii",
        "hydra.sweeper.direction=[minimize,minimize]",
        "hydra.sweeper.objectives=[loss,gpu_hours]",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.write_report=false",
        "mode=dict",
        "durations=[0.3]",
        env={"CUDA_VISIBLE_DEVICES": "0"},  # the in-process trials see one (fake) GPU
    )
    study = load(tmp_path, "app")
    jobs = cost.trial_totals(study._storage.get_study_system_attrs(study._study_id))
    for t in study.trials:
        # Rule: the trial's second value is its own cost in GPU-hours (0.3 s x 1 GPU or more).
        assert t.state == TrialState.COMPLETE
        assert t.values[1] == pytest.approx(jobs[t.number].gpu_hours)
        assert t.values[1] >= 0.3 / 3600
    results = json.loads((tmp_path / "optimization_results.json").read_text())
    assert results["objectives"] == ["loss", "gpu_hours"] and results["pareto_front"]


class _Endless:
    """A proposer that always has another job (as a scheduler with promotions would)."""

    def __init__(self, study: optuna.Study) -> None:
        self.study = study
        self.asked = 0

    def adopt(self, reattached: object) -> list[Proposal]:
        return []

    def ask(self) -> Proposal | None:
        self.asked += 1
        return Proposal(self.study.ask(), [])

    def tell(self, trial: object) -> bool:
        return False

    def pending(self) -> bool:
        return True


def test_the_loop_gates_every_proposer_on_the_budget(caplog: pytest.LogCaptureFixture) -> None:
    study = optuna.create_study()
    proposer = _Endless(study)

    def launch(p: Proposal) -> LaunchOutcome:  # a job of 1 GPU for 10 s, as the job records it
        job = cost.JobCost(gpus=1, wall_s=10.0, gpu_s=10.0, ended=True, started=time.time())
        cost.write(study._storage, study._study_id, p.number, "job", job)
        study.tell(p.number, 1.0)
        return LaunchOutcome(ok=True)

    settings = SweepSettings(n_trials=0, n_jobs=1, budget=Budget(gpu_hours=35 / 3600))
    with caplog.at_level("WARNING"):
        summary = AsyncSweep(study, proposer, launch, settings).run()
    # Rule: a proposer that never runs out stops at the budget (4 x 10 GPU-s >= 35), once said.
    assert proposer.asked == 4 and len(study.trials) == 4
    assert summary.budget_reached is not None
    assert "0.01111 GPU-hours spent + 0 in flight >= 0.009722" in summary.budget_reached
    assert sum("budget reached" in r.getMessage() for r in caplog.records) == 1
    assert study.user_attrs["nemo_rl_hpo:budget"] == {"gpu_hours": 35 / 3600, "cpu_hours": None}


@pytest.mark.e2e
def test_with_seed_repeats_gpu_hours_is_one_runs_cost(tmp_path: Path) -> None:
    run_app(
        "seeded",
        f"hydra.sweep.dir={tmp_path}",
        "hydra/launcher=basic",
        "hydra/sweeper/sampler=nsgaii",
        "hydra.sweeper.direction=[minimize,minimize]",
        "hydra.sweeper.objectives=[loss,gpu_hours]",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.repeats=2",
        "hydra.sweeper.write_report=false",
        "steps=3",
        "step_sleep=0.1",
        env={"CUDA_VISIBLE_DEVICES": "0"},
    )
    study = load(tmp_path, "app")
    jobs = cost.job_records(study._storage.get_study_system_attrs(study._study_id))
    for t in study.trials:
        seeds = [j.gpu_s / 3600 for j in jobs[t.number].values()]
        # Rule: each seed is its own job; the value is the seeds' mean cost (one run's), and
        # the trial's cost (report, budget) is their sum.
        assert t.state == TrialState.COMPLETE and len(seeds) == 2
        assert t.values[1] == pytest.approx(sum(seeds) / 2)
