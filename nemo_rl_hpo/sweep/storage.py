"""Storage URLs: SQLite on one machine, a journal file or PostgreSQL for a cluster.

One parser for every place that opens a study (sweeper, trial job, CLI, report), and one masker
for every place that prints or saves a URL: a password never leaves the process memory. Every
storage opened here survives an outage (database restart, dropped connection) for
``retry_s`` seconds: :class:`RetryingStorage` is the one place that retry policy lives.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import re
import threading
from collections.abc import Container, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from optuna.storages import BaseStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.study import StudyDirection
    from optuna.study._frozen import FrozenStudy
    from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)

JOURNAL_SCHEME = "journal://"
MEMORY_URL = "memory://"

_live: dict[str, BaseStorage] = {}
_live_lock = threading.Lock()


class StorageError(ValueError):
    """A storage URL that cannot be opened; the message says which key to fix."""


def mask(url: str | None) -> str | None:
    """Return ``url`` with any password replaced by ``***``."""
    if url is None:
        return None
    return re.sub(r"(://[^/:@\s]*:)([^@/\s]*)@", r"\1***@", str(url))


def split_password(url: str) -> tuple[str, str | None]:
    """Split a URL into (url without password, password or None)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url, None
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{user}@{host}"
    return urlunsplit(
        (parts.scheme, netloc, parts.path, parts.query, parts.fragment)
    ), parts.password


def insert_password(url: str, password: str) -> str:
    """Inverse of :func:`split_password` for a URL that has a user but no password."""
    parts = urlsplit(url)
    if parts.username is None or parts.password is not None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}:{password}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def journal_path(url: str) -> Path | None:
    """The file of a ``journal://`` URL (``journal:///abs/path`` or ``journal://rel/path``)."""
    if not url.startswith(JOURNAL_SCHEME):
        return None
    return Path(url[len(JOURNAL_SCHEME) :])


def sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite:///"):
        return None
    return Path(url[len("sqlite:///") :])


def register_live(url: str, storage: BaseStorage) -> None:
    """Let in-process jobs (basic launcher) reuse the sweeper's storage object."""
    with _live_lock:
        _live[url] = storage


def open_storage(
    url: str,
    *,
    heartbeat_interval: int | None = None,
    existing: bool = False,
    retry_s: float | None = None,
) -> BaseStorage:
    """Open a storage URL: sqlite:///, postgresql://, mysql://, journal://PATH or memory://.

    ``existing``: the sweeper already created and checked the schema (a trial job opening its
    study); skipping both saves ~30 ms of every job's start-up. ``retry_s``: how long calls
    retry through an outage (None: :data:`DEFAULT_RETRY_S`).
    """
    import optuna

    retry = DEFAULT_RETRY_S if retry_s is None else float(retry_s)

    with _live_lock:
        if url in _live:
            return _live[url]
    if url == MEMORY_URL or url.startswith(MEMORY_URL):
        storage: BaseStorage = optuna.storages.InMemoryStorage()
        register_live(url, storage)
        return storage
    jpath = journal_path(url)
    if jpath is not None:
        from optuna.storages.journal import JournalStorage

        jpath.parent.mkdir(parents=True, exist_ok=True)
        return RetryingStorage(
            JournalStorage(_JournalBackend(str(jpath))), name=mask(url) or "", retry_s=retry
        )
    spath = sqlite_path(url)
    if spath is not None:
        spath.parent.mkdir(parents=True, exist_ok=True)
    if not re.match(r"^[a-z0-9+]+://", url):
        raise StorageError(
            f"hydra.sweeper.storage={mask(url)!r} is not a storage URL; use sqlite:///path.db, "
            "journal:///path/journal.log, postgresql://user@host/db or null for the default."
        )
    engine_kwargs: dict[str, object] = {}
    if url.startswith("sqlite"):
        # Several job processes write one file: wait for the lock instead of failing at once.
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    try:
        rdb = _create_rdb(url, engine_kwargs, heartbeat_interval, existing)
        if url.startswith("sqlite"):
            _fast_sqlite(rdb)
    except Exception as e:  # sqlalchemy raises many types; all mean "cannot open"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StorageError(
            f"hydra.sweeper.storage={mask(url)!r} cannot be opened ({mask(first)}); check the "
            "URL, that the server runs and the driver is installed."
        ) from None
    from optuna.storages._cached_storage import _CachedStorage

    # Optuna caches finished trials of an RDB storage (create_study would wrap it so); the retry
    # goes around the cache, so a retried call also refreshes it.
    return RetryingStorage(_CachedStorage(rdb), name=mask(url) or "", retry_s=retry)


# Messages of a peer creating the same tables at the same moment (PostgreSQL, MySQL, SQLite).
_SCHEMA_RACE = re.compile(r"already exists|duplicate key|Duplicate entry|UNIQUE constraint", re.I)


def _create_rdb(
    url: str,
    engine_kwargs: dict[str, object],
    heartbeat_interval: int | None,
    existing: bool = False,
) -> RDBStorage:
    """RDBStorage, retried while another process creates the same schema.

    Optuna's ``create_all`` checks then creates each table, so sweepers started together on an
    empty database race: the loser gets "duplicate key ... pg_type" or "already exists". The
    winner's tables are then there, and a second attempt only reads them.
    """
    import random
    import time

    attempts = 6
    for attempt in range(attempts):
        try:
            with _deferred_version_manager(existing):
                return _DedupRDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    skip_table_creation=existing,
                    skip_compatibility_check=existing,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=None
                    if heartbeat_interval is None
                    else max(3 * heartbeat_interval, 10),
                )
        except Exception as e:
            if attempt == attempts - 1 or not _SCHEMA_RACE.search(str(e)):
                raise
            time.sleep(0.2 * (attempt + 1) + random.random() * 0.3)
    raise AssertionError("unreachable")


_vm_lock = threading.Lock()


class _DeferredVersionManager:
    """Optuna's ``_VersionManager``, built only when something asks it a question.

    ``RDBStorage.__init__`` builds one even with ``skip_compatibility_check``: that imports
    alembic (~0.14 s here) and runs two queries in every trial job, which never checks or
    upgrades the schema (the sweeper did). Any later use (``get_current_version``, ``upgrade``)
    builds the real one then.
    """

    def __init__(self, real_cls: Any, *args: Any) -> None:
        self._real_cls = real_cls
        self._args = args
        self._real: Any = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_real_cls", "_args", "_real"):
            raise AttributeError(name)
        if self._real is None:
            self._real = self._real_cls(*self._args)
        return getattr(self._real, name)


@contextlib.contextmanager
def _deferred_version_manager(enabled: bool) -> Iterator[None]:
    """While an ``existing`` storage is built, hand it a deferred version manager."""
    import importlib

    rdb_module: Any = importlib.import_module("optuna.storages._rdb.storage")
    real_cls = getattr(rdb_module, "_VersionManager", None)
    if not enabled or real_cls is None:  # a future Optuna without it: the plain path
        yield
        return
    with _vm_lock:
        rdb_module._VersionManager = functools.partial(_DeferredVersionManager, real_cls)
        try:
            yield
        finally:
            rdb_module._VersionManager = real_cls


def _fast_sqlite(rdb: Any) -> None:
    """WAL + synchronous=NORMAL: no fsync per commit (≈10 ms each here), still crash-safe.

    A killed process loses nothing that was committed; only a power loss may drop the last
    commits. Readers (report, status, jobs) no longer block the writer. WAL needs a local file
    system, which is why SLURM sweeps default to a journal file instead.
    """
    from sqlalchemy import event

    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    event.listen(rdb.engine, "connect", _pragmas)
    rdb.engine.dispose()  # connections made while creating tables reconnect with the pragmas


def env_password_var() -> str:
    """Name of the variable that carries a storage password to jobs (never written to files)."""
    from nemo_rl_hpo.trial import ENV_STORAGE_PASSWORD

    return ENV_STORAGE_PASSWORD


def export_password(url: str) -> str:
    """Put the URL's password in this process's environment; return the URL without it.

    Children (local subprocesses, sbatch with its default ``--export=ALL``) inherit it, while the
    returned URL is what goes into Hydra overrides and therefore into job dirs.
    """
    bare, password = split_password(url)
    if password is not None:
        os.environ[env_password_var()] = password
    return bare


# --------------------------------------------------------------------------- outages and faults
# A database restart, a failover or a dropped connection makes every storage call fail for a
# while. Sweepers and trial jobs open their storage here, so one wrapper retries all of them
# with bounded back-off, says so once per outage (not per attempt) and gives up with one line
# after ``retry_s``. Calls that are not idempotent (creating a trial, telling its state) are
# made safe to repeat after a commit whose answer was lost: see RetryingStorage.

DEFAULT_RETRY_S = 600.0  # also hydra.sweeper.storage_retry_s's default (config.py)
CREATE_TOKEN = "nemo_rl_hpo:create_token"  # system attr: which call created a trial (dedupe)

# What a server going away looks like, through SQLAlchemy, psycopg, PyMySQL and sqlite3.
_TRANSIENT_TEXT = re.compile(
    r"server closed the connection|connection refused|could not connect|connection .*(lost|"
    r"reset|closed|timed out|failed)|terminating connection|the database system is (shutting "
    r"down|starting up|in recovery mode)|consuming input failed|SSL SYSCALL|server has gone away"
    r"|Lost connection|Can't connect|database is locked|no connection to the server|"
    r"cannot connect|connection to server .* failed|admin shutdown",
    re.I,
)
# A server that answers "no" is not away: retrying would only delay the error.
_PERMANENT_TEXT = re.compile(
    r"authentication failed|no pg_hba\.conf entry|Access denied|permission denied|"
    r"does not exist|Unknown database",
    re.I,
)
_DISK_FULL_TEXT = re.compile(r"no space left on device|disk is full|could not extend file", re.I)
_TRANSIENT_ERRNO = {
    errno.EIO,
    errno.ESTALE,
    errno.ETIMEDOUT,
    errno.EAGAIN,
    errno.EINTR,
    errno.ENOLCK,
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.EHOSTUNREACH,
}


class StorageUnavailable(StorageError):
    """The storage stayed unreachable past the retry limit; the message is one line.

    A :class:`StorageError`, so every place that reports a storage it cannot open (the CLI,
    warm start) reports this one the same way.
    """


def _chain(e: BaseException) -> Iterator[BaseException]:
    """``e`` and its causes (Optuna wraps SQLAlchemy, which wraps the driver's error)."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def is_disk_full(e: BaseException) -> bool:
    """Whether ``e`` (or what caused it) is a full disk or an exceeded quota."""
    for c in _chain(e):
        if isinstance(c, OSError) and c.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if _DISK_FULL_TEXT.search(str(c)):
            return True
    return False


def is_transient(e: BaseException) -> bool:
    """Whether ``e`` means "the storage is away for now" (worth retrying), not a bad request."""
    if is_disk_full(e) or isinstance(e, StorageUnavailable):
        return False
    if any(_PERMANENT_TEXT.search(str(c)) for c in _chain(e)):
        return False
    for c in _chain(e):
        if getattr(c, "connection_invalidated", False):
            return True
        name = type(c).__name__
        if name in ("DisconnectionError", "InterfaceError") or (
            name == "TimeoutError" and type(c).__module__.startswith("sqlalchemy")
        ):
            return True
        if isinstance(c, (ConnectionError, TimeoutError)):
            return True
        if isinstance(c, OSError) and c.errno in _TRANSIENT_ERRNO:
            return True
        if _TRANSIENT_TEXT.search(str(c)):
            return True
    return False


def _first_line(e: BaseException) -> str:
    """The innermost cause's first line (the driver's own words), masked."""
    causes = list(_chain(e))
    for c in reversed(causes):
        text = str(c).strip()
        if text:
            return mask(text.splitlines()[0]) or ""
    return type(e).__name__


class _Outage:
    """Shared by every call of one storage: when it went away, said once, given up once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.since: float | None = None  # monotonic time of the first failed call
        self.gave_up = False
        self.back_at = 0.0  # wall time the storage last came back (0: never away)


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
        self._outage = _Outage()
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
        self._outage = _Outage()

    @property
    def reachable_since(self) -> float:
        """Wall time the storage last came back after an outage (0.0: no outage seen)."""
        return self._outage.back_at

    # --------------------------------------------------------------------------- the retry
    def _call(self, what: str, fn: Any, *args: Any, on_retry: Any = None) -> Any:
        import time

        delay = 0.5
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
                    raise
                failed = True
                wait = self._down(what, e)
                time.sleep(min(delay, wait))
                delay = min(2 * delay, 5.0)
                continue
            self._back()
            return result

    def _down(self, what: str, e: BaseException) -> float:
        """Note a failed call; how long it may still wait, or raise once the limit is past."""
        import time

        o = self._outage
        now = time.monotonic()
        with o.lock:
            if o.since is None:
                o.since = now
                log.warning(
                    "storage %s unreachable (%s: %s); retrying for up to %.0f s "
                    "(hydra.sweeper.storage_retry_s)",
                    self._name,
                    what,
                    _first_line(e),
                    self.retry_s,
                )
            left = self.retry_s - (now - o.since)
            if o.gave_up or left <= 0:
                o.gave_up = True
                raise StorageUnavailable(
                    f"storage {self._name} unreachable for {now - o.since:.0f} s, longer than "
                    f"hydra.sweeper.storage_retry_s={self.retry_s:g} ({_first_line(e)})"
                ) from None
        return left

    def _back(self) -> None:
        import time

        o = self._outage
        if o.since is None:
            return
        with o.lock:
            if o.since is None:
                return
            away = time.monotonic() - o.since
            o.since = None
            o.gave_up = False
            o.back_at = time.time()
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


class _DedupRDBStorage(RDBStorage):
    """Optuna's RDBStorage whose trial creation, when repeated, finds the trial it created.

    ``RDBStorage._create_new_trial`` retries itself five times on any commit error, so a commit
    that reached the server but whose answer was lost would create a second trial. The check
    runs inside the same transaction, after Optuna locked the study row, and only on a repeat.
    """

    _nemo_tokens: set[str]

    def _get_prepared_new_trial(
        self, study_id: int, template_trial: FrozenTrial | None, session: Any
    ) -> Any:
        from optuna.storages._rdb import models

        token = template_trial.system_attrs.get(CREATE_TOKEN) if template_trial else None
        if token is not None:
            seen = self.__dict__.setdefault("_nemo_tokens", set())
            if token in seen:
                found = (
                    session.query(models.TrialModel)
                    .join(models.TrialSystemAttributeModel)
                    .filter(models.TrialModel.study_id == study_id)
                    .filter(models.TrialSystemAttributeModel.key == CREATE_TOKEN)
                    .filter(models.TrialSystemAttributeModel.value_json == json.dumps(token))
                    .one_or_none()
                )
                if found is not None:
                    return found
            seen.add(token)
        return super()._get_prepared_new_trial(study_id, template_trial, session)  # type: ignore[misc]


class _JournalBackend(JournalFileBackend):
    """Optuna's journal file, never left with a torn last line.

    A write cut short (disk full, a writer SIGKILLed inside a large write) leaves a partial
    line; Optuna reads past a partial *last* line, but once another line follows it every
    reader fails with "Invalid log format". So a failed append truncates what it wrote, and
    each append first drops a torn tail left by a writer that died (under the journal's lock,
    no other writer is mid-line).
    """

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        from optuna.storages.journal._file import get_lock_file

        data = ("\n".join(json.dumps(x, separators=(",", ":")) for x in logs) + "\n").encode()
        with get_lock_file(self._lock):
            size = _drop_torn_tail(self._file_path)
            try:
                with open(self._file_path, "ab") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            except BaseException:
                with contextlib.suppress(OSError):
                    os.truncate(self._file_path, size)
                raise


def _drop_torn_tail(path: str) -> int:
    """Cut a partial last line off ``path``; return the size after."""
    size = os.path.getsize(path)
    if size == 0:
        return 0
    with open(path, "rb") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return size
        # Search back for the last complete line.
        pos = size
        while pos > 0:
            step = min(65536, pos)
            f.seek(pos - step)
            chunk = f.read(step)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                pos = pos - step + nl + 1
                break
            pos -= step
    log.warning("journal %s: dropped a torn last line (%d bytes)", path, size - pos)
    os.truncate(path, pos)
    return pos


def disk_full_message(e: BaseException, sweep_dir: Path) -> str:
    """One line naming what could not be written on a full disk (the file, else the sweep dir)."""
    where: str | None = None
    for c in _chain(e):
        filename = getattr(c, "filename", None)
        if isinstance(c, OSError) and filename:
            where = str(filename)
            break
    if where is None:
        # SQLite says only "database or disk is full": name the sweep dir and its free space.
        where = str(sweep_dir)
    try:
        free = os.statvfs(sweep_dir)
        left = f", {free.f_bavail * free.f_frsize / 2**20:.1f} MiB free there"
    except OSError:
        left = ""
    return f"no space left on device writing {where} ({_first_line(e)}{left})"
