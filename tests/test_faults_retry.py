"""The submission retry's rules, without a cluster (the real restart: test_faults_slurm.py)."""

from __future__ import annotations

import logging
import subprocess

import pytest

from nemo_rl_hpo import slurm


def _failed(stderr: str) -> Exception:
    """What submitit raises when sbatch fails: FailedJobError(stderr) from CalledProcessError."""
    from submitit.core.utils import FailedJobError

    err = FailedJobError(stderr)
    err.__cause__ = subprocess.CalledProcessError(1, ["sbatch"], stderr=stderr)
    return err


AWAY = (
    "sbatch: error: Batch job submission failed: "
    "Unable to contact slurm controller (connect failure)"
)


@pytest.fixture(autouse=True)
def _fresh_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slurm.CONTROLLER, "since", None)
    monkeypatch.setattr(slurm.time, "sleep", lambda _s: None)


def test_a_submission_while_the_controller_is_away_is_sent_again_and_said_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pings = iter([False, False, True])
    monkeypatch.setattr(slurm, "ping", lambda: next(pings))
    calls = []

    def submit() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise _failed(AWAY)
        return "job 7"

    with caplog.at_level(logging.WARNING, logger=slurm.__name__):
        # Rule: the job is submitted once the controller answers, not failed ...
        assert slurm.submit_retrying(submit, limit_s=60) == "job 7"
    # ... with one sbatch while it was away (later attempts wait for a ping), said once.
    assert len(calls) == 2
    said = [r.getMessage() for r in caplog.records]
    assert sum("unreachable" in m for m in said) == 1
    assert sum("back after" in m for m in said) == 1


def test_errors_that_may_have_submitted_the_job_are_not_retried() -> None:
    calls = []

    def submit() -> str:
        calls.append(1)
        raise _failed("sbatch: error: Socket timed out on send/recv operation")

    # Rule: a time-out after slurmctld may have taken the job is not sent twice.
    with pytest.raises(Exception, match="Socket timed out"):
        slurm.submit_retrying(submit, limit_s=60)
    assert len(calls) == 1


def test_past_the_limit_the_submission_fails_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slurm, "ping", lambda: False)
    clock = iter(range(0, 10_000, 10))
    monkeypatch.setattr(slurm.time, "monotonic", lambda: float(next(clock)))

    def submit() -> str:
        raise _failed(AWAY)

    # Rule: a controller away longer than the limit ends in one line naming the limit.
    with pytest.raises(slurm.ControllerUnavailable, match="more than 60 s") as err:
        slurm.submit_retrying(submit, limit_s=60)
    assert "\n" not in str(err.value)
