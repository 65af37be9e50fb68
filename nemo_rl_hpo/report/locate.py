"""Find the study of a sweep dir, so every command takes the dir a user sees in ``multirun/``.

The sweeper writes ``<sweep_dir>/sweep.json`` (study name + storage URL without password) when it
starts, and ``optimization_results.json`` when it writes results; a dir holding only
``optuna.db`` or ``optuna.journal`` works too. A password comes from the environment.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import optuna

from nemo_rl_hpo.fidelity._claims import is_claims_study
from nemo_rl_hpo.sweep.storage import (
    ENV_STORAGE_PASSWORD,
    insert_password,
    journal_path,
    mask,
    open_storage,
    split_password,
    sqlite_path,
)

MARKERS = ("sweep.json", "optimization_results.json")


class LocateError(ValueError):
    """The sweep dir, storage or study name does not lead to a study; the message says why."""


@dataclass(frozen=True)
class Target:
    storage: str  # usable URL (password from the environment inserted)
    study_name: str | None
    sweep_dir: Path | None

    @property
    def shown_storage(self) -> str:
        return mask(self.storage) or ""


def _read_marker(path: Path) -> tuple[str | None, str | None]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise LocateError(
            f"{path} is not readable JSON ({e}); delete it or pass --storage."
        ) from None
    if not isinstance(data, dict):
        return None, None
    storage, name = data.get("storage"), data.get("study_name")
    return (str(storage) if storage else None, str(name) if name else None)


def _anchor(url: str, sweep_dir: Path | None) -> str:
    """Make a relative sqlite/journal path found in a marker work from any current directory."""
    for prefix, path in (("sqlite:///", sqlite_path(url)), ("journal://", journal_path(url))):
        if path is None or path.is_absolute() or path.exists() or sweep_dir is None:
            continue
        for candidate in (sweep_dir / path, sweep_dir / path.name):
            if candidate.exists():
                return prefix + str(candidate.resolve())
    return url


def with_password(url: str) -> str:
    """Drop a masked ``***`` password; insert the one from the environment when there is one."""
    bare, password = split_password(url)
    if password is not None and password != "***":
        return url
    env = os.environ.get(ENV_STORAGE_PASSWORD)
    return insert_password(bare, env) if env else bare


def resolve(sweep_dir: str | Path | None, storage: str | None, study: str | None) -> Target:
    """Storage URL + study name from a sweep dir, explicit flags, or both (flags win)."""
    sdir = Path(sweep_dir) if sweep_dir is not None else None
    if sdir is None and storage is None:
        raise LocateError("give a SWEEP_DIR or --storage URL.")
    found_storage: str | None = None
    found_name: str | None = None
    if sdir is not None:
        if not sdir.is_dir():
            raise LocateError(f"sweep dir {sdir} does not exist; pass the dir under multirun/.")
        for marker in MARKERS:
            if (sdir / marker).is_file():
                found_storage, found_name = _read_marker(sdir / marker)
                if found_storage:
                    break
        if found_storage is None:
            if (sdir / "optuna.db").is_file():
                found_storage = f"sqlite:///{(sdir / 'optuna.db').resolve()}"
            elif (sdir / "optuna.journal").is_file():
                found_storage = f"journal://{(sdir / 'optuna.journal').resolve()}"
        if storage is None and found_storage is None:
            raise LocateError(
                f"{sdir} holds no sweep.json, optimization_results.json, optuna.db or "
                "optuna.journal; pass --storage URL --study NAME."
            )
    url = storage if storage is not None else found_storage
    if url is None:  # unreachable: checked above; keeps the type narrow
        raise LocateError("give a SWEEP_DIR or --storage URL.")
    url = with_password(_anchor(url, sdir))
    return Target(storage=url, study_name=study or found_name, sweep_dir=sdir)


def _check_exists(url: str) -> None:
    """Opening a missing SQLite file or journal would create an empty study store: refuse."""
    for path in (sqlite_path(url), journal_path(url)):
        if path is not None and not path.exists():
            raise LocateError(f"storage {mask(url)} does not exist ({path} not found).")


def open_target_storage(target: Target) -> optuna.storages.BaseStorage:
    _check_exists(target.storage)
    return open_storage(target.storage)


def load(target: Target) -> optuna.Study:
    """Load the target's study; with one study in the storage, the name may be left out."""
    storage = open_target_storage(target)
    # A fidelity sweep's side study of promotion claims is bookkeeping, not a study to read.
    names = [s.study_name for s in storage.get_all_studies() if not is_claims_study(s.study_name)]
    name = target.study_name
    if name is None:
        if len(names) == 1:
            name = names[0]
        elif not names:
            raise LocateError(f"storage {target.shown_storage} holds no study yet.")
        else:
            raise LocateError(
                f"storage {target.shown_storage} holds {len(names)} studies "
                f"({', '.join(sorted(names))}); pick one with --study NAME."
            )
    elif name not in names:
        raise LocateError(
            f"study {name!r} is not in {target.shown_storage}; it holds: "
            f"{', '.join(sorted(names)) or 'no study'}."
        )
    return optuna.load_study(study_name=name, storage=storage)
