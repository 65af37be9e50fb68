"""Sweep an existing training command that is not a Hydra app (NeMo RL's ``examples/run_*.py``).

Each trial renders the searched values as the command's own overrides, runs it in a fresh
process group, reads its TensorBoard (or JSONL) metrics while it runs, lets the pruner stop it,
and returns its last metrics. From the repository root::

    python examples/command/run_command.py                       # one run of the test trainer
    python examples/command/run_command.py -m                    # 6 trials, TPE
    python examples/command/run_command.py -m hydra/sweeper/pruner=median
    NEMO_RL_DIR=~/RL python examples/command/run_command.py -m nemo_rl=sft   # see docs/command.md
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from nemo_rl_hpo.command import run_command


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict[str, float]:
    return run_command(cfg.command)


if __name__ == "__main__":
    main()
