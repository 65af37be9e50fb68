"""``hydra/sweeper=pbt`` end to end on a small app: a killed sweeper resumes its population."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from optuna.trial import TrialState

from nemo_rl_hpo.sweep import records
from tests.sweeplib import APPS, kill9_and_resume, load, states

pytestmark = pytest.mark.e2e


def test_pbt_resume_after_kill9(tmp_path: Path) -> None:
    """The Optuna sweeper's kill -9 test (test_sweeper_e2e.test_resume_after_kill9), for PBT."""
    sweep = tmp_path / "sweep"
    app = APPS / "pbt_toy"
    args = [sys.executable, str(app / "app.py"), "-m", f"hydra.sweep.dir={sweep}", "seconds=0.6"]

    def three_done() -> bool:  # ... and the next round running: the kill interrupts it
        counts = states(load(sweep, "app"))
        return counts.get("COMPLETE", 0) >= 3 and counts.get("RUNNING", 0) >= 1

    out = kill9_and_resume(args, app, tmp_path / "first.log", three_done)
    assert out.returncode == 0, out.stdout + out.stderr
    trials = load(sweep, "app").trials
    # Rule: no trial is left RUNNING; the round the kill interrupted is FAIL, marked orphaned,
    # and ran again; every member round (3 members x 3 rounds) completed exactly once.
    assert all(t.state != TrialState.RUNNING for t in trials)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed
    for f in failed:
        assert "its sweeper stopped while it ran" in f.user_attrs["fail_reason"]
        assert f.user_attrs.get(records.ORPHANED) is True
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    rounds = sorted((t.user_attrs["pbt:member"], t.user_attrs["pbt:round"]) for t in complete)
    assert rounds == [(m, r) for m in range(3) for r in range(3)]
    # Rule: each round resumed from the checkpoint its predecessor (or parent) saved.
    for t in complete:
        state = (Path(t.user_attrs["pbt:checkpoint"]) / "state.json").read_text()
        assert f'"step": {10 * (t.user_attrs["pbt:round"] + 1)}' in state
    assert "round(s) done" in out.stdout + out.stderr
