"""Readers of a multi-fidelity trial's record, for the progress line, ``best``, ``status``,
the results files and the report: its segments (step, value, job), time paused, disk held.

Optuna-free: they read the attributes ``records.py`` names from any FrozenTrial.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nemo_rl_hpo.sweep import records

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial


def segments(t: FrozenTrial) -> list[dict[str, Any]]:
    """One ``{step, value, job, started, ended}`` per segment, in step order ([] otherwise)."""
    return list(t.user_attrs.get(records.FIDELITY_RUNGS) or [])


def paused_s(t: FrozenTrial, now: float | None = None) -> float:
    """Seconds the trial spent paused between segments, including a pause still going on."""
    spent = float(t.user_attrs.get(records.FIDELITY_PAUSED_S, 0.0))
    paused = t.system_attrs.get(records.SYS_PAUSED)
    if isinstance(paused, dict) and not t.state.is_finished():
        spent += max(0.0, (now or time.time()) - float(paused.get("since", now or time.time())))
    return spent


def paused_step(t: FrozenTrial) -> int | None:
    paused = t.system_attrs.get(records.SYS_PAUSED)
    return int(paused["step"]) if isinstance(paused, dict) and "step" in paused else None


def record(t: FrozenTrial) -> dict[str, Any] | None:
    """The trial's fidelity record for the results files, None outside fidelity sweeps."""
    if records.FIDELITY_BRACKET not in t.user_attrs:
        return None
    return {
        "bracket": t.user_attrs[records.FIDELITY_BRACKET],
        "rungs": segments(t),
        "paused_s": round(paused_s(t), 3),
        "paused_at_step": paused_step(t),
        "end": t.user_attrs.get(records.FIDELITY_END),
        "checkpoint_dir": t.user_attrs.get(records.FIDELITY_CHECKPOINT),
    }


def line(t: FrozenTrial) -> str:
    """``step 10: 0.52 (job 4711) -> step 30: 0.41 (job 4725); paused 12 s``."""
    parts = [f"step {s['step']}: {float(s['value']):.6g} (job {s.get('job')})" for s in segments(t)]
    return " -> ".join(parts) + f"; paused {paused_s(t):.0f} s"


def dir_bytes(path: str | os.PathLike[str] | None) -> int:
    """Bytes of the files under ``path`` (0 when it is gone)."""
    if not path or not Path(path).is_dir():
        return 0
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:  # removed while we walk: no longer held
                pass
    return total


def held_by_paused(trials: Iterable[FrozenTrial]) -> tuple[int, int]:
    """(paused trials, bytes their checkpoints hold on disk)."""
    paused = [t for t in trials if not t.state.is_finished() and paused_step(t) is not None]
    return len(paused), sum(
        dir_bytes(t.user_attrs.get(records.FIDELITY_CHECKPOINT)) for t in paused
    )


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
