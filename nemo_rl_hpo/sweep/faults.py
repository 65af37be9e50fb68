"""What a storage error means: away for now (retry), a full disk (stop, say where), or neither.

Shared by the retrying storage, the trial loop and the sweepers, so every place that meets a
storage or disk error decides the same way.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path

from nemo_rl_hpo.sweep.urls import StorageError, mask

# --------------------------------------------------------------------------- outages and faults
# A database restart, a failover or a dropped connection makes every storage call fail for a
# while. Sweepers and trial jobs open their storage here, so one wrapper retries all of them
# with bounded back-off, says so once per outage (not per attempt) and gives up with one line
# after ``retry_s``. Calls that are not idempotent (creating a trial, telling its state) are
# made safe to repeat after a commit whose answer was lost: see RetryingStorage.

DEFAULT_RETRY_S = 600.0  # the sweepers' storage_retry_s default too (tests/test_defaults.py)
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

    default_params = ("storage_retry_s",)


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


# A store whose bytes are damaged (a truncated or partly copied SQLite file, a torn journal
# line): every read fails the same way, so it is neither retried nor reported as a bad URL.
_DAMAGED_TEXT = re.compile(
    r"database disk image is malformed|file is not a database|file is encrypted|"
    r"the JSON object must be str",
    re.I,
)
_OLD_SCHEMA_TEXT = re.compile(r"no longer compatible with the table schema", re.I)


class StorageDamaged(StorageError):
    """The storage's data cannot be read (damaged file); the message is one line."""


def is_damaged(e: BaseException) -> bool:
    """Whether ``e`` means the stored bytes are damaged (not an outage, not a bad request)."""
    import json

    for c in _chain(e):
        if isinstance(c, (json.JSONDecodeError, UnicodeDecodeError)):
            return True
        if _DAMAGED_TEXT.search(str(c)):
            return True
    return False


def unreadable_message(e: BaseException, shown: str) -> str | None:
    """One line for a storage that opens but cannot be read: damaged, or an older Optuna's
    schema (hydra-optuna-sweeper 1.3.0 writes Optuna 2.10's). None for any other error."""
    if any(_OLD_SCHEMA_TEXT.search(str(c)) for c in _chain(e)):
        return (
            f"storage {shown} was written by an older Optuna ({_first_line(e)}); nothing was "
            "changed: back it up, then run `optuna storage upgrade --storage URL`, or read it "
            "with that Optuna version."
        )
    if is_damaged(e):
        return (
            f"storage {shown} is damaged and cannot be read ({_first_line(e)}); restore it from "
            "a copy (a truncated or partly written file)."
        )
    return None


def is_transient(e: BaseException) -> bool:
    """Whether ``e`` means "the storage is away for now" (worth retrying), not a bad request."""
    if is_disk_full(e) or isinstance(e, StorageUnavailable) or is_damaged(e):
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
