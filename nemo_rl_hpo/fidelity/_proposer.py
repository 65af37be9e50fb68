"""The multi-fidelity proposer: promote a paused trial when one qualifies, else a new one.

It wraps the Optuna proposer (the sampler proposes new configurations, ``n_trials`` is the
number of configurations, retries as usual) and plugs into the shared trial loop
(``sweep/core.py``) like any proposer. Everything it decides from lives in the study (rung
values, paused marks, brackets), so a restarted sweeper, or a second one on the same storage,
continues the same schedule; claims (``_claims.py``) make each promotion happen once.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nemo_rl_hpo.fidelity import history
from nemo_rl_hpo.fidelity._claims import Claims
from nemo_rl_hpo.fidelity._schedule import Record, Scheduler
from nemo_rl_hpo.fidelity.segment import CONTEXT_KEY
from nemo_rl_hpo.sweep import records
from nemo_rl_hpo.sweep.proposer import OptunaProposer, Proposal, counted_trials

log = logging.getLogger(__name__)


@dataclass
class FidelityProposer:
    """ASHA / asynchronous Hyperband over the trial loop.

    ``checkpoints``: the root under which each trial gets ``<number>/`` for all its segments.
    ``keep_checkpoints``: keep the checkpoints of trials that can no longer be promoted.
    """

    base: OptunaProposer
    scheduler: Scheduler
    checkpoints: Path
    keep_checkpoints: bool = False
    # A decision (promote, retire) follows its claim within milliseconds. A pause whose claim
    # was taken this long ago and is still undecided lost its sweeper in between; it is taken
    # back (``_take_back_undecided``). Longer than a storage outage a live sweeper may be waiting
    # out mid-decision (``storage_retry_s``), so a slow decision is never decided twice.
    undecided_after_s: float = 900.0
    # The cap on what paused trials' checkpoints hold (hydra.sweeper.fidelity.max_paused_gb):
    # past it the paused trials least likely to be promoted end (Scheduler.evictions).
    max_paused_bytes: int | None = None
    claims: Claims = field(init=False)

    def __post_init__(self) -> None:
        self.claims = Claims(self.study._storage, self.study.study_name, create=True)

    @property
    def study(self) -> optuna.Study:
        return self.base.study

    # ---------------------------------------------------------------- Proposer protocol
    def adopt(self, reattached: Sequence[FrozenTrial]) -> list[Proposal]:
        out = []
        for p, t in zip(self.base.adopt(reattached), reattached, strict=True):
            target = t.user_attrs.get(records.FIDELITY_TARGET)
            if target is None:  # not a trial of this schedule: the loop fails it
                continue
            p.context = self._context(t.number, int(target), launched=None)
            out.append(p)
        return out

    def ask(self) -> Proposal | None:
        self._take_back_undecided()
        recs = self.records()
        for promo in self.scheduler.promotions(recs, self._more_coming()):
            round_ = _pause_round(self._trial(promo.key))
            if self.claims.take(promo.key, promo.rung, "promote", round_):
                # The next decision about this pause: re-pausing it if the segment is orphaned.
                self.claims.offer(promo.key, promo.rung, round_ + 1)
                return self._promote(promo.key, promo.target)
        self.retire(recs)
        self.evict()
        proposal = self.base.ask()
        if proposal is None:
            return None
        bracket = self.scheduler.bracket_of(proposal.number)
        target = self.scheduler.first_target(bracket)
        storage = self.study._storage
        storage.set_trial_user_attr(proposal.trial._trial_id, records.FIDELITY_BRACKET, bracket)
        self._start_segment(proposal.trial._trial_id, proposal.number, target)
        proposal.context = self._context(proposal.number, target)
        return proposal

    def tell(self, trial: FrozenTrial) -> bool:
        retried = self.base.tell(trial) if trial.state == TrialState.FAIL else False
        if trial.state.is_finished():
            self._drop_checkpoints(trial)
        self.retire(self.records())  # stopping mode: a trial that may not continue ends now
        self.evict()  # a pause just added a checkpoint
        return retried

    def pending(self) -> bool:
        """A segment still runs somewhere (a peer's), or a paused trial may still be promoted."""
        self._take_back_undecided()
        trials = self._trials()
        if any(t.state == TrialState.RUNNING and not records.is_paused(t) for t in trials):
            return True
        return bool(self.scheduler.promotions(self.records(trials), self._more_coming()))

    def _more_coming(self) -> bool:
        """New configurations may still start (the budget is not spent)."""
        return counted_trials(self._trials()) < self.base.n_trials

    # ------------------------------------------------------------------------- the rest
    def records(self, trials: Sequence[FrozenTrial] | None = None) -> list[Record]:
        """Every configuration of this schedule as the scheduler sees it."""
        out = []
        for t in self._trials() if trials is None else trials:
            if records.FIDELITY_BRACKET not in t.user_attrs:
                continue
            values = {
                int(r["step"]): float(r["value"])
                for r in t.user_attrs.get(records.FIDELITY_RUNGS, [])
            }
            if t.state.is_finished():
                status = "done"
            elif records.is_paused(t):
                status = "paused"
            else:
                status = "running"
            out.append(
                Record(t.number, int(t.user_attrs[records.FIDELITY_BRACKET]), values, status)
            )
        return out

    def retire(self, recs: Sequence[Record] | None = None) -> list[int]:
        """End the paused trials that can no longer be promoted (PRUNED, checkpoints freed)."""
        ended: list[int] = []
        while True:  # a trial retired below a rung may let the ones above it retire too
            more = self._more_coming()
            now = self._retire_once(self.records() if recs is None or ended else recs, more)
            if not now:
                return ended
            ended += now

    def _retire_once(self, recs: Sequence[Record], more: bool) -> list[int]:
        why = "stopped" if self.scheduler.s.mode == "stopping" else "not promoted"
        by_key = {r.key: r for r in recs}
        numbers = self.scheduler.finished(recs, more_coming=more)
        return [n for n in numbers if self._end(n, by_key[n].step, f"{why} at {by_key[n].step}")]

    def evict(self) -> list[int]:
        """Hold paused checkpoints within ``max_paused_bytes``: end the paused trials least
        likely to be promoted until they fit (PRUNED, checkpoints freed)."""
        if self.max_paused_bytes is None:
            return []
        recs = self.records()
        sizes = {
            r.key: history.dir_bytes(self._trial(r.key).user_attrs.get(records.FIDELITY_CHECKPOINT))
            for r in recs
            if r.status == "paused"
        }
        out = self.scheduler.evictions(recs, sizes, self.max_paused_bytes, self._more_coming())
        steps = {r.key: r.step for r in recs}
        why = "evicted at {} (max_paused_gb)"
        return [n for n in out if self._end(n, steps[n], why.format(steps[n]))]

    def _end(self, number: int, step: int, why: str) -> bool:
        """End a paused trial for good (PRUNED, checkpoints freed) once its claim is ours."""
        if not self.claims.take(number, step, "retire", _pause_round(self._trial(number))):
            return False  # a peer decided it
        t = self._trial(number)
        storage = self.study._storage
        self._add_paused_time(t)
        storage.set_trial_user_attr(t._trial_id, records.FIDELITY_END, why)
        self.study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)
        self._drop_checkpoints(storage.get_trial(t._trial_id))
        log.info("trial %d ends at step %d (%s)", number, step, why)
        return True

    def rescue(self, t: FrozenTrial) -> bool:
        """Take back a promoted segment whose job died with its sweeper: pause it again.

        Called by the loop for an orphan before failing it. The trial's checkpoints are intact
        (exact resume from any of them), so instead of failing the configuration it is paused
        again at its last recorded rung and stays promotable. The decision is the claim offered
        when it was promoted from its earlier rung (one writer). A job killed after recording
        its new rung but before pausing there is paused there now (or, at ``max_resource``,
        told COMPLETE with the value it recorded). True when this sweeper did so.
        """
        segs = t.user_attrs.get(records.FIDELITY_RUNGS) or []
        if records.FIDELITY_BRACKET not in t.user_attrs or not segs:
            return False  # a first segment: nothing to go back to (the loop fails it)
        steps = [int(r["step"]) for r in segs]
        target = int(t.user_attrs.get(records.FIDELITY_TARGET, steps[-1] + 1))
        below = [st for st in steps if st < target]
        if not below:
            return False
        promoted_from, reached = below[-1], steps[-1]
        round_ = int(t.user_attrs.get(records.FIDELITY_ROUND, 0)) + 1
        if not self.claims.take(t.number, promoted_from, "re-pause", round_):
            return False  # a peer took it back, or it was never promoted from there
        storage = self.study._storage
        if reached >= self.scheduler.s.max_resource:  # it ended; only its tell was lost
            storage.set_trial_user_attr(t._trial_id, records.FIDELITY_END, "max_resource")
            self.study.tell(t.number, float(segs[-1]["value"]), skip_if_finished=True)
            log.warning("trial %d: its sweeper died as it completed; told COMPLETE", t.number)
            return True
        if reached > promoted_from:  # its rung was recorded: the pause its end would have made
            self.claims.offer(t.number, reached)
            paused = {"step": reached, "since": time.time()}
        else:
            self.claims.offer(t.number, reached, round_ + 1)
            paused = {"step": reached, "since": time.time(), "round": round_ + 1}
        storage.set_trial_system_attr(t._trial_id, records.SYS_PAUSED, paused)
        log.warning(
            "trial %d: its segment to step %s died with its sweeper; paused again at step %d",
            t.number,
            t.user_attrs.get(records.FIDELITY_TARGET),
            reached,
        )
        return True

    def _take_back_undecided(self) -> list[int]:
        """Re-open the pauses whose claim was taken but never acted on.

        A sweeper killed between taking a pause's claim and promoting (or retiring) the trial
        leaves it paused with its claim taken: nobody may decide it, so it would be neither
        promoted nor retired, and the sweep would wait for it forever. Such a pause is moved to
        a fresh claim (the next round's, taken here atomically, as ``rescue`` does for a dead
        segment), so the scheduler decides it again. Returns the trials re-opened.
        """
        taken = self.claims.taken_before(time.time() - self.undecided_after_s)
        if not taken:
            return []
        reopened = []
        storage = self.study._storage
        for t in self._trials():
            paused = t.system_attrs.get(records.SYS_PAUSED)
            if t.state != TrialState.RUNNING or not isinstance(paused, dict):
                continue
            step, round_ = int(paused["step"]), int(paused.get("round", 0))
            if (t.number, step, round_) not in taken:
                continue
            self.claims.offer(t.number, step, round_ + 1)  # its taker may have died before this
            if not self.claims.take(t.number, step, "undecided", round_ + 1):
                continue  # a peer re-opened it
            self.claims.offer(t.number, step, round_ + 2)
            storage.set_trial_system_attr(
                t._trial_id, records.SYS_PAUSED, {**paused, "round": round_ + 2}
            )
            log.warning(
                "trial %d: the sweeper that took its pause at step %d died before deciding it; "
                "it can be promoted again",
                t.number,
                step,
            )
            reopened.append(t.number)
        return reopened

    def _promote(self, number: int, target: int) -> Proposal:
        t = self._trial(number)
        storage = self.study._storage
        self._add_paused_time(t)
        self._start_segment(t._trial_id, number, target)
        storage.set_trial_user_attr(t._trial_id, records.FIDELITY_ROUND, _pause_round(t))
        # A fresh heartbeat first: a peer must not take the resumed trial for an orphan.
        storage.set_trial_system_attr(t._trial_id, records.SYS_HEARTBEAT, time.time())
        storage.set_trial_system_attr(t._trial_id, records.SYS_PAUSED, None)
        log.info("trial %d promoted: resumes at step %s to %d", number, _paused_step(t), target)
        (proposal,) = self.base.adopt([t])
        proposal.context = self._context(number, target)
        return proposal

    def _start_segment(self, trial_id: int, number: int, target: int) -> None:
        storage = self.study._storage
        storage.set_trial_user_attr(trial_id, records.FIDELITY_TARGET, target)
        storage.set_trial_user_attr(trial_id, records.FIDELITY_CHECKPOINT, str(self._ckpt(number)))

    def _context(self, number: int, target: int, launched: float | None = -1.0) -> dict[str, Any]:
        now = time.time() if launched == -1.0 else launched
        return {
            "steps": target,
            "checkpoint_dir": str(self._ckpt(number)),
            CONTEXT_KEY: {"target": target, "max": self.scheduler.s.max_resource, "launched": now},
        }

    def _ckpt(self, number: int) -> Path:
        """The trial's checkpoint dir: the one its first segment got, whichever sweeper (and
        sweep dir) promotes it later."""
        recorded = self._trial(number).user_attrs.get(records.FIDELITY_CHECKPOINT)
        return Path(recorded) if recorded else self.checkpoints / str(number)

    def _add_paused_time(self, t: FrozenTrial) -> None:
        paused = t.system_attrs.get(records.SYS_PAUSED)
        if not isinstance(paused, dict):
            return
        spent = float(t.user_attrs.get(records.FIDELITY_PAUSED_S, 0.0))
        spent += max(0.0, time.time() - float(paused.get("since", time.time())))
        self.study._storage.set_trial_user_attr(t._trial_id, records.FIDELITY_PAUSED_S, spent)

    def _drop_checkpoints(self, t: FrozenTrial) -> None:
        """Free a finished trial's checkpoints, unless kept or it reached max_resource."""
        if self.keep_checkpoints or t.state == TrialState.COMPLETE:
            return
        path = t.user_attrs.get(records.FIDELITY_CHECKPOINT)
        if path and Path(path).is_dir():
            shutil.rmtree(path, ignore_errors=True)

    def _trials(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    def _trial(self, number: int) -> FrozenTrial:
        storage = self.study._storage
        trial_id = storage.get_trial_id_from_study_id_trial_number(self.study._study_id, number)
        return storage.get_trial(trial_id)  # type: ignore[no-any-return]


def _pause_round(t: FrozenTrial) -> int:
    """Which claim decides the trial's current pause (see ``Claims.offer``)."""
    paused = t.system_attrs.get(records.SYS_PAUSED)
    return int(paused.get("round", 0)) if isinstance(paused, dict) else 0


def _paused_step(t: FrozenTrial) -> Any:
    paused = t.system_attrs.get(records.SYS_PAUSED)
    return paused.get("step") if isinstance(paused, dict) else "?"
