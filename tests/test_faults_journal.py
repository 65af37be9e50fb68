"""A journal-file study under crashes: three sweepers share it, one is SIGKILLed again and again.

Each kill lands at a random moment (start-up, mid-trial, while writing); the killed sweeper is
restarted with the resume command it printed. Afterwards the journal must reopen and the study
must hold exactly ``n_trials`` complete trials, none lost, none counted twice, none RUNNING.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nemo_rl_hpo.sweep.records import SYS_OVERFLOW
from tests.sweeplib import APPS

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]


def _load(journal: Path) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    return optuna.load_study(study_name="shared", storage=storage).get_trials()


def test_three_sweepers_on_one_journal_one_killed_five_times(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    journal = sweep / "shared.journal"
    n_trials = 24
    args = [
        sys.executable,
        str(APPS / "toy" / "app.py"),
        "-m",
        f"hydra.sweep.dir={sweep}",
        f"hydra.sweeper.storage=journal://{journal}",
        "hydra.sweeper.study_name=shared",
        f"hydra.sweeper.n_trials={n_trials}",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.retry_failed=3",
        "durations=[0.6,1.2,0.3]",
        "hydra.sweeper.write_report=false",
        "hydra/launcher=local",
        "hydra.launcher.timeout_min=10",
    ]

    def start(cmd: list[str] | str, log: Path) -> subprocess.Popen[bytes]:
        with open(log, "wb") as f:
            return subprocess.Popen(
                cmd,
                shell=isinstance(cmd, str),
                cwd=APPS / "toy",
                stdout=f,
                stderr=subprocess.STDOUT,
            )

    peers = [start(args, tmp_path / f"peer{i}.log") for i in range(2)]
    victim_log = tmp_path / "victim0.log"
    victim = start(args, victim_log)
    rng = random.Random(11)
    seen: dict[int, float] = {}
    resume: str | None = None
    restarts: list[tuple[float, Path]] = []
    try:
        deadline = time.time() + 120
        while resume is None and time.time() < deadline and victim.poll() is None:
            found = re.search(r"Resume this sweep with: (.+)", victim_log.read_text())
            resume = found.group(1) if found else None
            time.sleep(0.2)
        assert resume, victim_log.read_text()[-3000:]
        for kill in range(5):
            # A random moment: start-up, mid-trial, between trials, while writing the journal.
            time.sleep(rng.uniform(2.0, 6.0))
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait()
            if journal.exists():
                for t in _load(journal):
                    if t.state == TrialState.COMPLETE:
                        seen.setdefault(t.number, t.value)  # type: ignore[arg-type]
            victim_log = tmp_path / f"victim{kill + 1}.log"
            # The command it printed, as a user would (exec: the kill must reach the sweeper).
            victim = start(f"exec {resume}", victim_log)
            restarts.append((time.time(), victim_log))
        for p in [*peers, victim]:
            assert p.wait(timeout=600) == 0
    finally:
        for p in [*peers, victim]:
            if p.poll() is None:
                p.kill()
    # Rule: the journal reopens, every line of it whole (no torn write left by a kill).
    lines = journal.read_bytes().split(b"\n")
    assert lines[-1] == b""
    for line in lines[:-1]:
        json.loads(line)
    trials = [t for t in _load(journal) if not t.system_attrs.get(SYS_OVERFLOW)]
    complete = {t.number: t.value for t in trials if t.state == TrialState.COMPLETE}
    # Rule: nothing lost: every trial seen complete between kills is still there, unchanged.
    assert seen, "some trials should have finished between kills"
    for number, value in seen.items():
        assert complete[number] == value
    # Rule: nothing counted twice or left RUNNING: n_trials complete; each failure (a trial
    # whose sweeper was killed) was retried.
    assert len(complete) == n_trials
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    retried = {t.user_attrs.get("retry_of") for t in trials}
    assert all(t.number in retried for t in trials if t.state == TrialState.FAIL)
    dirs = [t.user_attrs["job_dir"] for t in trials if "job_dir" in t.user_attrs]
    assert len(dirs) == len(set(dirs))
    # Time to recover: from each restart to its first launched trial (log timestamps).
    waits = []
    for started, log in restarts:
        stamp = re.search(r"^\[([\d-]+ [\d:]+),(\d+)\]\[HYDRA\] \t#\d+ : ", log.read_text(), re.M)
        if stamp:
            when = time.mktime(time.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S"))
            waits.append(when + int(stamp.group(2)) / 1000 - started)
    print(
        f"\nFAULT journal SIGKILL x5: restart -> first trial launched "
        f"{sorted(round(w, 1) for w in waits)} s"
    )
