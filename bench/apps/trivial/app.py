"""Trivial objective for the overhead benchmark; runs under ours and hydra-optuna-sweeper alike.

Each call appends ``time.time()`` to the file named by ``$BENCH_STAMPS`` (one line per trial), so
the steady-state cycle time per trial is measured inside the trial, whatever the launcher, and
its Hydra job number to ``$BENCH_RUNS`` (bench/load.py: which trials ran, and how often).
"""

import os
import time

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg: DictConfig) -> float:
    path = os.environ.get("BENCH_STAMPS")
    if path:
        with open(path, "a") as f:
            f.write(f"{time.time()}\n")
    runs = os.environ.get("BENCH_RUNS")
    if runs:
        from hydra.core.hydra_config import HydraConfig

        with open(runs, "a") as f:  # one short line per append: whole even from parallel jobs
            f.write(f"{HydraConfig.get().job.num}\n")
    return float(cfg.x) ** 2 + float(cfg.y) ** 2


if __name__ == "__main__":
    main()
