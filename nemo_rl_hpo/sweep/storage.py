"""Storage URLs: SQLite on one machine, a journal file or PostgreSQL for a cluster.

One parser for every place that opens a study (sweeper, trial job, CLI, report), and one masker
for every place that prints or saves a URL: a password never leaves the process memory. Every
storage opened here survives an outage (database restart, dropped connection) for
``retry_s`` seconds (:mod:`nemo_rl_hpo.sweep.retrying`); URL parsing and masking are in
:mod:`nemo_rl_hpo.sweep.urls`, what an error means in :mod:`nemo_rl_hpo.sweep.faults`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from optuna.storages import BaseStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

# The URL helpers, the fault classification and the retry live in their own modules; callers
# keep importing them from here, the module that opens storages.
from nemo_rl_hpo.sweep.faults import (
    CREATE_TOKEN,
    DEFAULT_RETRY_S,
    StorageDamaged,
    StorageUnavailable,
    disk_full_message,
    is_disk_full,
    is_transient,
    unreadable_message,
)
from nemo_rl_hpo.sweep.retrying import RetryingStorage
from nemo_rl_hpo.sweep.urls import (
    ENV_STORAGE_PASSWORD,
    JOURNAL_SCHEME,
    MEMORY_URL,
    StorageError,
    export_password,
    insert_password,
    journal_path,
    mask,
    split_password,
    sqlite_path,
)

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

__all__ = [
    "CREATE_TOKEN",
    "DEFAULT_RETRY_S",
    "JOURNAL_SCHEME",
    "MEMORY_URL",
    "RetryingStorage",
    "StorageError",
    "StorageDamaged",
    "StorageUnavailable",
    "disk_full_message",
    "ENV_STORAGE_PASSWORD",
    "export_password",
    "insert_password",
    "is_disk_full",
    "is_transient",
    "journal_path",
    "mask",
    "open_storage",
    "register_live",
    "split_password",
    "sqlite_path",
]

log = logging.getLogger(__name__)

_live: dict[str, BaseStorage] = {}
_live_lock = threading.Lock()


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
        try:
            journal = JournalStorage(_JournalBackend(str(jpath)))  # replays the file
        except Exception as e:
            damaged = unreadable_message(e, mask(url) or "")
            if damaged is None:
                raise
            raise StorageDamaged(damaged) from None
        return RetryingStorage(journal, name=mask(url) or "", retry_s=retry)
    spath = sqlite_path(url)
    if spath is not None:
        spath.parent.mkdir(parents=True, exist_ok=True)
    if not re.match(r"^[a-z0-9+]+://", url):
        raise StorageError(
            f"storage={mask(url)!r} is not a storage URL; use sqlite:///path.db, "
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
        damaged = unreadable_message(e, mask(url) or "")
        if damaged is not None:
            raise StorageDamaged(damaged) from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StorageError(
            f"storage={mask(url)!r} cannot be opened ({mask(first)}); check the "
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
