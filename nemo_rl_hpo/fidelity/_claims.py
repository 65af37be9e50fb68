"""Who promotes a paused trial: an atomic claim in the study's own storage.

Two sweepers on one PostgreSQL or journal study must never both promote (or both retire) the
same paused trial. Optuna's storages have exactly one compare-and-swap: moving a WAITING trial
to RUNNING succeeds for one caller only (``set_trial_state_values`` returns False for the others;
a row lock in RDB storages, the log's order in journal storages). That is how Optuna hands an
enqueued trial to one of many workers. The claims live as WAITING trials of a side study
``<study>:fidelity``: the job that pauses a trial at a rung offers one claim for that
``(trial, step)``; whoever moves it to RUNNING owns the decision. Nobody asks that study for
trials, so no sampler ever pops a claim, and the main study holds only real configurations.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

import optuna
from optuna.trial import TrialState

log = logging.getLogger(__name__)

SUFFIX = ":fidelity"
_TRIAL = "trial"
_STEP = "step"
_ROUND = "round"


def study_name(main: str) -> str:
    return main + SUFFIX


def is_claims_study(name: str) -> bool:
    """A side study of claims (listed by nobody: ``nemo-rl-hpo list`` leaves it out)."""
    return name.endswith(SUFFIX)


class Claims:
    """The claims of one study's paused trials."""

    def __init__(self, storage: Any, main_study: str, *, create: bool = False) -> None:
        name = study_name(main_study)
        if create:
            self.study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True)
        else:
            self.study = optuna.load_study(storage=storage, study_name=name)
        self.storage = self.study._storage

    def offer(self, number: int, step: int, round_: int = 0) -> None:
        """One claim for trial ``number`` paused at ``step`` (a requeued job offers it once).

        ``round_`` numbers the decisions about one pause: 0 is the pause itself; the sweeper
        that takes claim ``k`` to promote the trial offers ``k + 1``, which a sweeper takes to
        re-pause the trial when that promoted segment is orphaned, and so on. Each claim has one
        writer (the holder of the claim before it), so no claim is ever offered twice.
        """
        if self._find(number, step, round_) is None:
            self.study.enqueue_trial({}, user_attrs={_TRIAL: number, _STEP: step, _ROUND: round_})

    def take(self, number: int, step: int, why: str, round_: int = 0) -> bool:
        """True for exactly one caller per offer, whatever process or host it runs on."""
        found = self._find(number, step, round_)
        if found is None or found.state != TrialState.WAITING:
            return False
        if not self.storage.set_trial_state_values(found._trial_id, state=TrialState.RUNNING):
            return False
        owner = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(), "why": why}
        self.storage.set_trial_user_attr(found._trial_id, "taken_by", owner)
        return True

    def open_offers(self) -> set[tuple[int, int]]:
        """(trial, step) offers nobody took yet."""
        return {
            (int(t.user_attrs[_TRIAL]), int(t.user_attrs[_STEP]))
            for t in self.storage.get_all_trials(
                self.study._study_id, deepcopy=False, states=(TrialState.WAITING,)
            )
        }

    def taken_before(self, cutoff: float) -> set[tuple[int, int, int]]:
        """(trial, step, round) of the claims taken before ``cutoff`` (epoch seconds).

        The taker's ``taken_by`` time (epoch seconds, host-independent) where it wrote one;
        else the ``datetime_start`` the storage stamped when the claim moved to RUNNING (the
        taker died before writing ``taken_by``; a naive local time, so hosts in one time zone).
        """
        out = set()
        for t in self.storage.get_all_trials(
            self.study._study_id, deepcopy=False, states=(TrialState.RUNNING,)
        ):
            a = t.user_attrs
            owner = a.get("taken_by")
            if isinstance(owner, dict) and "time" in owner:
                when = float(owner["time"])
            elif t.datetime_start is not None:
                when = t.datetime_start.timestamp()
            else:
                continue
            if when < cutoff:
                out.add((int(a[_TRIAL]), int(a[_STEP]), int(a.get(_ROUND, 0))))
        return out

    def _find(self, number: int, step: int, round_: int = 0) -> Any:
        for t in self.storage.get_all_trials(self.study._study_id, deepcopy=False):
            a = t.user_attrs
            if a.get(_TRIAL) == number and a.get(_STEP) == step and a.get(_ROUND, 0) == round_:
                return t
        return None
