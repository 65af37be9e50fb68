"""Shared fixtures: compose the default trial's config as a user's command line would."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from nemo_rl_hpo import trial

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"

# Overrides that shrink the default trial to well under a second.
TINY = [
    "max_steps=6",
    "warmup_steps=2",
    "eval_interval=3",
    "checkpoint_interval=3",
    "task.train_size=256",
    "task.validation_size=64",
    "task.test_size=64",
]


@pytest.fixture
def compose_trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., DictConfig]:
    """``compose_trial(*overrides)``: the default trial's config, outside any sweep.

    The working dir is a fresh temporary one, so checkpoints (written to the working dir outside
    Hydra) never leak between tests.
    """
    monkeypatch.chdir(tmp_path)
    for name in dir(trial):
        if name.startswith("ENV_"):
            monkeypatch.delenv(getattr(trial, name), raising=False)

    def _compose(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose("config", overrides=list(overrides))

    return _compose
