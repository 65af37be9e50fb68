"""The trial loop (``nemo_rl_hpo/sweep/core.py``) in-process, with a fake ``launch``.

The fake job does what a real one does through ``sweep/job.py``: it tells the study its own
result (or dies without telling, or raises in the launcher). No Hydra, no subprocess: each
test runs in well under a second or two.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from nemo_rl_hpo import pbt
from nemo_rl_hpo.search.grammar import parse_params
from nemo_rl_hpo.search.space import SearchSpace
from nemo_rl_hpo.sweep import records
from nemo_rl_hpo.sweep.core import (
    AsyncSweep,
    LaunchOutcome,
    Proposal,
    SweepAborted,
    SweepSettings,
)
from nemo_rl_hpo.sweep.proposer import OptunaProposer

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _space() -> SearchSpace:
    parsed = parse_params({"x": "interval(0.0, 1.0)"}, [])
    return SearchSpace(parsed, {}, {}, lambda key: True, ["x"])


def _study(sampler_seed: int = 0) -> optuna.Study:
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=sampler_seed))


def _settings(**kw: Any) -> SweepSettings:
    base: dict[str, Any] = {"n_trials": 6, "n_jobs": 2, "heartbeat_interval": 0.05}
    base.update(kw)
    return SweepSettings(**base)


def _tell(study: optuna.Study, trial: optuna.Trial, value: float) -> None:
    """What a job does when it ends (sweep/job.on_job_end): the job, not the loop, tells."""
    study.tell(trial.number, value)


def _sweep(
    study: optuna.Study,
    launch: Callable[[Proposal], LaunchOutcome],
    settings: SweepSettings,
    is_job_alive: Callable[[FrozenTrial], bool] | None = None,
) -> AsyncSweep:
    proposer = OptunaProposer(study, _space(), settings.n_trials, settings.retry_failed)
    return AsyncSweep(study, proposer, launch, settings, is_job_alive=is_job_alive)


def _states(study: optuna.Study) -> dict[str, int]:
    return {k: v for k, v in records.count_states(study.get_trials()).items() if v}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _orphan(study: optuna.Study) -> FrozenTrial:
    """A RUNNING trial whose sweeper (a process on this host) is dead."""
    trial = study.ask({"x": FloatDistribution(0.0, 1.0)})
    owner: dict[str, Any] = {"host": socket.gethostname(), "pid": _dead_pid(), "token": "gone"}
    study._storage.set_trial_system_attr(trial._trial_id, records.SYS_OWNER, owner)
    study._storage.set_trial_user_attr(trial._trial_id, records.OVERRIDES, ["x=0.5"])
    return study._storage.get_trial(trial._trial_id)


# ------------------------------------------------------------------------------ budget
def test_budget_is_spent_exactly_with_jobs_in_parallel() -> None:
    study = _study()
    in_flight: list[int] = []
    peak = [0]
    lock = threading.Lock()

    def launch(p: Proposal) -> LaunchOutcome:
        with lock:
            in_flight.append(p.number)
            peak[0] = max(peak[0], len(in_flight))
        time.sleep(0.05)
        _tell(study, p.trial, float(p.trial.params["x"]))
        with lock:
            in_flight.remove(p.number)
        return LaunchOutcome(ok=True)

    summary = _sweep(study, launch, _settings(n_trials=7, n_jobs=3)).run()
    # Rule: n_trials trials run, all complete; n_jobs at a time, no more.
    assert _states(study) == {"COMPLETE": 7}
    assert summary.launched == 7
    assert 2 <= peak[0] <= 3
    # Rule: each trial records the overrides its job ran with.
    for t in study.trials:
        assert t.user_attrs[records.OVERRIDES] == [f"x={t.params['x']!r}"]


def test_a_resumed_loop_tops_up_to_the_budget() -> None:
    study = _study()
    for _ in range(4):
        t = study.ask({"x": FloatDistribution(0.0, 1.0)})
        study.tell(t, 1.0)

    def launch(p: Proposal) -> LaunchOutcome:
        _tell(study, p.trial, 0.0)
        return LaunchOutcome(ok=True)

    summary = _sweep(study, launch, _settings(n_trials=6)).run()
    # Rule: the budget counts the study's earlier trials: only the missing two run.
    assert summary.launched == 2
    assert _states(study) == {"COMPLETE": 6}


# ----------------------------------------------------------------------------- retries
def test_a_job_dying_without_a_result_fails_with_the_launchers_reason_and_is_retried() -> None:
    study = _study()
    died: list[int] = []

    def launch(p: Proposal) -> LaunchOutcome:
        if not died:  # the first job dies without telling (SIGKILL, OOM)
            died.append(p.number)
            return LaunchOutcome(ok=False, error="JobDied: killed by the OOM killer")
        _tell(study, p.trial, 0.5)
        return LaunchOutcome(ok=True)

    _sweep(study, launch, _settings(n_trials=4, n_jobs=1, retry_failed=1)).run()
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    # Rule: the dead job's trial is FAIL with the launcher's words; its configuration runs
    # again once (retry_of/attempt), and the budget still ends with n_trials complete.
    assert [t.number for t in failed] == died
    assert failed[0].user_attrs[records.FAIL_REASON] == "JobDied: killed by the OOM killer"
    retry = [t for t in study.trials if t.user_attrs.get(records.RETRY_OF) == died[0]]
    assert len(retry) == 1 and retry[0].params == failed[0].params
    assert retry[0].user_attrs[records.ATTEMPT] == 1
    assert _states(study) == {"COMPLETE": 4, "FAIL": 1}


def test_a_launcher_that_raises_fails_the_trial_with_its_first_line() -> None:
    study = _study()

    def launch(p: Proposal) -> LaunchOutcome:
        raise RuntimeError("sbatch: error: invalid partition\nmore text")

    with pytest.raises(SweepAborted):
        _sweep(study, launch, _settings(n_trials=2, n_jobs=1)).run()
    (t,) = study.trials
    assert t.user_attrs[records.FAIL_REASON] == "RuntimeError: sbatch: error: invalid partition"


# --------------------------------------------------------------------- failure-rate abort
def test_failure_rate_above_the_limit_aborts_naming_the_first_failure() -> None:
    study = _study()

    def launch(p: Proposal) -> LaunchOutcome:
        if p.number % 2 == 1:
            study._storage.set_trial_user_attr(
                p.trial._trial_id, records.FAIL_REASON, f"ValueError: bad {p.number}"
            )
            study.tell(p.number, state=TrialState.FAIL)
        else:
            _tell(study, p.trial, 1.0)
        return LaunchOutcome(ok=True)

    with pytest.raises(SweepAborted) as err:
        _sweep(study, launch, _settings(n_trials=20, n_jobs=1, max_failure_rate=0.4)).run()
    # Rule: the loop stops launching once more than 40% failed: 1 of 2 is 50%.
    assert len(study.trials) == 2
    assert "1 of 2 trials failed" in str(err.value)
    assert "first failure: trial 1: ValueError: bad 1" in str(err.value)


def test_retried_failures_do_not_count_toward_the_failure_rate() -> None:
    study = _study()
    seen: set[int] = set()

    def launch(p: Proposal) -> LaunchOutcome:
        if records.RETRY_OF not in p.trial.user_attrs and p.number not in seen:
            seen.add(p.number)
            return LaunchOutcome(ok=False, error="JobDied: preempted")
        _tell(study, p.trial, 1.0)
        return LaunchOutcome(ok=True)

    _sweep(study, launch, _settings(n_trials=3, n_jobs=1, retry_failed=1)).run()
    # Rule: every first attempt failed, but each was retried and completed: no abort.
    assert _states(study) == {"COMPLETE": 3, "FAIL": 3}


# ---------------------------------------------------------------------------- orphans
def test_orphan_of_a_dead_sweeper_is_failed_and_retried() -> None:
    study = _study()
    orphan = _orphan(study)

    def launch(p: Proposal) -> LaunchOutcome:
        _tell(study, p.trial, 0.0)
        return LaunchOutcome(ok=True)

    core = _sweep(
        study, launch, _settings(n_trials=3, retry_failed=1), is_job_alive=lambda t: False
    )
    core.run(core.recover())
    t = study.trials[orphan.number]
    # Rule: a RUNNING trial whose sweeper's pid is dead and whose job is gone is FAIL, marked
    # orphaned, and its configuration runs again.
    assert t.state == TrialState.FAIL
    assert "orphaned" in t.user_attrs[records.FAIL_REASON]
    assert t.user_attrs[records.ORPHANED] is True
    retry = [x for x in study.trials if x.user_attrs.get(records.RETRY_OF) == orphan.number]
    assert len(retry) == 1 and retry[0].params == t.params
    assert _states(study) == {"COMPLETE": 3, "FAIL": 1}


def test_trial_orphaned_before_its_launch_never_ran_and_uses_no_budget() -> None:
    """The kill -9 race: a sweeper killed between ``ask`` and the launch leaves a RUNNING trial
    with half its parameters sampled and no job. Retrying it as a failed configuration ran a
    different configuration under its number (the rest of the parameters sampled anew)."""
    study = _study()
    half = study.ask()
    half.suggest_float("x", 0.0, 1.0)  # killed here: y was never sampled, nothing launched
    owner: dict[str, Any] = {"host": socket.gethostname(), "pid": _dead_pid(), "token": "gone"}
    study._storage.set_trial_system_attr(half._trial_id, records.SYS_OWNER, owner)
    # A retry (of a failure that ran) popped from the queue, then killed before its launch.
    failed = _orphan(study)
    records.fail_trial(study, failed, "boom")
    study.enqueue_trial(dict(failed.params), user_attrs={records.RETRY_OF: failed.number})
    unlaunched_retry = study.ask({"x": FloatDistribution(0.0, 1.0)})
    study._storage.set_trial_system_attr(unlaunched_retry._trial_id, records.SYS_OWNER, owner)

    def launch(p: Proposal) -> LaunchOutcome:
        _tell(study, p.trial, 0.0)
        return LaunchOutcome(ok=True)

    core = _sweep(
        study, launch, _settings(n_trials=3, retry_failed=1), is_job_alive=lambda t: False
    )
    core.run(core.recover())
    trials = study.trials
    for number in (half.number, unlaunched_retry.number):
        t = trials[number]
        # Rule: it is failed as an orphan that never ran, and uses no budget ...
        assert t.state == TrialState.FAIL
        assert "never ran" in t.user_attrs[records.FAIL_REASON]
        assert t.system_attrs[records.SYS_OVERFLOW] is True
    # ... is not retried itself ...
    assert not [t for t in trials if t.user_attrs.get(records.RETRY_OF) == half.number]
    # ... and a retry that never ran is still owed: the failed configuration ran once more.
    reruns = [
        t
        for t in trials
        if t.user_attrs.get(records.RETRY_OF) == failed.number and t.state == TrialState.COMPLETE
    ]
    assert len(reruns) == 1 and reruns[0].params == failed.params
    # Rule: the budget counts the runs: 3 complete (the retried failure is not counted).
    assert _states(study) == {"COMPLETE": 3, "FAIL": 1}


def test_trial_a_peer_failed_before_its_claim_is_skipped_not_a_crash() -> None:
    """Under load a peer took a trial between its ask and its claim for an orphan and failed it
    (seen in bench/load.py: 4 sweepers on PostgreSQL); the claim then met a finished trial."""
    study = _study()
    proposer = OptunaProposer(study, _space(), 3, 0)
    ask = proposer.ask
    first = [True]

    def ask_raced() -> Proposal | None:
        p = ask()
        if p is not None and first[0]:
            first[0] = False
            study._storage.set_trial_system_attr(p.trial._trial_id, records.SYS_OVERFLOW, True)
            records.fail_trial(study, p.trial, "its sweeper stopped before launching it")
        return p

    proposer.ask = ask_raced  # type: ignore[method-assign]

    def launch(p: Proposal) -> LaunchOutcome:
        _tell(study, p.trial, 0.0)
        return LaunchOutcome(ok=True)

    AsyncSweep(study, proposer, launch, _settings(n_trials=3)).run()
    # Rule: the loop goes on; the budget is spent on runs (the skipped trial is not counted).
    assert _states(study) == {"COMPLETE": 3}


def test_live_job_of_a_dead_sweeper_is_reattached_not_rerun() -> None:
    study = _study()
    orphan = _orphan(study)
    launched: list[int] = []

    def finish_later() -> None:  # the job outlived its sweeper and tells its result itself
        time.sleep(0.5)
        study.tell(orphan.number, 0.25)

    threading.Thread(target=finish_later, daemon=True).start()

    def launch(p: Proposal) -> LaunchOutcome:
        launched.append(p.number)
        _tell(study, p.trial, 1.0)
        return LaunchOutcome(ok=True)

    alive = lambda t: study._storage.get_trial(t._trial_id).state == TrialState.RUNNING  # noqa: E731
    core = _sweep(study, launch, _settings(n_trials=3, n_jobs=1), is_job_alive=alive)
    reattached = core.recover()
    assert [t.number for t in reattached] == [orphan.number]
    core.run(reattached)
    t = study.trials[orphan.number]
    # Rule: the live job's trial keeps its own result; it used a slot and counts toward the
    # budget, so only two new trials run; the re-attached trial is claimed by this loop.
    assert t.state == TrialState.COMPLETE and t.value == 0.25
    assert orphan.number not in launched and len(launched) == 2
    assert t.system_attrs[records.SYS_OWNER]["token"] == core.token


def test_reattached_job_that_ends_before_the_loop_claims_it_is_taken_as_it_ended() -> None:
    study = _study()
    orphan = _orphan(study)

    def launch(p: Proposal) -> LaunchOutcome:
        _tell(study, p.trial, 1.0)
        return LaunchOutcome(ok=True)

    core = _sweep(study, launch, _settings(n_trials=2, n_jobs=1), is_job_alive=lambda t: True)
    reattached = core.recover()
    study.tell(orphan.number, 0.25)  # the job tells its result between recover() and run()
    core.run(reattached)
    # Rule: no crash on a trial that finished meanwhile; its result stands and counts.
    assert study.trials[orphan.number].value == 0.25
    assert _states(study) == {"COMPLETE": 2}


def test_trial_of_a_live_peer_is_left_alone_and_waited_for() -> None:
    study = _study()
    peer = study.ask({"x": FloatDistribution(0.0, 1.0)})
    owner: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getppid(), "token": "peer"}
    study._storage.set_trial_system_attr(peer._trial_id, records.SYS_OWNER, owner)

    def finish_later() -> None:
        time.sleep(0.6)
        study.tell(peer.number, 0.5)

    threading.Thread(target=finish_later, daemon=True).start()

    def launch(p: Proposal) -> LaunchOutcome:
        _tell(study, p.trial, 1.0)
        return LaunchOutcome(ok=True)

    core = _sweep(study, launch, _settings(n_trials=2, n_jobs=1))
    core.run(core.recover())
    # Rule: a peer's running trial holds its share of the budget and is not failed; the loop
    # waits for it before ending.
    assert study.trials[peer.number].state == TrialState.COMPLETE
    assert _states(study) == {"COMPLETE": 2}


# ------------------------------------------------------------------ early slot release
def test_a_slot_frees_when_the_job_told_its_result_not_when_its_process_exits() -> None:
    study = _study()
    release = threading.Event()
    started: list[float] = []

    def launch(p: Proposal) -> LaunchOutcome:
        started.append(time.time())
        _tell(study, p.trial, 1.0)
        release.wait(5.0)  # the job's process is still winding down (submitit, Slurm epilog)
        return LaunchOutcome(ok=True)

    core = _sweep(study, launch, _settings(n_trials=3, n_jobs=1, early_release=True))
    t0 = time.time()
    done = threading.Thread(target=core.run)
    done.start()
    deadline = time.time() + 5.0
    while len(started) < 3 and time.time() < deadline:
        time.sleep(0.02)
    # Rule: with one slot, all three trials started although no launch call had returned.
    assert len(started) == 3 and started[-1] - t0 < 4.0
    release.set()
    done.join(10)
    assert _states(study) == {"COMPLETE": 3}


def test_heartbeats_stamp_running_trials() -> None:
    study = _study()

    def launch(p: Proposal) -> LaunchOutcome:
        time.sleep(0.3)
        beat = study._storage.get_trial(p.trial._trial_id).system_attrs.get(records.SYS_HEARTBEAT)
        _tell(study, p.trial, float(beat is not None))
        return LaunchOutcome(ok=True)

    t0 = time.time()
    _sweep(study, launch, _settings(n_trials=2, n_jobs=2, heartbeat_interval=0.05)).run()
    # Rule: while a trial runs, its sweeper stamps it every heartbeat_interval.
    assert [t.value for t in study.trials] == [1.0, 1.0]
    assert all(t.system_attrs[records.SYS_HEARTBEAT] >= t0 for t in study.trials)


def test_timeout_stops_new_trials_and_lets_running_ones_finish() -> None:
    study = _study()

    def launch(p: Proposal) -> LaunchOutcome:
        time.sleep(0.3)
        _tell(study, p.trial, 1.0)
        return LaunchOutcome(ok=True)

    _sweep(study, launch, _settings(n_trials=50, n_jobs=2, timeout=0.5)).run()
    # Rule: no trial starts after the timeout; those running finish complete.
    assert 2 <= len(study.trials) <= 6
    assert _states(study) == {"COMPLETE": len(study.trials)}


# ------------------------------------------------------------------------------- PBT
def _pbt_proposer(study: optuna.Study, tmp: Any, population: int = 3) -> pbt.PBTProposer:
    dists = {"x": FloatDistribution(0.0, 1.0)}
    config = pbt.PBTConfig(
        population_size=population,
        perturbation_interval=10,
        num_rounds=2,
        direction="minimize",
        seed=0,
        synchronous=False,
    )
    params = [pbt.param_from_distribution(k, d) for k, d in dists.items()]
    return pbt.PBTProposer(
        study, config, params, dists, lambda v: [f"x={v['x']!r}"], tmp / "checkpoints"
    )


def _pbt_launch(study: optuna.Study) -> Callable[[Proposal], LaunchOutcome]:
    def launch(p: Proposal) -> LaunchOutcome:
        assert p.context["steps"] in (10, 20) and p.context["checkpoint_dir"]
        _tell(study, p.trial, abs(float(p.trial.params["x"]) - 0.3))
        return LaunchOutcome(ok=True)

    return launch


def test_pbt_runs_its_population_through_the_loop(tmp_path: Any) -> None:
    study = _study()
    proposer = _pbt_proposer(study, tmp_path)
    core = AsyncSweep(study, proposer, _pbt_launch(study), _settings(n_jobs=3))
    core.run(core.recover())
    rounds = sorted(
        (t.user_attrs[records.PBT_MEMBER], t.user_attrs[records.PBT_ROUND]) for t in study.trials
    )
    # Rule: population x rounds member rounds, each one trial, all complete; heartbeats too.
    assert rounds == [(m, r) for m in range(3) for r in range(2)]
    assert _states(study) == {"COMPLETE": 6}
    assert proposer.scheduler is not None and proposer.scheduler.finished


def test_pbt_fails_a_dead_round_and_runs_it_again_and_reattaches_a_live_one(
    tmp_path: Any,
) -> None:
    # A first driver ran round 0 of members 0 and 1, then died with member 0's job still
    # running and member 1's job dead.
    study = _study()
    first = _pbt_proposer(study, tmp_path)
    first.adopt([])
    asked = [first.ask(), first.ask()]
    jobs = [p for p in asked if p is not None]
    assert len(jobs) == 2
    dead = _dead_pid()
    for p in jobs:
        owner: dict[str, Any] = {"host": socket.gethostname(), "pid": dead, "token": "gone"}
        study._storage.set_trial_system_attr(p.trial._trial_id, records.SYS_OWNER, owner)
    live, gone = jobs[0].number, jobs[1].number

    def finish_live() -> None:
        time.sleep(0.5)
        study.tell(live, 0.01)

    threading.Thread(target=finish_live, daemon=True).start()
    alive = lambda t: t.number == live and study.trials[live].state == TrialState.RUNNING  # noqa: E731
    second = _pbt_proposer(study, tmp_path)
    core = AsyncSweep(study, second, _pbt_launch(study), _settings(n_jobs=2), is_job_alive=alive)
    core.run(core.recover())
    by_round: dict[tuple[int, int], list[FrozenTrial]] = {}
    for t in study.trials:
        key = (t.user_attrs[records.PBT_MEMBER], t.user_attrs[records.PBT_ROUND])
        by_round.setdefault(key, []).append(t)
    # Rule: the live round was re-attached (its own value, not run twice); the dead one was
    # failed as orphaned and its member round ran again; every member round completed once.
    assert study.trials[live].state == TrialState.COMPLETE and study.trials[live].value == 0.01
    assert len(by_round[(0, 0)]) == 1
    assert study.trials[gone].state == TrialState.FAIL
    assert study.trials[gone].user_attrs.get(records.ORPHANED) is True
    for key in [(m, r) for m in range(3) for r in range(2)]:
        assert [t.state for t in by_round[key]].count(TrialState.COMPLETE) == 1, key
