"""Trial of a given length for the utilization benchmark; runs under ours and upstream alike.

Trial ``k`` (Hydra's job number) sleeps ``durations[k % len(durations)]`` seconds and appends
``start end`` to the file named by ``$BENCH_STAMPS``.
"""

import os
import time

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg: DictConfig) -> float:
    durations = list(cfg.durations)
    num = int(HydraConfig.get().job.num)
    start = time.time()
    time.sleep(float(durations[num % len(durations)]))
    path = os.environ.get("BENCH_STAMPS")
    if path:
        with open(path, "a") as f:
            f.write(f"{num} {start} {time.time()}\n")
    return float(cfg.x) ** 2


if __name__ == "__main__":
    main()
