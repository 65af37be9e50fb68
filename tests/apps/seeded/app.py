"""A noisy objective with a seed, for seed-repeat tests: value = (x - 1)^2 + noise(seed)."""

import os
import random
import time

import hydra
from omegaconf import DictConfig

from nemo_rl_hpo import trial


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg: DictConfig) -> object:
    from hydra.core.hydra_config import HydraConfig

    out = HydraConfig.get().runtime.output_dir  # the job's own dir: seeds must not share one
    with open(os.path.join(out, "runs.log"), "a") as f:  # one line per start of this job
        f.write(f"{os.getpid()} {cfg.seed}\n")
    rng = random.Random(f"{cfg.seed}-{cfg.x}")
    noise = cfg.noise * rng.uniform(-1.0, 1.0)
    loss = (cfg.x - 1.0) ** 2 + noise
    if cfg.fail_seed is not None and cfg.seed == cfg.fail_seed and cfg.x > cfg.fail_above:
        raise RuntimeError(f"seed {cfg.seed} diverged at x={cfg.x}")
    if cfg.kill_seed is not None and cfg.seed == cfg.kill_seed and cfg.x > cfg.fail_above:
        os.kill(os.getpid(), 9)  # as the OOM killer would
    steps = 0
    for step in range(cfg.steps):
        steps = step + 1
        # Seeds run at different speeds: the aggregate at a step covers those that got there.
        time.sleep(cfg.step_sleep * (1.0 + 0.5 * (cfg.seed % 3)))
        trial.report(step, {"loss": loss + 1.0 / (step + 1), "seed": float(cfg.seed)})
        if trial.should_prune():
            break
    with open(os.path.join(out, "seed.txt"), "w") as f:
        f.write(f"{cfg.seed} {steps}\n")
    return {"loss": loss, "steps": float(steps)}


if __name__ == "__main__":
    main()
