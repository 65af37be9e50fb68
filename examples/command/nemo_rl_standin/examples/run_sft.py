"""Stand-in for NeMo RL's ``examples/run_sft.py``: the same command-line and file contract as the
GRPO stand-in (``run_grpo.py``, docs/command.md) around a small supervised model, so that the
``nemo_rl=sft`` preset runs here unchanged::

    python examples/run_sft.py --config examples/configs/sft.yaml sft.max_num_steps=20

Mirrors ``sft_train`` in ``nemo_rl/algorithms/sft.py`` (NVIDIA-NeMo/RL at 7ea279ab) where a sweep
depends on it: ``validation/val_loss`` every ``sft.val_period`` steps (and at step 0 with
``sft.val_at_start``), ``train/loss`` at every step, ``policy.scheduler`` as NeMo RL's list
(schedulers, then ``{milestones: [...]}`` for SequentialLR), checkpoints
``checkpointing.checkpoint_dir/step_N`` (``tmp_step_N`` renamed, ``training_info.json``) resumed
from the highest N, ``checkpoint_must_save_by`` with NeMo RL's ``TimeoutChecker``. The model is a
two-layer regressor on generated data, not an LLM.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # nrl_standin (NeMo RL's utils)

import nrl_standin  # noqa: E402


class Regression:
    """A two-layer regressor on generated data: SFT's next-token loss stands in as MSE."""

    def __init__(self, config: dict[str, Any]) -> None:
        import torch
        from torch import nn

        torch.set_num_threads(1)
        sft, policy = config["sft"], config["policy"]
        torch.manual_seed(int(sft["seed"]))
        self.g = torch.Generator().manual_seed(int(sft["seed"]))
        x = torch.randn(768, 8, generator=self.g)
        y = (x @ torch.linspace(-1, 1, 8)).unsqueeze(1) + 0.5 * torch.sin(2 * x[:, :1])
        self.train_xy, self.val_xy = (x[:512], y[:512]), (x[512:], y[512:])
        self.model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
        self.optimizer = nrl_standin.build_optimizer(self.model.parameters(), policy)
        self.scheduler = nrl_standin.build_scheduler(self.optimizer, policy.get("scheduler") or [])

    def train_step(self) -> dict[str, float]:
        import torch

        x, y = self.train_xy
        idx = torch.randint(0, len(x), (64,), generator=self.g)
        loss = torch.nn.functional.mse_loss(self.model(x[idx]), y[idx])
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return {"loss": loss.item()}

    def validate(self) -> dict[str, float]:
        import torch

        with torch.no_grad():
            x, y = self.val_xy
            return {"val_loss": torch.nn.functional.mse_loss(self.model(x), y).item()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": self.g.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.g.set_state(state["rng"])


def main() -> int:
    config = nrl_standin.parse_args_and_config("sft.yaml")
    return nrl_standin.train(config, "sft", Regression(config))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
