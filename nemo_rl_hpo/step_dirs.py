"""Checkpoints in NeMo RL's layout, ``<dir>/step_N/``: the newest complete one is where a run
continues. The one finder for every reader: the GRPO trial (``training/grpo/checkpoint.py``,
a ``step_N`` holding its state file) and the external-command runner and its PBT rounds
(``command/``, NeMo RL's own ``step_N`` dirs).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

STEP_DIR = re.compile(r"^step_(\d+)$")


def _is_dir(path: Path) -> bool:
    return path.is_dir()


def step_dirs(
    root: Path | str | None, complete: Callable[[Path], bool] = _is_dir
) -> list[tuple[int, Path]]:
    """``(N, path)`` of every complete ``step_N`` under ``root``, oldest first.

    ``complete`` says whether a ``step_N`` dir is a finished checkpoint (a writer that renames
    a ``tmp_`` dir into place makes every ``step_N`` dir one).
    """
    if root is None or not Path(root).is_dir():
        return []
    found = []
    for child in Path(root).iterdir():
        m = STEP_DIR.match(child.name)
        if m and complete(child):
            found.append((int(m.group(1)), child))
    return sorted(found)


def latest_step_dir(
    path: Path | str | None, complete: Callable[[Path], bool] = _is_dir
) -> Path | None:
    """The newest complete ``step_N`` under ``path``, or ``path`` itself when it is one."""
    if path is None:
        return None
    path = Path(path)
    if STEP_DIR.match(path.name):
        return path if complete(path) else None
    found = step_dirs(path, complete)
    return found[-1][1] if found else None
