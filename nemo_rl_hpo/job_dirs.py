"""Where a job runs, as Hydra set it up: its output dir, the dir the app was started from, and
the sweep dir of a multirun. Outside Hydra (a plain script) each is the working dir.

The one place a job asks ``HydraConfig`` about directories: the trial seam
(``trial.checkpoint_dir``) and the external-command runner (``command/_runner.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def _hydra() -> Any:
    """Hydra's config of this job, or None outside a Hydra job."""
    try:
        from hydra.core.hydra_config import HydraConfig
    except ImportError:  # pragma: no cover - hydra is a dependency
        return None
    return HydraConfig.get() if HydraConfig.initialized() else None


def job_dir() -> Path:
    """The job's output dir (``hydra.runtime.output_dir``)."""
    hc = _hydra()
    return Path(hc.runtime.output_dir) if hc is not None else Path.cwd()


def launch_dir() -> Path:
    """Where the user started the app (Hydra may have changed the working dir since)."""
    hc = _hydra()
    return Path(hc.runtime.cwd) if hc is not None else Path.cwd()


def sweep_dir(default: Path) -> Path:
    """The sweep dir of a multirun (every trial's job dir is inside), else ``default``."""
    hc = _hydra()
    if hc is None:
        return default
    from hydra.types import RunMode

    if hc.mode != RunMode.MULTIRUN:
        return default
    p = Path(os.path.expanduser(str(hc.sweep.dir)))
    return p if p.is_absolute() else launch_dir() / p
