"""The GRPO trial: a tiny causal LM learns a generated task by RL against a verifier.

Two ways in:

- **Hydra** (the embedded default app): ``python train.py trial=grpo`` runs one trial,
  ``python train.py -m trial=grpo search=grpo`` sweeps NeMo RL's GRPO keys (``docs/grpo.md``).
  :func:`train_grpo` is that trial: :func:`run_grpo` wired to the ``nemo_rl_hpo.trial`` seam
  (reports every validation, stops when pruned, checkpoints where the sweeper says).
- **Plain Python** (no Hydra; e.g. a NeMo-RL-shaped stand-in script)::

      from omegaconf import OmegaConf
      from nemo_rl_hpo.training.grpo import run_grpo, default_config

      cfg = OmegaConf.merge(default_config(), OmegaConf.from_dotlist(["grpo.max_num_steps=50"]))
      result = run_grpo(
          cfg,
          checkpoint_dir="results/grpo",       # step_N/ dirs; resumes from the newest one
          on_metrics=lambda step, m: print(step, dict(m)),  # train/* every step, validation/*
          should_stop=lambda step: False,      # True: save a checkpoint now and return
      )
      result.metrics["val_reward"], result.curve, result.stopped, result.checkpoint

  ``cfg`` is a DictConfig (or a mapping) with NeMo RL's key names: ``grpo.*``, ``loss_fn.*``,
  ``policy.*``, ``sft.*``, ``task.*``, ``checkpointing.*`` — :func:`default_config` gives every
  key with its default. ``on_metrics`` receives NeMo RL's TensorBoard names (``train/loss``,
  ``train/reward``, ``validation/accuracy``, ``validation/reward``, ...). See :func:`run_grpo`
  for every argument (``resume_from``, ``stop_at_step``) and the returned metrics.
"""

from __future__ import annotations

from nemo_rl_hpo.training.grpo.checkpoint import latest_checkpoint
from nemo_rl_hpo.training.grpo.config import default_config, validate
from nemo_rl_hpo.training.grpo.entry import train_grpo
from nemo_rl_hpo.training.grpo.run import GRPOResult, run_grpo

__all__ = [
    "GRPOResult",
    "default_config",
    "latest_checkpoint",
    "run_grpo",
    "train_grpo",
    "validate",
]
