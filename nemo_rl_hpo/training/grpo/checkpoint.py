"""GRPO checkpoints in NeMo RL's layout: ``<checkpoint_dir>/step_N/``, newest wins on resume.

Each ``step_N`` holds one torch file with everything a run needs to continue exactly (policy,
reference, optimizer, generators, RNG, curves, config) and NeMo RL's ``training_info.json``;
it is written as ``tmp_step_N`` and renamed, so a killed writer never leaves a half checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from nemo_rl_hpo.step_dirs import latest_step_dir, step_dirs

STATE_FILE = "policy_and_state.pt"  # inside step_N/
INFO_FILE = "training_info.json"  # inside step_N/, as NeMo RL writes it


def _complete(step_dir: Path) -> bool:
    return (step_dir / STATE_FILE).is_file()


def latest_checkpoint(path: Path | str | None) -> Path | None:
    """The newest ``step_N`` dir under ``path``, or ``path`` itself when it holds a state."""
    if path is None:
        return None
    path = Path(path)
    if _complete(path):
        return path
    return latest_step_dir(path, _complete)


def save_checkpoint(root: Path, step: int, *, keep_top_k: int | None, **state: Any) -> Path:
    """Write ``root/step_<step>`` atomically (a ``tmp_`` dir renamed), then drop old ones."""
    final = root / f"step_{step}"
    tmp = root / f"tmp_step_{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with open(tmp / STATE_FILE, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    info = {"step": step, **{k: v for k, v in state["state"]["metrics"].items()}}
    (tmp / INFO_FILE).write_text(json.dumps(info))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    if keep_top_k is not None:
        for _, old in step_dirs(root, _complete)[: -int(keep_top_k)]:
            shutil.rmtree(old, ignore_errors=True)
    return final
