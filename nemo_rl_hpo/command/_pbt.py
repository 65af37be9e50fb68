"""PBT rounds of an external command: its checkpoint dir per round, seeded with a ``step_N``.

NeMo RL resumes from the highest ``step_N`` under ``checkpointing.checkpoint_dir``. The PBT
sweeper names a fresh checkpoint dir for every member round and the checkpoint the round starts
from (the member's own previous round, or the donor's after an exploit). Copying that
checkpoint's latest ``step_N`` into the round's dir before the command starts is all NeMo RL
needs to continue from it; the explored values reach the command as its own overrides, and the
round's end step through ``command.max_steps_key``.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from nemo_rl_hpo import trial
from nemo_rl_hpo.step_dirs import latest_step_dir

log = logging.getLogger(__name__)


def checkpoint_dir() -> Path | None:
    """The dir the PBT sweeper gave this round for its checkpoints, None outside PBT."""
    explicit = trial.context().get("checkpoint_dir")
    return Path(str(explicit)).absolute() if explicit else None


def seed_checkpoint_dir(ckpt_dir: Path) -> Path | None:
    """Copy the round's start checkpoint (latest ``step_N``) into ``ckpt_dir``; its path or None.

    Nothing is copied when ``ckpt_dir`` already holds a ``step_N`` (the round's own job was
    resubmitted and continues its own progress) or the round starts fresh. Files are hard-linked
    where the file system allows (checkpoints are written once, never modified in place), else
    copied.
    """
    start = trial.resume_from()
    if start is None or latest_step_dir(ckpt_dir) is not None:
        return None
    source = latest_step_dir(Path(start))
    if source is None:
        raise FileNotFoundError(
            f"PBT: the round should start from {start}, but it holds no step_N checkpoint; "
            "did the command save one at the end of its previous round (checkpointing.enabled, "
            "a save at the last step)?"
        )
    target = ckpt_dir / source.name
    tmp = ckpt_dir / f".{source.name}.copying"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp, copy_function=_link_or_copy)
    os.replace(tmp, target)
    log.info("PBT: continuing from %s (copied to %s)", source, target)
    return target


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst
