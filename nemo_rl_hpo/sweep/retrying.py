"""Every storage call retried through an outage, said once, given up with one line.

A database restart, a failover or a dropped connection makes every storage call fail for a
while. Sweepers and trial jobs open their storage through
:func:`nemo_rl_hpo.sweep.storage.open_storage`, which wraps it in :class:`RetryingStorage`: the
one place the retry policy lives.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Sequence
from typing import TYPE_CHECKING, Any

from optuna.storages import BaseStorage

from nemo_rl_hpo.outage import Outage, backoff
from nemo_rl_hpo.sweep.faults import (
    _TRANSIENT_TEXT,
    CREATE_TOKEN,
    StorageDamaged,
    StorageUnavailable,
    _first_line,
    is_transient,
    unreadable_message,
)

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.study import StudyDirection
    from optuna.study._frozen import FrozenStudy
    from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)


class _QuietOutage(logging.Filter):
    """Drop Optuna's own per-attempt line about a dropped connection (we say it once).

    ``RDBStorage._get_trials`` logs every OperationalError as a possible "too many SQL
    variables" before it falls back to a slower query; during an outage that is seven lines per
    attempt, and the fallback fails the same way, so the retry reports it instead.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (
            msg.startswith("Caught an error from sqlalchemy") and _TRANSIENT_TEXT.search(msg)
        )


def _quiet_optuna_outage_lines() -> None:
    logger = logging.getLogger("optuna.storages._rdb.storage")
    if not any(isinstance(f, _QuietOutage) for f in logger.filters):
        logger.addFilter(_QuietOutage())


class RetryingStorage(BaseStorage):
    """Every call of ``inner`` retried through an outage, for up to ``retry_s`` seconds.

    Back-off doubles from 0.5 s to 5 s. The first failure logs one warning naming the storage
    (password masked) and the limit; the first success after it logs how long it was away.
    Past the limit a call raises :class:`StorageUnavailable`; later calls then try once each,
    so a sweep that gave up reaches its error line without waiting again.

    Repeating a call whose commit reached the server but whose answer was lost must not count
    twice: a new trial carries a token (system attr ``nemo_rl_hpo:create_token``) written in the
    same transaction, so a retry finds it instead of creating a second trial (RDB storages check
    it inside Optuna's own retries too); a repeated tell that finds the trial already in that
    state with those values is the earlier call's success; a trial popped from WAITING whose
    answer was lost is left to the sweeper's orphan check (failed, or retried with
    ``retry_failed``) rather than guessed to be ours, which could run it twice.
    """

    def __init__(self, inner: BaseStorage, *, name: str, retry_s: float) -> None:
        self._inner = inner
        self._name = name
        self.retry_s = float(retry_s)
        self._outage = Outage()
        _quiet_optuna_outage_lines()

    def __getattr__(self, name: str) -> Any:
        # engine, remove_session, heartbeat methods...: those of the wrapped storage or its backend
        if name.startswith("__") or name in ("_inner", "_name", "_outage", "retry_s"):
            raise AttributeError(name)
        inner = self.__dict__.get("_inner")
        if inner is None:
            raise AttributeError(name)
        try:
            return getattr(inner, name)
        except AttributeError:
            backend = getattr(inner, "_backend", None)
            if backend is None:
                raise
            return getattr(backend, name)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_outage", None)  # a lock: a copy starts with no outage of its own
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._outage = Outage()

    @property
    def reachable_since(self) -> float:
        """Wall time the storage last came back after an outage (0.0: no outage seen)."""
        return self._outage.back_at

    # --------------------------------------------------------------------------- the retry
    def _call(self, what: str, fn: Any, *args: Any, on_retry: Any = None) -> Any:
        import time

        delays = backoff(0.5, 5.0)
        failed = False
        while True:
            if failed and on_retry is not None:
                try:
                    done, value = on_retry()
                except Exception as e:
                    if not is_transient(e):
                        raise
                    done, value = False, None
                if done:
                    self._back()
                    return value
            try:
                result = fn(*args)
            except Exception as e:
                if not is_transient(e):
                    damaged = unreadable_message(e, self._name)
                    if damaged is not None:
                        raise StorageDamaged(damaged) from None
                    raise
                failed = True
                wait = self._down(what, e)
                time.sleep(min(next(delays), wait))
                continue
            self._back()
            return result

    def _down(self, what: str, e: BaseException) -> float:
        """Note a failed call; how long it may still wait, or raise once the limit is past."""
        o = self._outage
        first, away = o.down()
        if first:
            log.warning(
                "storage %s unreachable (%s: %s); retrying for up to %.0f s (storage_retry_s)",
                self._name,
                what,
                _first_line(e),
                self.retry_s,
            )
        left = self.retry_s - away
        with o.lock:
            if o.gave_up or left <= 0:
                o.gave_up = True
                raise StorageUnavailable(
                    f"storage {self._name} unreachable for {away:.0f} s, longer than "
                    f"storage_retry_s={self.retry_s:g} ({_first_line(e)})"
                ) from None
        return left

    def _back(self) -> None:
        away = self._outage.up()
        if away is not None:
            log.warning("storage %s reachable again after %.1f s", self._name, away)

    # ---------------------------------------------------------------- non-idempotent calls
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        import copy
        import uuid
        from datetime import datetime

        from optuna.trial import FrozenTrial, TrialState

        token = uuid.uuid4().hex
        if template_trial is None:
            template = FrozenTrial(
                number=-1,
                state=TrialState.RUNNING,
                value=None,
                datetime_start=datetime.now(),
                datetime_complete=None,
                params={},
                distributions={},
                user_attrs={},
                system_attrs={CREATE_TOKEN: token},
                intermediate_values={},
                trial_id=-1,
            )
        else:
            template = copy.copy(template_trial)
            template.system_attrs = {**template_trial.system_attrs, CREATE_TOKEN: token}

        def created() -> tuple[bool, int | None]:
            for t in self._inner.get_all_trials(study_id, deepcopy=False):
                if t.system_attrs.get(CREATE_TOKEN) == token:
                    return True, t._trial_id
            return False, None

        return int(
            self._call(
                "create_new_trial",
                self._inner.create_new_trial,
                study_id,
                template,
                on_retry=created,
            )
        )

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        def landed() -> tuple[bool, bool | None]:
            t = self._inner.get_trial(trial_id)
            if state.is_finished() and t.state == state:
                same = (t.values is None and values is None) or (
                    t.values is not None and values is not None and list(t.values) == list(values)
                )
                return same, True
            return False, None

        return bool(
            self._call(
                "set_trial_state_values",
                self._inner.set_trial_state_values,
                trial_id,
                state,
                values,
                on_retry=landed,
            )
        )

    def create_new_study(
        self, directions: Sequence[StudyDirection], study_name: str | None = None
    ) -> int:
        from optuna.exceptions import DuplicatedStudyError

        failed = [False]

        def create() -> int:
            try:
                return self._inner.create_new_study(directions, study_name)
            except DuplicatedStudyError:
                if failed[0] and study_name is not None:  # our earlier attempt created it
                    return self._inner.get_study_id_from_name(study_name)
                raise
            except Exception:
                failed[0] = True
                raise

        return int(self._call("create_new_study", create))

    def delete_study(self, study_id: int) -> None:
        failed = [False]

        def delete() -> None:
            try:
                self._inner.delete_study(study_id)
            except KeyError:
                if not failed[0]:  # deleted by our earlier attempt: done
                    raise
            except Exception:
                failed[0] = True
                raise

        self._call("delete_study", delete)

    # ------------------------------------------------------------------ idempotent calls
    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._call("set_study_user_attr", self._inner.set_study_user_attr, study_id, key, value)

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._call("set_study_system_attr", self._inner.set_study_system_attr, study_id, key, value)

    def get_study_id_from_name(self, study_name: str) -> int:
        return int(self._call("get_study", self._inner.get_study_id_from_name, study_name))

    def get_study_name_from_id(self, study_id: int) -> str:
        return str(self._call("get_study", self._inner.get_study_name_from_id, study_id))

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return list(self._call("get_study", self._inner.get_study_directions, study_id))

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return dict(self._call("get_study", self._inner.get_study_user_attrs, study_id))

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return dict(self._call("get_study", self._inner.get_study_system_attrs, study_id))

    def get_all_studies(self) -> list[FrozenStudy]:
        return list(self._call("get_all_studies", self._inner.get_all_studies))

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: BaseDistribution,
    ) -> None:
        self._call(
            "set_trial_param",
            self._inner.set_trial_param,
            trial_id,
            param_name,
            param_value_internal,
            distribution,
        )

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return int(
            self._call(
                "get_trial",
                self._inner.get_trial_id_from_study_id_trial_number,
                study_id,
                trial_number,
            )
        )

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        self._call(
            "set_trial_intermediate_value",
            self._inner.set_trial_intermediate_value,
            trial_id,
            step,
            intermediate_value,
        )

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._call("set_trial_user_attr", self._inner.set_trial_user_attr, trial_id, key, value)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._call("set_trial_system_attr", self._inner.set_trial_system_attr, trial_id, key, value)

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._call("get_trial", self._inner.get_trial, trial_id)  # type: ignore[no-any-return]

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        return list(
            self._call("get_all_trials", self._inner.get_all_trials, study_id, deepcopy, states)
        )

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        return self._call("get_best_trial", self._inner.get_best_trial, study_id)  # type: ignore[no-any-return]

    def remove_session(self) -> None:
        self._inner.remove_session()
