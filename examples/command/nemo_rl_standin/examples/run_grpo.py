"""Stand-in for NeMo RL's ``examples/run_grpo.py``: NeMo RL's command-line and file contract around
the embedded GRPO trial (``nemo_rl_hpo.training.grpo``), for sweeping a "NeMo RL" command here::

    python examples/run_grpo.py --config examples/configs/grpo_math_1B.yaml \\
        grpo.num_generations_per_prompt=4 logger.tensorboard_enabled=true

What it shares with the real script (NVIDIA-NeMo/RL at 7ea279ab; docs/command.md): ``--config``
plus Hydra overrides in struct mode, the log dir ``logger.log_dir/exp_NNN`` with TensorBoard under
``tensorboard/`` and NeMo RL's tags (``train/loss``, ``train/reward``, ``validation/accuracy`` =
the mean validation reward, ``validation/avg_length``), validation that samples at the training
temperature (``policy.generation.val_temperature: ${.temperature}``, anything else refused as
NeMo RL refuses it outside NeMo-Gym), validation at the last step only with
``grpo.val_at_end``, checkpoints
``checkpointing.checkpoint_dir/step_N`` resumed from the highest N, and
``checkpointing.checkpoint_must_save_by``: save, print NeMo RL's "Timeout has been reached" line,
exit 0. The stand-in also writes ``<exp dir>/config.yaml`` (the resolved config) and
``<exp dir>/driver.pid``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # nrl_standin (NeMo RL's utils)

import nrl_standin  # noqa: E402


def check_validation_sampling(generation: Mapping[str, object]) -> None:
    """NeMo RL's ``grpo.py`` ``setup()`` at 7ea279ab (lines 504-516): validation must sample
    exactly like training unless rollouts go through NeMo-Gym's vLLM path, which the stand-in
    does not have. So ``validation/accuracy`` is measured at ``policy.generation.temperature``."""
    differs = any(
        generation.get(f"val_{k}") != generation.get(k) for k in ("temperature", "top_p", "top_k")
    )
    assert not differs, (
        "generation.val_temperature/val_top_p/val_top_k differing from the "
        "train sampling params is only supported for vLLM NeMo-Gym rollouts."
    )


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # "resumed GRPO from ..."
    config = nrl_standin.parse_args_and_config("grpo_math_1B.yaml")
    check_validation_sampling(config["policy"]["generation"])
    nrl_standin.init_cluster(config)
    log_dir = nrl_standin.get_next_experiment_dir(str(config["logger"]["log_dir"]))
    print(f"📊 Using log directory: {log_dir}")
    ckpt = config["checkpointing"]
    if ckpt["enabled"]:
        print(f"📊 Using checkpoint directory: {ckpt['checkpoint_dir']}")
    nrl_standin.write_run_files(log_dir, config)

    import torch  # after the config: a bad override fails in a second, not after imports
    from omegaconf import OmegaConf

    from nemo_rl_hpo.training.grpo.config import default_config
    from nemo_rl_hpo.training.grpo.run import run_grpo

    torch.set_num_threads(int(config.get("num_threads", 1)))
    logger = nrl_standin.Logger({**config["logger"], "log_dir": log_dir})
    standin = dict(config.get("standin") or {})
    fail_at = standin.get("fail_at_step")
    sleep_s = float(standin.get("step_sleep_s") or 0.0)
    # NeMo RL's clock starts in grpo_train, after setup (model loading, resume): here when
    # run_grpo's training loop starts
    timeout = nrl_standin.TimeoutChecker(None)

    def on_train_start(step: int) -> None:
        nonlocal timeout
        timeout = nrl_standin.TimeoutChecker(
            ckpt.get("checkpoint_must_save_by"), fit_last_save_time=True
        )
        timeout.start_iterations()

    def on_metrics(step: int, metrics: Mapping[str, float]) -> None:
        if fail_at is not None and step >= int(fail_at):
            print(f"step {step}: loss is NaN", flush=True)
            raise RuntimeError(f"loss became NaN at step {step} (standin.fail_at_step)")
        train = {k[6:]: v for k, v in metrics.items() if k.startswith("train/")}
        val = {k[11:]: v for k, v in metrics.items() if k.startswith("validation/")}
        if train:
            logger.log_metrics(train, step, prefix="train")
            print(f"step {step}: {train}", flush=True)
        if val and step == 0 and not config["grpo"].get("val_at_start"):
            val = {}  # the warm start's validation: NeMo RL logs step 0 only with val_at_start
        if val and step > 0 and not nrl_standin.validates_at(config["grpo"], step):
            val = {}  # the trial validates at its end; NeMo RL only with grpo.val_at_end
        if val:
            # NeMo RL's validation "accuracy" is the mean reward over validation samples.
            val = {"accuracy": val["reward"], "avg_length": val.get("avg_length", 0.0)}
            logger.log_metrics(val, step, prefix="validation")
            print(f"validation at step {step}: {val}", flush=True)

    def should_stop(step: int) -> bool:
        if sleep_s > 0:
            import time

            time.sleep(sleep_s)
        timeout.mark_iteration()
        return timeout.check_save()

    # The trial's own defaults (model, task) under the NeMo RL sections it shares.
    trial_cfg = default_config()
    trial_cfg = OmegaConf.merge(trial_cfg, {k: v for k, v in config.items() if k in trial_cfg})
    result = run_grpo(
        trial_cfg,
        checkpoint_dir=ckpt["checkpoint_dir"] if ckpt["enabled"] else None,
        on_metrics=on_metrics,
        should_stop=should_stop,
        on_train_start=on_train_start,
    )
    logger.close()
    if result.stopped:
        print(nrl_standin.TIMEOUT_MESSAGE, flush=True)
    else:
        print("Max number of steps has been reached, stopping training early", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
