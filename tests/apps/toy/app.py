"""A small Hydra app for sweeper tests: sleeps, fails, returns a float, a list or metrics."""

import math
import os
import time

import hydra
from omegaconf import DictConfig

from nemo_rl_hpo import trial


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg: DictConfig) -> object:
    durations = list(cfg.durations)
    if durations:  # skewed trial lengths, picked by the job number
        from hydra.core.hydra_config import HydraConfig

        num = int(HydraConfig.get().job.num)
        seconds = float(durations[num % len(durations)])
        start = time.time()
        time.sleep(seconds)
        with open(os.path.join(HydraConfig.get().runtime.output_dir, "slept.txt"), "w") as f:
            f.write(f"{start} {time.time()}\n")
    if cfg.kill_above is not None and cfg.x > cfg.kill_above:  # as the OOM killer would
        os.kill(os.getpid(), 9)
    if cfg.fail_above is not None and cfg.x > cfg.fail_above:
        raise RuntimeError(f"x={cfg.x} is above {cfg.fail_above}")
    loss = (cfg.x - 1.0) ** 2 + 0.1 * cfg.y
    for step in range(cfg.steps):
        trial.report(step, loss + 1.0 / (step + 1))
        if trial.should_prune():
            return {"loss": loss, "steps": step}
        if cfg.step_sleep:
            time.sleep(cfg.step_sleep)
    if cfg.mode == "diverge":
        return math.nan
    if cfg.mode == "list":
        return [loss, (cfg.x + 1.0) ** 2]
    if cfg.mode == "dict":
        return {"loss": loss, "other": (cfg.x + 1.0) ** 2, "steps": cfg.steps}
    return loss


if __name__ == "__main__":
    main()
