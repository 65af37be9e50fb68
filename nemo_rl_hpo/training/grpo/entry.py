"""The GRPO trial as a sweep job: :func:`run_grpo` wired to the ``nemo_rl_hpo.trial`` seam.

Every validation after the warm start is reported (``val_reward``, ``val_accuracy``; the
sweeper's first objective is what the pruner sees), the pruner is asked right after, and a pruned
trial saves a checkpoint and returns its metrics (the sweeper records it PRUNED). Checkpoints go
where the sweeper says (PBT), else to ``checkpointing.checkpoint_dir`` when set, else to the job's
own output dir, so a requeued SLURM job or a re-run in the same dir resumes; a PBT round starts
from ``trial.resume_from()`` and trains up to ``trial.target_steps()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig

from nemo_rl_hpo import trial
from nemo_rl_hpo.training.grpo.run import run_grpo


def train_grpo(cfg: DictConfig) -> dict[str, float]:
    """Run the GRPO trial described by ``cfg``; return its final metrics for the sweeper."""
    pruned = False

    def on_metrics(step: int, metrics: Mapping[str, float]) -> None:
        nonlocal pruned
        if step == 0 or "validation/reward" not in metrics:
            return  # step 0 is the warm start, the same for every trial of a sweep
        trial.report(
            step,
            {
                "val_reward": metrics["validation/reward"],
                "val_accuracy": metrics["validation/accuracy"],
            },
        )
        pruned = trial.should_prune()

    result = run_grpo(
        cfg,
        checkpoint_dir=checkpoint_dir(cfg),
        resume_from=trial.resume_from(),
        stop_at_step=trial.target_steps(),
        on_metrics=on_metrics,
        should_stop=lambda step: pruned,
    )
    return result.metrics


def checkpoint_dir(cfg: DictConfig) -> Path:
    """The sweeper's dir (PBT) > ``checkpointing.checkpoint_dir`` > the job's output dir."""
    if trial.context().get("checkpoint_dir"):
        return trial.checkpoint_dir()
    explicit = cfg.get("checkpointing", {}).get("checkpoint_dir")
    return Path(explicit) if explicit else trial.checkpoint_dir()
