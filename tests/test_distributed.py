"""Several sweepers on one study, crash safety, and secrets that never reach a file or a log."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nemo_rl_hpo.sweep.records import SYS_OVERFLOW
from nemo_rl_hpo.sweep.storage import open_storage
from tests.sweeplib import APPS, run_app

pytestmark = [pytest.mark.e2e]

LOCAL = [
    "hydra/launcher=local",
    "hydra.launcher.timeout_min=10",
]


@contextlib.contextmanager
def _storage(url: str) -> Iterator[optuna.storages.BaseStorage]:
    """Open a storage and close its connection pool (psycopg warns about leaked connections)."""
    storage = open_storage(url)
    try:
        yield storage
    finally:
        engine = getattr(storage, "engine", None)
        if engine is not None:
            engine.dispose()


def _real(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """Trials that ran (an over-budget ask by a racing sweeper is marked and not counted)."""
    return [t for t in trials if not t.system_attrs.get(SYS_OVERFLOW)]


def _cooperate(sweep: Path, storage: str, n_sweepers: int = 3) -> optuna.Study:
    args = [
        sys.executable,
        str(APPS / "toy" / "app.py"),
        "-m",
        f"hydra.sweep.dir={sweep}",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.study_name=shared",
        "hydra.sweeper.n_trials=30",
        "hydra.sweeper.n_jobs=2",
        "durations=[0.3,0.6,0.1]",
        "hydra.sweeper.write_report=false",
        *LOCAL,
    ]
    env = dict(os.environ)
    procs = [
        subprocess.Popen(
            args, cwd=APPS / "toy", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
        )
        for _ in range(n_sweepers)
    ]
    outs = [p.communicate(timeout=900)[0].decode() for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-3000:]
    with _storage(storage) as opened:
        study = optuna.load_study(study_name="shared", storage=opened)
        trials = study.get_trials()
        if storage.startswith("postgresql"):
            optuna.delete_study(study_name="shared", storage=opened)
    return trials


def _check_shared(all_trials: list[optuna.trial.FrozenTrial], sweep: Path) -> None:
    trials = _real(all_trials)
    # Rule: n_trials is a global budget: exactly 30 finished trials across 3 sweepers.
    assert len(trials) == 30
    assert all(t.state == TrialState.COMPLETE for t in trials)
    # Rule: no two trials share a job dir; every trial wrote its own.
    dirs = [t.user_attrs["job_dir"] for t in trials]
    assert len(set(dirs)) == 30
    assert all((Path(d) / "slept.txt").exists() for d in dirs)
    pids = {t.system_attrs["nemo_rl_hpo:owner"]["pid"] for t in trials}
    assert len(pids) == 3, "every sweeper should have run trials"
    assert (sweep / "optimization_results.json").exists()


@pytest.mark.postgres
def test_three_sweepers_share_a_postgres_study(tmp_path: Path, postgres_url: str) -> None:
    _check_shared(_cooperate(tmp_path, postgres_url, 3), tmp_path)


def test_three_sweepers_share_a_journal_file(tmp_path: Path) -> None:
    _check_shared(_cooperate(tmp_path, f"journal://{tmp_path / 'shared.journal'}", 3), tmp_path)


def test_sigkill_loop_loses_nothing_and_counts_nothing_twice(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = [
        sys.executable,
        str(APPS / "toy" / "app.py"),
        "-m",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweeper.n_trials=14",
        "hydra.sweeper.retry_failed=3",
        "hydra.sweeper.n_jobs=2",
        "durations=[0.4,0.8,0.2]",
        "hydra.sweeper.write_report=false",
        *LOCAL,
    ]
    rng = random.Random(7)
    seen_complete: dict[int, float] = {}
    storage = f"sqlite:///{sweep / 'optuna.db'}"
    for _ in range(5):
        proc = subprocess.Popen(
            args, cwd=APPS / "toy", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(2.0, 6.0))  # a random moment: start-up, mid-trial, between trials
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if (sweep / "optuna.db").exists():
            try:
                study = optuna.load_study(study_name="app", storage=storage)
            except KeyError:
                continue
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                seen_complete.setdefault(t.number, t.value)  # type: ignore[arg-type]
    out = subprocess.run(args, cwd=APPS / "toy", capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    study = optuna.load_study(study_name="app", storage=storage)
    trials = _real(study.get_trials(deepcopy=False))
    complete = {t.number: t.value for t in trials if t.state == TrialState.COMPLETE}
    # Rule: no finished trial is lost, or changed, by later crashes.
    for number, value in seen_complete.items():
        assert complete[number] == value
    # Rule: stale RUNNING trials were failed and retried; the budget is met exactly.
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert len(complete) == 14
    failed = [t for t in trials if t.state == TrialState.FAIL]
    retried = {t.user_attrs.get("retry_of") for t in trials}
    assert all(f.number in retried for f in failed)
    # Rule: one job dir per trial, never reused.
    numbered = [p for p in sweep.iterdir() if p.name.isdigit()]
    assert len(numbered) == len({p.name for p in numbered})


def test_trial_killed_by_sigkill_fails_and_the_sweep_goes_on(tmp_path: Path) -> None:
    run_app(
        "toy",
        f"hydra.sweep.dir={tmp_path}",
        *LOCAL,
        "kill_above=0.5",
        "hydra.sweeper.max_failure_rate=1.0",
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.sampler.seed=0",
        timeout=600,
    )
    study = optuna.load_study(study_name="app", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    killed = [t for t in study.trials if t.params["x"] > 0.5]
    assert killed, "the seed should draw some x > 0.5"
    for t in study.trials:
        if t.params["x"] > 0.5:
            # Rule: a SIGKILLed job is FAIL with a reason; the others complete.
            assert t.state == TrialState.FAIL
            assert t.user_attrs.get("fail_reason")
            # a local job's submitit "job id" is a pid: no Slurm verdict is made up for it
            assert "Slurm" not in t.user_attrs["fail_reason"], t.user_attrs["fail_reason"]
        else:
            assert t.state == TrialState.COMPLETE


@pytest.mark.postgres
def test_password_never_written_or_logged(tmp_path: Path, postgres_url: str) -> None:
    password = postgres_url.split(":")[2].split("@")[0]
    assert len(password) >= 6
    study_name = f"secret-{uuid.uuid4().hex[:8]}"
    proc = run_app(
        "toy",
        f"hydra.sweep.dir={tmp_path}",
        f"hydra.sweeper.storage={postgres_url}",
        f"hydra.sweeper.study_name={study_name}",
        "hydra.sweeper.n_trials=3",
        "steps=3",
        *LOCAL,
        "hydra.sweeper.n_jobs=2",
        timeout=600,
    )
    cli = subprocess.run(
        [sys.executable, "-m", "nemo_rl_hpo.cli", "status", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NEMO_RL_HPO_STORAGE_PASSWORD": password},
    )
    # Rule: the password is in no log line, printed command or CLI output ...
    for text in (proc.stdout, proc.stderr, cli.stdout, cli.stderr):
        assert password not in text
    assert "Resume this sweep with" in proc.stdout + proc.stderr
    # ... and in no file the sweep wrote: results, report, job dirs' .hydra/*.yaml, pickles.
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "hydra.yaml" for p in files)
    assert any(p.name == "optimization_results.json" for p in files)
    for p in files:
        assert password.encode() not in p.read_bytes(), p
    with _storage(postgres_url) as opened:
        study = optuna.load_study(study_name=study_name, storage=opened)
        assert len(study.trials) == 3
        optuna.delete_study(study_name=study_name, storage=opened)


def test_trial_asked_but_never_claimed_is_failed_and_retried(tmp_path: Path) -> None:
    # A sweeper killed between `ask` and claiming its trial leaves a bare RUNNING trial.
    db = f"sqlite:///{tmp_path / 'optuna.db'}"
    with _storage(db) as opened:
        optuna.create_study(study_name="app", storage=opened).ask()
    # ... two minutes ago (a crash, then the resume): past the grace a live sweeper gets between
    # its ask and its claim, so the test need not wait that grace out.
    with sqlite3.connect(tmp_path / "optuna.db") as con:
        con.execute("UPDATE trials SET datetime_start = datetime(datetime_start, '-120 seconds')")
    run_app(
        "toy",
        f"hydra.sweep.dir={tmp_path}",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.retry_failed=1",
        "hydra.sweeper.write_report=false",
        timeout=300,
    )
    with _storage(db) as opened:
        trials = optuna.load_study(study_name="app", storage=opened).get_trials()
    # Rule: the unclaimed trial holds no budget forever: it is failed once its grace period
    # passes, and the sweep still ends with exactly n_trials complete and nothing RUNNING.
    assert trials[0].state == TrialState.FAIL
    assert "orphaned" in trials[0].user_attrs["fail_reason"]
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 3
    assert all(t.state != TrialState.RUNNING for t in trials)
