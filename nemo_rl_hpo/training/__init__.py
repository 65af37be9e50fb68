"""The default trial: a generated task, three small transformer families, and the training loop."""

from __future__ import annotations

from nemo_rl_hpo.training.config import ConfigError
from nemo_rl_hpo.training.loop import train

__all__ = ["ConfigError", "train"]
