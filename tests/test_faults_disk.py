"""A full disk under the sweep dir: a real small filesystem (tmpfs) filled while trials run.

The sweep must stop with one line naming what could not be written and how to resume, leave
its study readable and no half-written results file, and the printed resume command must
finish the sweep once there is space again. Needs root (mount).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nemo_rl_hpo.sweep.records import SYS_OVERFLOW, SYS_PAUSED
from tests.sweeplib import APPS

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs: a real filesystem that fills up (unmounted afterwards)."""
    if os.geteuid() != 0:
        pytest.fail("the full-disk test mounts a tmpfs and needs root (CI runs as root)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(path: Path) -> Path:
    filler = path / "filler"
    with contextlib.suppress(OSError), open(filler, "wb", buffering=0) as f:
        while True:
            f.write(b"\0" * 4096)
    return filler


def _trials(sweep: Path) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.RDBStorage(f"sqlite:///{sweep / 'optuna.db'}")
    try:
        return optuna.load_study(study_name="app", storage=storage).get_trials()
    finally:
        storage.engine.dispose()


def test_full_disk_stops_with_one_line_and_the_resume_command_finishes(small_fs: Path) -> None:
    sweep = small_fs / "sweep"
    n_trials = 8
    args = [
        sys.executable,
        str(APPS / "toy" / "app.py"),
        "-m",
        f"hydra.sweep.dir={sweep}",
        f"hydra.sweeper.n_trials={n_trials}",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.retry_failed=2",
        "durations=[1.0]",
        "hydra/launcher=local",
        "hydra.launcher.timeout_min=10",
    ]
    proc = subprocess.Popen(
        args, cwd=APPS / "toy", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        end = time.time() + 240
        before: dict[int, float] = {}
        while time.time() < end and proc.poll() is None:
            with contextlib.suppress(Exception):
                done = [t for t in _trials(sweep) if t.state == TrialState.COMPLETE]
                if len(done) >= 2:
                    before = {t.number: t.value for t in done}  # type: ignore[misc]
                    break
            time.sleep(0.3)
        assert before, "two trials should finish before the disk fills"
        filler = _fill(small_fs)
        t_full = time.time()
        out, _ = proc.communicate(timeout=240)
        stopped_after = time.time() - t_full
    finally:
        if proc.poll() is None:
            proc.kill()
    # Rule: the sweep stops with one line that names what it could not write, under the full
    # filesystem, and how to resume; no traceback.
    assert proc.returncode != 0, out[-3000:]
    lines = [ln for ln in out.splitlines() if "no space left on device" in ln.lower()]
    assert len(lines) == 1, out[-3000:]
    assert str(small_fs) in lines[0] and "resume with: " in lines[0], lines[0]
    assert "Traceback" not in out
    # Rule: no half-written results file (written atomically, or not at all).
    for p in sweep.glob("optimization_results.*"):
        if p.suffix == ".json":
            json.loads(p.read_text())
    assert not list(sweep.glob(".*.tmp"))
    # Rule: the study is intact: what finished before the disk filled is still there.
    complete = {t.number: t.value for t in _trials(sweep) if t.state == TrialState.COMPLETE}
    for number, value in before.items():
        assert complete[number] == value
    filler.unlink()
    resume = lines[0].split("resume with: ", 1)[1]
    t_resume = time.time()
    again = subprocess.run(
        resume, shell=True, cwd=APPS / "toy", capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    resumed_s = time.time() - t_resume
    trials = [t for t in _trials(sweep) if not t.system_attrs.get(SYS_OVERFLOW)]
    retried = {t.user_attrs.get("retry_of") for t in trials}
    # Rule: once there is space the printed command finishes the sweep: n_trials complete,
    # nothing RUNNING, every failure the full disk caused retried, the results file whole.
    assert sum(t.state == TrialState.COMPLETE for t in trials) == n_trials
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert all(t.number in retried for t in trials if t.state == TrialState.FAIL)
    results = json.loads((sweep / "optimization_results.json").read_text())
    assert results
    for number, value in before.items():
        assert {t.number: t.value for t in trials}[number] == value
    print(
        f"\nFAULT full disk: stopped {stopped_after:.1f} s after it filled; "
        f"resumed sweep {resumed_s:.1f} s"
    )
    assert re.search(r"MiB free", lines[0])


def test_journal_on_a_full_disk_keeps_no_torn_line_and_reopens(small_fs: Path) -> None:
    from nemo_rl_hpo.sweep.storage import open_storage

    journal = small_fs / "study.journal"
    study = optuna.create_study(study_name="j", storage=open_storage(f"journal://{journal}"))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    filler = _fill(small_fs)
    # A log line larger than what is left: the write is cut short by ENOSPC.
    size = journal.stat().st_size
    with pytest.raises(OSError):
        study.set_user_attr("big", "y" * 200_000)
    # Rule: the failed write left nothing behind, so the journal stays readable ...
    assert journal.stat().st_size == size
    assert journal.read_bytes().endswith(b"\n")
    filler.unlink()
    # ... and once there is space it takes new trials, and a fresh reader sees all of them.
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    reopened = optuna.load_study(study_name="j", storage=open_storage(f"journal://{journal}"))
    assert [t.state for t in reopened.trials] == [TrialState.COMPLETE] * 5


def test_journal_drops_a_torn_tail_left_by_a_killed_writer(tmp_path: Path) -> None:
    from nemo_rl_hpo.sweep.storage import open_storage

    journal = tmp_path / "study.journal"
    study = optuna.create_study(study_name="j", storage=open_storage(f"journal://{journal}"))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    with open(journal, "ab") as f:  # what a writer SIGKILLed inside a large write leaves
        f.write(b'{"op_code": 5, "worker_id": "x", "trial_id": 0, "us')
    # Rule: the next append drops the torn tail, so no line ever follows a partial one (which
    # would make every reader fail with "Invalid log format").
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    for line in journal.read_bytes().split(b"\n")[:-1]:
        json.loads(line)
    reopened = optuna.load_study(study_name="j", storage=open_storage(f"journal://{journal}"))
    assert len(reopened.trials) == 3


def test_full_disk_while_trials_are_paused_stops_with_one_line_and_resumes(
    small_fs: Path,
) -> None:
    """hydra/sweeper/fidelity: the disk fills while trials are paused at rungs (docs/fidelity.md).

    The same one-line stop; after the resume the paused trials are still promoted and every
    configuration is decided.
    """
    sweep = small_fs / "sweep"
    app = APPS / "fidelity"
    args = [
        sys.executable,
        str(app / "app.py"),
        "-m",
        f"hydra.sweep.dir={sweep}",
        "hydra/sweeper/fidelity=asha",
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.retry_failed=2",
        "hydra.sweeper.write_report=false",
        "hydra/launcher=local",
        "hydra.launcher.timeout_min=10",
        "max_steps=9",  # rungs 3, then 9
        "step_sleep=0.1",
    ]
    proc = subprocess.Popen(
        args, cwd=app, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        end = time.time() + 240
        paused: list[int] = []
        while time.time() < end and proc.poll() is None and len(paused) < 2:
            with contextlib.suppress(Exception):
                paused = [t.number for t in _trials(sweep) if t.system_attrs.get(SYS_PAUSED)]
            time.sleep(0.2)
        assert len(paused) >= 2, "two trials should pause before the disk fills"
        filler = _fill(small_fs)
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, out[-3000:]
    lines = [ln for ln in out.splitlines() if "no space left on device" in ln.lower()]
    assert len(lines) == 1 and "resume with: " in lines[0], out[-3000:]
    assert "Traceback" not in out
    filler.unlink()
    again = subprocess.run(
        lines[0].split("resume with: ", 1)[1],
        shell=True,
        cwd=app,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    trials = {t.number: t for t in _trials(sweep) if not t.system_attrs.get(SYS_OVERFLOW)}
    assert not [t for t in trials.values() if t.state == TrialState.RUNNING]
    for n in paused:  # paused when the disk filled: decided by the schedule, not failed
        assert trials[n].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert any(t.state == TrialState.COMPLETE for t in trials.values())
