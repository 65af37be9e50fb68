"""A small PBT app: each round resumes the step counter from its start checkpoint, trains to the
round's end step and saves; its value improves with steps and with x near 1."""

import json
import os
import time

import hydra
from omegaconf import DictConfig

from nemo_rl_hpo import trial


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg: DictConfig) -> float:
    step = 0
    start = trial.resume_from()
    if start is not None:
        with open(os.path.join(start, "state.json")) as f:
            step = json.load(f)["step"]
    target = trial.target_steps() or 10
    time.sleep(float(cfg.seconds))
    out = trial.checkpoint_dir()
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "state.json"), "w") as f:
        json.dump({"step": target, "from": step}, f)
    return (cfg.x - 1.0) ** 2 + 10.0 / target


if __name__ == "__main__":
    main()
