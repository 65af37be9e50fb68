"""`hydra/launcher=pool`: trials in warm worker processes, reused from trial to trial."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.sweeplib import load, run_app, states

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

POOL = ["hydra/launcher=pool", "hydra.sweeper.write_report=false"]


def test_pool_runs_every_trial_in_a_few_reused_worker_processes(tmp_path: Path) -> None:
    run_app(
        "toy",
        f"hydra.sweep.dir={tmp_path}",
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.n_jobs=2",
        "durations=[0.2,0.4]",
        *POOL,
    )
    study = load(tmp_path, "app")
    assert states(study) == {"COMPLETE": 8}
    pids = {t.user_attrs["job_pid"] for t in study.trials}
    # Warm workers: two processes served all eight trials, none of them the sweeper's own.
    assert len(pids) <= 2
    assert os.getpid() not in pids
    for t in study.trials:  # each trial kept its own Hydra job dir and logs
        job_dir = Path(t.user_attrs["job_dir"])
        assert (job_dir / ".hydra" / "overrides.yaml").is_file()
        assert (job_dir / "slept.txt").is_file()


def test_pool_trials_report_and_are_pruned(tmp_path: Path) -> None:
    run_app(
        "toy",
        f"hydra.sweep.dir={tmp_path}",
        "hydra.sweeper.n_trials=10",
        "hydra.sweeper.n_jobs=2",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=2",
        # Seeded: unseeded, one CI run drew ten trials none of which was worse than the median
        # of those before it, so none was pruned.
        "hydra.sweeper.sampler.seed=3",
        "steps=8",
        "mode=dict",
        "hydra.sweeper.objectives=[loss]",
        *POOL,
    )
    study = load(tmp_path, "app")
    counts = states(study)
    assert counts.get("PRUNED", 0) >= 1, counts
    assert counts.get("PRUNED", 0) + counts.get("COMPLETE", 0) == 10
    for t in study.trials:
        assert len(t.intermediate_values) >= 1


def test_a_worker_that_dies_fails_its_trial_and_the_sweep_goes_on(tmp_path: Path) -> None:
    proc = run_app(
        "toy",
        f"hydra.sweep.dir={tmp_path}",
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.n_jobs=1",
        "hydra.sweeper.max_failure_rate=1.0",
        "kill_above=1.5",  # x in [-2, 3]: some trials SIGKILL their own worker
        "hydra.sweeper.sampler.seed=3",
        *POOL,
    )
    study = load(tmp_path, "app")
    killed = [t for t in study.trials if t.params["x"] > 1.5]
    assert killed, "seed 3 should sample some x above 1.5"
    for t in killed:
        assert t.state.name == "FAIL"
        assert "worker process of hydra/launcher=pool died" in t.user_attrs["fail_reason"]
    survivors = [t for t in study.trials if t.params["x"] <= 1.5]
    assert survivors and all(t.state.name == "COMPLETE" for t in survivors)
    assert len(study.trials) == 8
    assert "Traceback" not in proc.stdout + proc.stderr
