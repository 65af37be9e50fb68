"""The progress line: one log line per finished trial (n/total, state, value, best, ETA)."""

from __future__ import annotations

import logging
import time

import optuna
from optuna.trial import FrozenTrial, TrialState

from nemo_rl_hpo.fidelity import history
from nemo_rl_hpo.sweep import records
from nemo_rl_hpo.sweep.core import SweepSettings, SweepSummary
from nemo_rl_hpo.sweep.proposer import counted_trials

log = logging.getLogger(__name__)


class Progress:
    """One line per finished trial: n/total, state, value, best, running, elapsed, ETA."""

    def __init__(self, settings: SweepSettings, study: optuna.Study) -> None:
        self.settings = settings
        self.study = study
        self.t0 = time.time()
        self.done = 0

    def __call__(self, t: FrozenTrial, summary: SweepSummary, trials: list[FrozenTrial]) -> None:
        self.done += 1
        finished = sum(1 for x in trials if x.state.is_finished() and x.state != TrialState.WAITING)
        running = sum(
            1 for x in trials if x.state == TrialState.RUNNING and not records.is_paused(x)
        )
        elapsed = time.time() - self.t0
        left = max(0, self.settings.n_trials - counted_trials(trials))
        per = elapsed / self.done
        eta = per * (left + running) / max(1, self.settings.n_jobs)
        value = "-" if t.values is None else ",".join(f"{v:.6g}" for v in t.values)
        best = "-"
        done = [x for x in trials if x.state == TrialState.COMPLETE and x.values is not None]
        if done and len(self.study.directions) == 1:
            sign = 1.0 if self.study.direction.name == "MINIMIZE" else -1.0
            b = min(done, key=lambda x: sign * float(x.values[0]))
            best = f"{b.values[0]:.6g} (#{b.number})"
        elif done:
            best = "see the Pareto front"
        reason = ""
        state = t.state.name
        if records.is_paused(t):  # a segment ended at its rung: one configuration, not done
            state = f"PAUSED at step {history.paused_step(t)}"
            value = ",".join(f"{float(s['value']):.6g}" for s in history.segments(t)[-1:]) or "-"
        if t.state == TrialState.FAIL:
            reason = f" reason={records.fail_reason(t)}"
        if t.state == TrialState.PRUNED:
            reason = f" at step {t.user_attrs.get(records.PRUNED_AT_STEP, t.last_step)}"
        log.info(
            "[%d/%d] trial %d %s value=%s best=%s running=%d elapsed=%s eta=%s%s",
            finished,
            self.settings.n_trials,
            t.number,
            state,
            value,
            best,
            running,
            _hms(elapsed),
            _hms(eta),
            reason,
        )


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"
