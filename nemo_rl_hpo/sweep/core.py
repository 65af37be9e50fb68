"""The asynchronous trial loop every sweeper shares: ask, launch, collect, tell, repeat.

Up to ``n_jobs`` trials are in flight; a new one starts as soon as any slot frees up, so one
slow trial never idles the others (hydra-optuna-sweeper waits for whole batches). What to run
comes from a proposer (``sweep/proposer.py``: Optuna's sampler, PBT's scheduler, ...); the launch
itself is a callable (the Hydra adapter wraps ``launcher.launch``), so nothing here knows Hydra
or how configurations are chosen. The loop owns what every sweeper needs around the jobs:
heartbeats, re-attaching to live jobs of a dead sweeper, failing orphans, early slot release,
the failure-rate abort and the timeout.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nemo_rl_hpo.errors import ParamError
from nemo_rl_hpo.sweep import cost, records
from nemo_rl_hpo.sweep.budget import Budget
from nemo_rl_hpo.sweep.liveness import pid_alive
from nemo_rl_hpo.sweep.proposer import (
    Proposal,
    Proposer,
    counted_trials,
    hydra_free,
    retried_numbers,
)
from nemo_rl_hpo.sweep.storage import is_disk_full

log = logging.getLogger(__name__)

__all__ = [
    "AsyncSweep",
    "LaunchOutcome",
    "Proposal",
    "Proposer",
    "SweepAborted",
    "SweepSettings",
    "SweepSummary",
    "counted_trials",
    "retried_numbers",
]

# A trial asked but never claimed is an orphan only after this long: between its ask and its
# claim a live sweeper samples it (storage reads, the sampler), which took over 10 s on a loaded
# machine with a PostgreSQL study, and a peer then failed a trial that was about to run.
OWNERLESS_GRACE_S = 60.0
POLL_S = 0.2  # how often running trials are checked for a result their job already told
RECOVER_EVERY_S = 5.0


class SweepAborted(ParamError, RuntimeError):
    """Too many trials failed (``max_failure_rate``); the message carries the first failure."""

    default_params = ("max_failure_rate",)


@dataclass(frozen=True)
class LaunchOutcome:
    """What the launcher said about one job (the job itself tells the study its values)."""

    ok: bool
    error: str | None = None


@dataclass
class SweepSettings:
    """The loop's settings. Its defaults are the sweepers' (hydra_plugins/nemo_rl_hpo/config.py,
    kept equal by tests/test_defaults.py); the settings layer always gives them."""

    n_trials: int  # the budget (the Optuna proposer's; shown by the progress line)
    n_jobs: int = 2
    timeout: float | None = None  # seconds after which no new trial starts
    max_failure_rate: float = 0.0
    retry_failed: int = 0  # how many times a failed configuration is tried again
    heartbeat_interval: float = 10.0
    stale_after: float = 60.0  # a trial without heartbeat for this long is orphaned
    early_release: bool = True  # free a slot once the job told its result (not in-process)
    budget: Budget = field(default_factory=Budget)  # GPU-/CPU-hours; no new job once spent


@dataclass
class _Running:
    proposal: Proposal
    started: float
    future: Future[LaunchOutcome]


@dataclass
class SweepSummary:
    started: float
    finished: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    launched: int = 0
    failures: list[str] = field(default_factory=list)
    budget_reached: str | None = None  # the line said when the compute budget was spent


LaunchFn = Callable[[Proposal], LaunchOutcome]
TrialEnd = Callable[[FrozenTrial, SweepSummary, list[FrozenTrial]], None]


class AsyncSweep:
    """Drive one study through a proposer and a blocking per-job ``launch`` callable.

    ``launch`` is called from up to ``n_jobs`` threads at once, one proposal each (the Hydra
    adapter calls ``Launcher.launch`` with one job). ``is_job_alive`` tells whether the job of a
    trial whose sweeper died still runs (re-attach instead of fail).
    """

    def __init__(
        self,
        study: optuna.Study,
        proposer: Proposer,
        launch: LaunchFn,
        settings: SweepSettings,
        on_trial_end: TrialEnd | None = None,
        is_job_alive: Callable[[FrozenTrial], bool] | None = None,
    ) -> None:
        self.study = study
        self.proposer = proposer
        self.launch = launch
        self.settings = settings
        self.on_trial_end = on_trial_end
        self.is_job_alive = is_job_alive
        self.token = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
        self._running: dict[tuple[int, int], _Running] = {}  # by Proposal.key
        self._trial_ids: dict[int, int] = {}  # number -> trial id of every trial launched here
        self._stop = threading.Event()
        self._storage = study._storage
        self._budget_line: str | None = None  # said once, when the budget was reached

    # ----------------------------------------------------------------- bookkeeping helpers
    def _trials(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_interval):
            self._beat()

    def _beat(self) -> None:
        now = time.time()
        for trial_id in {r.proposal.trial._trial_id for r in list(self._running.values())}:
            try:
                self._storage.set_trial_system_attr(trial_id, records.SYS_HEARTBEAT, now)
            except Exception as e:  # storage hiccup: the next beat retries
                log.debug("heartbeat failed: %s", e)

    def _claim(self, trial_id: int) -> None:
        owner: dict[str, Any] = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "token": self.token,
        }
        self._storage.set_trial_system_attr(trial_id, records.SYS_OWNER, owner)

    def _is_orphan(self, t: FrozenTrial) -> bool:
        """A RUNNING trial whose sweeper is gone (dead local pid, or heartbeat too old)."""
        if t.system_attrs.get(records.SYS_OVERFLOW):
            return False
        owner = t.system_attrs.get(records.SYS_OWNER)
        # No sweeper could claim or beat while the storage was away: ages count from its return.
        back = float(getattr(self._storage, "reachable_since", 0.0))
        if owner is None:
            # Asked but never claimed: its sweeper died between ask and launch (a live one
            # claims a trial within milliseconds).
            return time.time() - max(_ts(t.datetime_start), back) > OWNERLESS_GRACE_S
        if isinstance(owner, dict) and owner.get("host") == socket.gethostname():
            pid = int(owner.get("pid", -1))
            if pid == os.getpid():
                return owner.get("token") != self.token
            if not pid_alive(pid):
                return True
        beat = t.system_attrs.get(records.SYS_HEARTBEAT)
        last = float(beat) if beat is not None else _ts(t.datetime_start)
        return time.time() - max(last, back) > self.settings.stale_after

    def recover(self) -> list[FrozenTrial]:
        """Trials a dead sweeper left RUNNING: return those whose job lives, fail the rest."""
        reattach: list[FrozenTrial] = []
        for t in self._trials():
            if t.state != TrialState.RUNNING or self._runs(t.number):
                continue
            if records.is_paused(t):  # between two segments: no job, nothing orphaned
                continue
            if not self._is_orphan(t):
                continue
            if self.is_job_alive is not None and self.is_job_alive(t):
                log.info(
                    "re-attaching to trial %d (job %s still running)",
                    t.number,
                    t.user_attrs.get(records.SLURM_JOB_ID) or t.user_attrs.get(records.JOB_PID),
                )
                reattach.append(t)
                continue
            rescue = getattr(self.proposer, "rescue", None)  # optional: see sweep/proposer.py
            if rescue is not None and records.OVERRIDES in t.user_attrs and rescue(t):
                continue  # taken back (a promoted segment paused again), not failed
            if records.OVERRIDES in t.user_attrs:  # written just before its launch
                reason = "its sweeper stopped while it ran (orphaned RUNNING trial)"
            else:
                # Killed between ask and launch: no job ran, and its params may be half-sampled.
                # Not a failed configuration: it uses no budget and is not retried.
                reason = "its sweeper stopped before launching it (orphaned, never ran)"
                try:
                    self._storage.set_trial_system_attr(t._trial_id, records.SYS_OVERFLOW, True)
                except optuna.exceptions.UpdateFinishedTrialError:
                    continue  # it finished since the list was read: not an orphan after all
            self._fail(t, reason, orphaned=True)
            self.proposer.tell(self._storage.get_trial(t._trial_id))
        return reattach

    def _fail(self, t: FrozenTrial | optuna.Trial, reason: str, orphaned: bool = False) -> None:
        try:
            if records.fail_trial(self.study, t, reason, orphaned=orphaned):
                log.warning("trial %d FAIL: %s", t.number, reason)
        except Exception as e:
            log.warning("could not fail trial %d: %s", t.number, e)

    # ------------------------------------------------------------------------- the loop
    def run(self, reattached: Sequence[FrozenTrial] = ()) -> SweepSummary:
        """Run until the proposer has nothing more, the timeout, or the failure-rate abort.

        ``reattached``: live jobs of a dead sweeper (from :meth:`recover`), handed to the
        proposer's ``adopt`` before its first ``ask``; those it does not take over are failed.
        """
        s = self.settings
        summary = SweepSummary(started=time.time())
        self.study.set_user_attr(
            records.STUDY_BUDGET, s.budget.as_dict() if s.budget.active else None
        )
        # Twice the slots: a job that already told its result frees its slot while its process
        # still exits (see _told_early), and its launch call finishes in the background.
        pool = ThreadPoolExecutor(max_workers=2 * max(1, s.n_jobs) + 1, thread_name_prefix="trial")
        beat = threading.Thread(target=self._heartbeat_loop, daemon=True)
        beat.start()
        self._take_over(pool, reattached)
        n_failed_here = 0
        n_finished_here = 0
        aborted: str | None = None
        last_recover = time.time()
        # Trials whose jobs here all told their own end while the trial itself was not over yet
        # (seeds: the last one tells it a moment later, or a queued seed is still to run).
        awaiting: set[int] = set()

        def trial_over(frozen: FrozenTrial) -> None:
            """Once per trial (segment): tell the proposer, count a failure, the progress line."""
            nonlocal n_failed_here, n_finished_here, aborted
            awaiting.discard(frozen.number)
            retried = self.proposer.tell(frozen)
            n_finished_here += 1
            if frozen.state == TrialState.FAIL and not retried:
                n_failed_here += 1
                reason = records.fail_reason(frozen, "unknown")
                summary.failures.append(f"trial {frozen.number}: {reason}")
                if n_failed_here / n_finished_here > s.max_failure_rate:
                    aborted = summary.failures[0]
            if self.on_trial_end is not None:
                self.on_trial_end(frozen, summary, self._trials())

        try:
            while True:
                if time.time() - last_recover > RECOVER_EVERY_S:
                    # Orphans of a crashed peer (or of our own earlier life) are failed/retried
                    # while we run, not only at start-up.
                    reattach = self.recover()
                    if reattach:
                        self._take_over(pool, reattach)
                    last_recover = time.time()
                for number in sorted(awaiting):
                    frozen = self._awaited(number)
                    if frozen is not None:
                        trial_over(frozen)
                while (
                    len(self._running) < max(1, s.n_jobs)
                    and aborted is None
                    and not self._timed_out(summary)
                    and not self._budget_spent()
                ):
                    proposal = self.proposer.ask()
                    if proposal is None:
                        break
                    self._launch(pool, proposal)
                    summary.launched += 1
                if not self._running:
                    if awaiting and aborted is None and not self._timed_out(summary):
                        time.sleep(POLL_S)  # a trial's last job is telling it right now
                        continue
                    if aborted is not None or self._timed_out(summary):
                        break
                    if self._budget_line is not None:
                        break
                    if not self.proposer.pending():
                        break
                    # Work may still come without us (a peer's trials hold budget): wait until
                    # they end or become orphans (failed, and retried when retry_failed is set).
                    time.sleep(1.0)
                    last_recover = 0.0
                    continue
                done, _ = wait(
                    [r.future for r in self._running.values()],
                    timeout=POLL_S,
                    return_when=FIRST_COMPLETED,
                )
                finished = [k for k, r in self._running.items() if r.future in done]
                if s.early_release:
                    finished += [k for k in self._told_early() if k not in finished]
                for key in finished:
                    run = self._running.pop(key)
                    frozen = self._finish(run)
                    if self._runs(frozen.number):
                        continue  # the trial's other jobs (seeds) still run: told when they end
                    if _segment_over(frozen):
                        trial_over(frozen)
                    else:
                        awaiting.add(frozen.number)
            for number in sorted(awaiting):  # stopped (timeout, abort) before all its jobs ran
                frozen = self._awaited(number)
                if frozen is None:
                    t = self._storage.get_trial(self._trial_ids[number])
                    self._fail(t, "the sweep stopped before all of its jobs ran")
                    frozen = self._storage.get_trial(t._trial_id)
                trial_over(frozen)
        finally:
            self._stop.set()
            pool.shutdown(wait=True)
        self._recheck_costs()
        summary.finished = time.time()
        summary.counts = records.count_states(self._trials())
        summary.budget_reached = self._budget_line
        if aborted is not None:
            raise SweepAborted(
                f"{n_failed_here} of {n_finished_here} trials failed, more than "
                f"max_failure_rate={s.max_failure_rate}; first failure: {aborted}"
            )
        return summary

    def _launch(self, pool: ThreadPoolExecutor, proposal: Proposal) -> None:
        trial_id = proposal.trial._trial_id
        try:
            self._claim(trial_id)
            self._storage.set_trial_user_attr(
                trial_id, records.OVERRIDES, hydra_free(proposal.overrides)
            )
        except optuna.exceptions.UpdateFinishedTrialError:
            # A peer took it for an orphan and failed it before we claimed it: nothing ran.
            log.warning("trial %d was failed by another sweeper before its launch", proposal.number)
            self.proposer.tell(self._storage.get_trial(trial_id))
            return
        fut = pool.submit(self._launch_guarded, proposal)
        self._running[proposal.key] = _Running(proposal, time.time(), fut)
        self._trial_ids[proposal.number] = trial_id

    def _awaited(self, number: int) -> FrozenTrial | None:
        """Trial ``number``'s record once it is over and none of its jobs runs here."""
        if self._runs(number):
            return None
        frozen = self._storage.get_trial(self._trial_ids[number])
        return frozen if _segment_over(frozen) else None

    def _runs(self, number: int) -> bool:
        """Whether a job of trial ``number`` is running here (a trial may have several)."""
        return any(k[0] == number for k in self._running)

    def _told_early(self) -> list[tuple[int, int]]:
        """Running jobs that already told the study their result (event-driven completion).

        The launcher returns only after the job's process exits and submitit notices; the slot
        is free as soon as the result is in the storage.
        """
        early: list[tuple[int, int]] = []
        for key, run in list(self._running.items()):
            if run.future.done():
                continue
            try:
                if _job_over(self._storage.get_trial(run.proposal.trial._trial_id), run.proposal):
                    early.append(key)
            except Exception as e:  # storage hiccup: the launcher's return still frees the slot
                log.debug("could not poll trial %d: %s", key[0], e)
        return early

    def _take_over(self, pool: ThreadPoolExecutor, reattached: Sequence[FrozenTrial]) -> None:
        """Watch the live jobs of a dead sweeper the proposer adopts; fail the others."""
        adopted = self.proposer.adopt(reattached)
        taken = {p.number for p in adopted}
        for t in reattached:
            if t.number not in taken:
                reason = "its sweeper stopped while it ran; this sweep cannot take it over"
                self._fail(t, reason, orphaned=True)
                self.proposer.tell(self._storage.get_trial(t._trial_id))
        for proposal in adopted:
            trial_id = proposal.trial._trial_id
            try:
                self._claim(trial_id)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # its job told its result since recover() looked: nothing left to watch
            frozen = self._storage.get_trial(trial_id)
            if _segment_over(frozen):
                self.proposer.tell(frozen)
                continue
            fut = pool.submit(self._watch, frozen)
            self._running[proposal.key] = _Running(proposal, time.time(), fut)
            self._trial_ids[proposal.number] = trial_id

    def _budget_spent(self) -> bool:
        """Whether the compute budget is spent (jobs' cost + running jobs so far); said once.

        Every proposal passes here, whatever the proposer (trials, PBT rounds, promotions).
        """
        if self._budget_line is not None:
            return True
        budget = self.settings.budget
        if not budget.active:
            return False
        try:
            line = budget.check(self._storage.get_study_system_attrs(self.study._study_id))
        except Exception as e:  # storage hiccup: asked again before the next launch
            log.debug("could not read the cost records: %s", e)
            return False
        if line is not None:
            self._budget_line = line
            log.warning(line)
        return line is not None

    def _timed_out(self, summary: SweepSummary) -> bool:
        return self.settings.timeout is not None and (
            time.time() - summary.started >= self.settings.timeout
        )

    def _launch_guarded(self, proposal: Proposal) -> LaunchOutcome:
        try:
            return self.launch(proposal)
        except BaseException as e:  # the launcher itself failed (killed job, submit error)
            if is_disk_full(e):
                raise  # not the trial's fault: the sweep stops instead of failing every trial
            msg = str(e).strip().splitlines()
            return LaunchOutcome(ok=False, error=f"{type(e).__name__}: {msg[0] if msg else ''}")
        finally:
            self._settle_cost(proposal.trial._trial_id)

    def _settle_cost(self, trial_id: int) -> None:
        """Once a trial's jobs ended: their cost from Slurm's accounting (in the launch thread,
        which the sweep waits for; only jobs that were Slurm jobs of their own are asked)."""
        number = -1
        try:
            t = self._storage.get_trial(trial_id)
            number = t.number
            if records.SLURM_JOB_ID not in t.user_attrs:  # no Slurm job: nothing to ask
                return
            cost.settle_trial(self._storage, self.study._study_id, number)
        except Exception as e:  # accounting is never worth a trial or the sweep
            log.warning("could not record the cost of trial %d: %s", number, e)

    def _recheck_costs(self) -> None:
        """The sweep's Slurm jobs' records once more from sacct, now that it has settled (see
        ``cost.refresh``); nothing to ask when no trial here was a Slurm job of its own."""
        slurm_trials = [
            n
            for n, tid in self._trial_ids.items()
            if cost.slurm_job_ids(self._storage.get_trial(tid))
        ]
        if not slurm_trials:
            return
        try:
            cost.refresh(self.study, numbers=slurm_trials, recheck=True)
        except Exception as e:  # accounting is never worth the sweep
            log.warning("could not re-read the sweep's costs from Slurm's accounting: %s", e)

    def _watch(self, t: FrozenTrial) -> LaunchOutcome:
        """Wait for a re-attached job: the job tells the study itself when it ends."""
        while True:
            if _segment_over(self._storage.get_trial(t._trial_id)):
                self._settle_cost(t._trial_id)
                return LaunchOutcome(ok=True)
            if self.is_job_alive is not None and not self.is_job_alive(t):
                time.sleep(2.0)  # the job may be writing its result right now
                self._settle_cost(t._trial_id)
                if _segment_over(self._storage.get_trial(t._trial_id)):
                    return LaunchOutcome(ok=True)
                return LaunchOutcome(ok=False, error="the job ended without reporting a result")
            time.sleep(1.0)

    def _finish(self, run: _Running) -> FrozenTrial:
        """The trial's final record: what its job told, or FAIL with the launcher's reason.

        A trial whose job told its result early (``early_release``) is read as it is: its
        launch call is still finishing in the background. A paused trial (its segment stopped
        at a rung, ``records.SYS_PAUSED``) stays RUNNING: the proposer decides what follows.
        """
        trial = run.proposal.trial
        frozen = self._storage.get_trial(trial._trial_id)
        if run.future.done() and not _job_over(frozen, run.proposal):
            outcome = run.future.result()
            reason = outcome.error or "the job ended without reporting a result (killed?)"
            label = run.proposal.label
            self._fail(frozen, f"{label}: {reason}" if label else reason)
            frozen = self._storage.get_trial(trial._trial_id)
        return frozen


def _job_over(t: FrozenTrial, proposal: Proposal) -> bool:
    """The job told its own end: the trial's, or its part's while the trial waits for others."""
    return _segment_over(t) or (proposal.ended is not None and proposal.ended(t))


def _segment_over(t: FrozenTrial) -> bool:
    """The job told its result, or paused its trial at a rung (multi-fidelity segments)."""
    return t.state.is_finished() or records.is_paused(t)


def _ts(dt: Any) -> float:
    return dt.timestamp() if dt is not None else 0.0
