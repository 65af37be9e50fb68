"""Entry point of the embedded app: the trial ``trial=`` picks, on a generated task.

    python train.py                                   # the supervised trial (~15 s on 2 cores)
    python train.py model=gpt optimizer=sgd learning_rate=0.05 scheduler=step
    python train.py -m                                # a sweep over conf/search/default.yaml
    python train.py trial=grpo                        # the GRPO RL trial (docs/grpo.md)
    python train.py -m trial=grpo                     # a sweep over conf/search/grpo.yaml

Returns the metrics dict for the sweeper (supervised: ``val_loss``, ``val_accuracy``,
``train_time_s``, ...; GRPO: ``val_reward``, ``generated_tokens``, ``train_time_s``, ...); a bad
config value ends a single run with one line naming the key and exit code 2, while in a sweep it
fails that trial only.
"""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from nemo_rl_hpo.training import ConfigError, train
from nemo_rl_hpo.training.grpo import train_grpo

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict[str, float]:
    grpo = HydraConfig.get().runtime.choices.get("trial") == "grpo"
    try:
        metrics = train_grpo(cfg) if grpo else train(cfg)
    except ConfigError as e:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweeper records the trial as failed, with this message
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if grpo:
        log.info(
            "step %d: val_reward %.3f (warm start %.3f), val_accuracy %.3f, %d tokens, %.1f s",
            metrics["step"],
            metrics["val_reward"],
            metrics["val_reward_start"],
            metrics["val_accuracy"],
            metrics["generated_tokens"],
            metrics["train_time_s"],
        )
        return metrics
    log.info(
        "step %d: val_loss %.4f, val_accuracy %.3f, train_loss %.4f, %.1f s",
        metrics["step"],
        metrics["val_loss"],
        metrics["val_accuracy"],
        metrics["train_loss"],
        metrics["train_time_s"],
    )
    return metrics


if __name__ == "__main__":
    main()
