"""Storage URLs and their secrets: parse, mask, and carry a password to jobs outside any file.

One masker for every place that prints or saves a URL, so a password never leaves process memory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from nemo_rl_hpo.errors import ParamError

JOURNAL_SCHEME = "journal://"
# Carries a storage password from the sweeper to its jobs: inherited through the process
# environment only, never written to a file or an override.
ENV_STORAGE_PASSWORD = "NEMO_RL_HPO_STORAGE_PASSWORD"
MEMORY_URL = "memory://"


class StorageError(ParamError, ValueError):
    """A storage URL that cannot be opened; the message says which parameter to fix."""

    default_params = ("storage",)


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


def export_password(url: str) -> str:
    """Put the URL's password in this process's environment; return the URL without it.

    Children (local subprocesses, sbatch with its default ``--export=ALL``) inherit it, while the
    returned URL is what goes into Hydra overrides and therefore into job dirs.
    """
    bare, password = split_password(url)
    if password is not None:
        os.environ[ENV_STORAGE_PASSWORD] = password
    return bare
