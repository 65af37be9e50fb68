"""Storage URLs: SQLite on one machine, a journal file or PostgreSQL for a cluster.

One parser for every place that opens a study (sweeper, trial job, CLI, report), and one masker
for every place that prints or saves a URL: a password never leaves the process memory.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

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
    url: str, *, heartbeat_interval: int | None = None, existing: bool = False
) -> BaseStorage:
    """Open a storage URL: sqlite:///, postgresql://, mysql://, journal://PATH or memory://.

    ``existing``: the sweeper already created and checked the schema (a trial job opening its
    study); skipping both saves ~30 ms of every job's start-up.
    """
    import optuna

    with _live_lock:
        if url in _live:
            return _live[url]
    if url == MEMORY_URL or url.startswith(MEMORY_URL):
        storage: BaseStorage = optuna.storages.InMemoryStorage()
        register_live(url, storage)
        return storage
    jpath = journal_path(url)
    if jpath is not None:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        jpath.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(jpath)))
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
        return rdb
    except Exception as e:  # sqlalchemy raises many types; all mean "cannot open"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StorageError(
            f"hydra.sweeper.storage={mask(url)!r} cannot be opened ({mask(first)}); check the "
            "URL, that the server runs and the driver is installed."
        ) from None


# Messages of a peer creating the same tables at the same moment (PostgreSQL, MySQL, SQLite).
_SCHEMA_RACE = re.compile(r"already exists|duplicate key|Duplicate entry|UNIQUE constraint", re.I)


def _create_rdb(
    url: str,
    engine_kwargs: dict[str, object],
    heartbeat_interval: int | None,
    existing: bool = False,
) -> BaseStorage:
    """RDBStorage, retried while another process creates the same schema.

    Optuna's ``create_all`` checks then creates each table, so sweepers started together on an
    empty database race: the loser gets "duplicate key ... pg_type" or "already exists". The
    winner's tables are then there, and a second attempt only reads them.
    """
    import random
    import time

    import optuna

    attempts = 6
    for attempt in range(attempts):
        try:
            with _deferred_version_manager(existing):
                return optuna.storages.RDBStorage(
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
