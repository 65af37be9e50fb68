"""The asynchronous trial loop every sweeper shares: ask, launch, collect, tell, repeat.

Up to ``n_jobs`` trials are in flight; a new one starts as soon as any slot frees up, so one
slow trial never idles the others (hydra-optuna-sweeper waits for whole batches). The launch
itself is a callable (the Hydra adapter wraps ``launcher.launch``), so nothing here knows Hydra.
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

from nemo_rl_hpo.search.space import SearchSpace
from nemo_rl_hpo.sweep import records
from nemo_rl_hpo.sweep.liveness import pid_alive

log = logging.getLogger(__name__)

SYS_OWNER = records.SYS_OWNER
SYS_HEARTBEAT = records.SYS_HEARTBEAT
SYS_OVERFLOW = records.SYS_OVERFLOW
ATTR_RETRY_OF = records.RETRY_OF
OWNERLESS_GRACE_S = 10.0
POLL_S = 0.2  # how often running trials are checked for a result their job already told
RECOVER_EVERY_S = 5.0


class SweepAborted(RuntimeError):
    """Too many trials failed (``max_failure_rate``); the message carries the first failure."""


@dataclass(frozen=True)
class LaunchOutcome:
    """What the launcher said about one job (the job itself tells the study its values)."""

    ok: bool
    error: str | None = None


@dataclass
class SweepSettings:
    n_trials: int
    n_jobs: int = 1
    timeout: float | None = None  # seconds after which no new trial starts
    max_failure_rate: float = 0.0
    retry_failed: int = 0  # how many times a failed configuration is tried again
    heartbeat_interval: float = 10.0
    stale_after: float = 60.0  # a trial without heartbeat for this long is orphaned
    early_release: bool = True  # free a slot once the job told its result (not in-process)


@dataclass
class _Running:
    trial: optuna.Trial
    started: float
    future: Future[LaunchOutcome]


@dataclass
class SweepSummary:
    started: float
    finished: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    launched: int = 0
    failures: list[str] = field(default_factory=list)


LaunchFn = Callable[[optuna.Trial, list[str]], LaunchOutcome]
Extender = Callable[[optuna.Trial], None]


def counted_trials(trials: Sequence[FrozenTrial], retried: set[int] | None = None) -> int:
    """Trials that use the global budget: finished or running, minus retried failures.

    ``retried`` must come from the whole study when ``trials`` is a subset: a retry (which
    carries the ``retry_of`` mark) may be numbered after the failure it retries.
    """
    if retried is None:
        retried = retried_numbers(trials)
    n = 0
    for t in trials:
        if t.system_attrs.get(SYS_OVERFLOW) or t.user_attrs.get(records.WARM_START_PRIOR):
            continue
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
            n += 1
        elif t.state == TrialState.FAIL and t.number not in retried:
            n += 1
    return n


def retried_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of failed trials that a later trial retries (finished trials are read-only)."""
    return {int(t.user_attrs[ATTR_RETRY_OF]) for t in trials if ATTR_RETRY_OF in t.user_attrs}


class AsyncSweep:
    """Drive one study to ``n_trials`` through a blocking per-trial ``launch`` callable."""

    def __init__(
        self,
        study: optuna.Study,
        space: SearchSpace,
        launch: LaunchFn,
        settings: SweepSettings,
        extend: Extender | None = None,
        on_trial_end: Callable[[FrozenTrial, SweepSummary, list[FrozenTrial]], None] | None = None,
        is_job_alive: Callable[[FrozenTrial], bool] | None = None,
    ) -> None:
        self.study = study
        self.space = space
        self.launch = launch
        self.settings = settings
        self.extend = extend
        self.on_trial_end = on_trial_end
        self.is_job_alive = is_job_alive
        self.token = f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"
        self._running: dict[int, _Running] = {}
        self._snapshot: list[FrozenTrial] = []  # the study's trials as last read
        self._retried: set[int] = set()  # failed trials this sweeper enqueued again
        self._stop = threading.Event()
        self._storage = study._storage
        self._study_id = study._study_id

    # ----------------------------------------------------------------- bookkeeping helpers
    def _trials(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_interval):
            self._beat()

    def _beat(self) -> None:
        now = time.time()
        for trial_id in [r.trial._trial_id for r in list(self._running.values())]:
            try:
                self._storage.set_trial_system_attr(trial_id, SYS_HEARTBEAT, now)
            except Exception as e:  # storage hiccup: the next beat retries
                log.debug("heartbeat failed: %s", e)

    def _is_orphan(self, t: FrozenTrial) -> bool:
        """A RUNNING trial whose sweeper is gone (dead local pid, or heartbeat too old)."""
        owner = t.system_attrs.get(SYS_OWNER)
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
        beat = t.system_attrs.get(SYS_HEARTBEAT)
        last = float(beat) if beat is not None else _ts(t.datetime_start)
        return time.time() - max(last, back) > self.settings.stale_after

    def recover(self) -> list[FrozenTrial]:
        """Handle trials a dead sweeper left RUNNING: re-attach live jobs, fail the rest."""
        reattach: list[FrozenTrial] = []
        for t in self._trials():
            if t.state != TrialState.RUNNING or t.number in self._running:
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
            reason = "its sweeper stopped while it ran (orphaned RUNNING trial)"
            self._fail(t, reason, orphaned=True)
        return reattach

    def _fail(self, t: FrozenTrial, reason: str, orphaned: bool = False) -> None:
        try:
            failed = records.fail_trial(self.study, t, reason, orphaned=orphaned)
        except Exception as e:
            log.warning("could not fail trial %d: %s", t.number, e)
            return
        if failed:
            log.warning("trial %d FAIL: %s", t.number, reason)
        self._maybe_retry(self._storage.get_trial(t._trial_id))

    def _maybe_retry(self, t: FrozenTrial) -> bool:
        if t.state != TrialState.FAIL or self.settings.retry_failed <= 0:
            return False
        attempt = int(t.user_attrs.get(records.ATTEMPT, 0))
        if t.number in self._retried or attempt >= self.settings.retry_failed:
            return False
        if t.number in retried_numbers(self._trials()):
            return False
        self.study.enqueue_trial(
            dict(t.params), user_attrs={records.RETRY_OF: t.number, records.ATTEMPT: attempt + 1}
        )
        self._retried.add(t.number)
        log.info("trial %d will be retried (attempt %d)", t.number, attempt + 1)
        return True

    # ------------------------------------------------------------------------- the loop
    def _ask(self) -> tuple[optuna.Trial, list[str]] | None:
        trial = self.study.ask()
        self._storage.set_trial_system_attr(
            trial._trial_id,
            SYS_OWNER,
            {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token},
        )
        # Global budget across cooperating sweepers: trials asked after it was spent give way.
        self._snapshot = self._trials()
        earlier = [t for t in self._snapshot if t.number < trial.number]
        retried = retried_numbers(self._snapshot)
        if counted_trials(earlier, retried) >= self.settings.n_trials:
            self._storage.set_trial_system_attr(trial._trial_id, SYS_OVERFLOW, True)
            self.study.tell(trial, state=TrialState.FAIL)
            return None
        values = self.space.suggest(trial)
        if self.extend is not None:
            self.extend(trial)
        extra = {k: v for k, v in trial.params.items() if k not in values}
        values.update(extra)
        overrides = self.space.overrides(values)
        self._storage.set_trial_user_attr(
            trial._trial_id, records.OVERRIDES, [o for o in overrides if not o.startswith("hydra.")]
        )
        return trial, overrides

    def run(self, reattached: Sequence[FrozenTrial] = ()) -> SweepSummary:
        s = self.settings
        summary = SweepSummary(started=time.time())
        # Twice the slots: a job that already told its result frees its slot while its process
        # still exits (see _told_early), and its launch call finishes in the background.
        pool = ThreadPoolExecutor(max_workers=2 * max(1, s.n_jobs) + 1, thread_name_prefix="trial")
        beat = threading.Thread(target=self._heartbeat_loop, daemon=True)
        beat.start()
        for t in reattached:
            self._adopt(pool, t)
        n_failed_here = 0
        n_finished_here = 0
        aborted: str | None = None
        last_recover = time.time()
        fresh = False  # the snapshot was read after the last trial ended
        try:
            while True:
                if time.time() - last_recover > RECOVER_EVERY_S:
                    # Orphans of a crashed peer (or of our own earlier life) are failed/retried
                    # while we run, not only at start-up.
                    for t in self.recover():
                        self._adopt(pool, t)
                    last_recover = time.time()
                if not fresh:
                    self._snapshot = self._trials()
                fresh = False
                while (
                    len(self._running) < max(1, s.n_jobs)
                    and aborted is None
                    and not self._timed_out(summary)
                    and counted_trials(self._snapshot) < s.n_trials
                ):
                    asked = self._ask()
                    if asked is None:
                        break
                    trial, overrides = asked
                    fut = pool.submit(self._launch_guarded, trial, overrides)
                    self._running[trial.number] = _Running(trial, time.time(), fut)
                    summary.launched += 1
                if not self._running:
                    leftover = [
                        t
                        for t in self._trials()
                        if t.state == TrialState.RUNNING and not t.system_attrs.get(SYS_OVERFLOW)
                    ]
                    if not leftover or aborted is not None or self._timed_out(summary):
                        break
                    # Trials of a dead or live peer still hold budget: wait until they end or
                    # become orphans (failed, and retried when retry_failed is set).
                    time.sleep(1.0)
                    last_recover = 0.0
                    continue
                done, _ = wait(
                    [r.future for r in self._running.values()],
                    timeout=POLL_S,
                    return_when=FIRST_COMPLETED,
                )
                finished = [n for n, r in self._running.items() if r.future in done]
                if s.early_release:
                    finished += [n for n in self._told_early() if n not in finished]
                for number in finished:
                    run = self._running.pop(number)
                    if run.future.done():
                        frozen = self._finish(run.trial, run.future.result())
                    else:  # told by the job itself; its process is still winding down
                        frozen = self._storage.get_trial(run.trial._trial_id)
                        if frozen.state == TrialState.FAIL:
                            self._maybe_retry(frozen)
                    n_finished_here += 1
                    retried = self._retried | retried_numbers(self._snapshot)
                    if frozen.state == TrialState.FAIL and frozen.number not in retried:
                        n_failed_here += 1
                        reason = records.fail_reason(frozen, "unknown")
                        summary.failures.append(f"trial {frozen.number}: {reason}")
                        if n_failed_here / n_finished_here > s.max_failure_rate:
                            aborted = summary.failures[0]
                    if self.on_trial_end is not None:
                        self._snapshot = self._trials()
                        fresh = True
                        self.on_trial_end(frozen, summary, self._snapshot)
        finally:
            self._stop.set()
            pool.shutdown(wait=True)
        summary.finished = time.time()
        summary.counts = records.count_states(self._trials())
        if aborted is not None:
            raise SweepAborted(
                f"{n_failed_here} of {n_finished_here} trials failed, more than "
                f"hydra.sweeper.max_failure_rate={s.max_failure_rate}; first failure: {aborted}"
            )
        return summary

    def _told_early(self) -> list[int]:
        """Running trials whose job already told the study its result (event-driven completion).

        The launcher returns only after the job's process exits and submitit notices; the slot
        is free as soon as the result is in the storage.
        """
        early: list[int] = []
        for number, run in list(self._running.items()):
            if run.future.done():
                continue
            try:
                if self._storage.get_trial(run.trial._trial_id).state.is_finished():
                    early.append(number)
            except Exception as e:  # storage hiccup: the launcher's return still frees the slot
                log.debug("could not poll trial %d: %s", number, e)
        return early

    def _adopt(self, pool: ThreadPoolExecutor, t: FrozenTrial) -> None:
        """Take over a live job of a dead sweeper: claim its trial and wait for its result."""
        self._storage.set_trial_system_attr(
            t._trial_id,
            SYS_OWNER,
            {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token},
        )
        fut = pool.submit(self._watch, t)
        self._running[t.number] = _Running(optuna.Trial(self.study, t._trial_id), time.time(), fut)

    def _timed_out(self, summary: SweepSummary) -> bool:
        return self.settings.timeout is not None and (
            time.time() - summary.started >= self.settings.timeout
        )

    def _launch_guarded(self, trial: optuna.Trial, overrides: list[str]) -> LaunchOutcome:
        try:
            return self.launch(trial, overrides)
        except BaseException as e:  # the launcher itself failed (killed job, submit error)
            msg = str(e).strip().splitlines()
            return LaunchOutcome(ok=False, error=f"{type(e).__name__}: {msg[0] if msg else ''}")

    def _watch(self, t: FrozenTrial) -> LaunchOutcome:
        """Wait for a re-attached job: the job tells the study itself when it ends."""
        while True:
            state = self._storage.get_trial(t._trial_id).state
            if state.is_finished():
                return LaunchOutcome(ok=True)
            if self.is_job_alive is not None and not self.is_job_alive(t):
                time.sleep(2.0)  # the job may be writing its result right now
                if self._storage.get_trial(t._trial_id).state.is_finished():
                    return LaunchOutcome(ok=True)
                return LaunchOutcome(ok=False, error="the job ended without reporting a result")
            time.sleep(1.0)

    def _finish(self, trial: optuna.Trial, outcome: LaunchOutcome) -> FrozenTrial:
        frozen = self._storage.get_trial(trial._trial_id)
        if frozen.state == TrialState.RUNNING:
            reason = outcome.error or "the job ended without reporting a result (killed?)"
            self._fail(frozen, reason)
            frozen = self._storage.get_trial(trial._trial_id)
        elif frozen.state == TrialState.FAIL:
            self._maybe_retry(frozen)
            frozen = self._storage.get_trial(trial._trial_id)
        return frozen


def _ts(dt: Any) -> float:
    return dt.timestamp() if dt is not None else 0.0
