"""Entry point of the default trial: a tiny transformer on a generated classification task.

    python train.py                                   # one run, about 15 s on 2 CPU cores
    python train.py model=gpt optimizer=sgd learning_rate=0.05 scheduler=step
    python train.py -m                                # a sweep over conf/search/default.yaml

Returns the metrics dict (``val_loss``, ``val_accuracy``, ``train_loss``, ``train_time_s``, ...)
for the sweeper; a bad config value ends a single run with one line naming the key and exit
code 2, while in a sweep it fails that trial only.
"""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from nemo_rl_hpo.training import ConfigError, train

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict[str, float]:
    try:
        metrics = train(cfg)
    except ConfigError as e:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweeper records the trial as failed, with this message
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
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
