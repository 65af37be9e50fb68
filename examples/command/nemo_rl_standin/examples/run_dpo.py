"""Stand-in for NeMo RL's ``examples/run_dpo.py``: the stand-ins' command-line and file contract
(docs/command.md) around a small preference model, so that ``nemo_rl=dpo`` runs here unchanged::

    python examples/run_dpo.py --config examples/configs/dpo.yaml dpo.max_num_steps=20

Mirrors ``dpo_train`` in ``nemo_rl/algorithms/dpo.py`` (NVIDIA-NeMo/RL at 7ea279ab) where a sweep
depends on it: validation metrics logged with prefix ``validation-<dataset>`` (the default
dataset is ``default``: ``validation-default/loss``, ``validation-default/accuracy``),
``train/loss``;
the loss is DPO's ``-logsigmoid(beta * margin)`` with ``beta = dpo.reference_policy_kl_penalty``
plus ``dpo.sft_loss_weight`` times an SFT term on the chosen answer, against a frozen reference.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # nrl_standin (NeMo RL's utils)

import nrl_standin  # noqa: E402


class Preference:
    """Scores of 8-dimensional answers; "chosen" ones are those a hidden linear rule prefers."""

    def __init__(self, config: dict[str, Any]) -> None:
        import torch
        from torch import nn

        torch.set_num_threads(1)
        dpo, policy = config["dpo"], config["policy"]
        torch.manual_seed(int(dpo["seed"]))
        self.g = torch.Generator().manual_seed(int(dpo["seed"]))
        self.beta = float(dpo["reference_policy_kl_penalty"])
        self.sft_weight = float(dpo["sft_loss_weight"])
        self.pref_weight = float(dpo["preference_loss_weight"])
        a, b = torch.randn(768, 8, generator=self.g), torch.randn(768, 8, generator=self.g)
        w = torch.linspace(-1, 1, 8)
        first = (a @ w) > (b @ w)
        chosen = torch.where(first.unsqueeze(1), a, b)
        rejected = torch.where(first.unsqueeze(1), b, a)
        self.train_cr = (chosen[:512], rejected[:512])
        self.val_cr = (chosen[512:], rejected[512:])
        self.model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
        self.reference = copy.deepcopy(self.model).requires_grad_(False)
        self.optimizer = nrl_standin.build_optimizer(self.model.parameters(), policy)
        self.scheduler = nrl_standin.build_scheduler(self.optimizer, policy.get("scheduler") or [])

    def _loss(self, chosen: Any, rejected: Any) -> tuple[Any, Any]:
        import torch.nn.functional as F

        margin = (self.model(chosen) - self.reference(chosen)) - (
            self.model(rejected) - self.reference(rejected)
        )
        preference = -F.logsigmoid(self.beta * margin).mean()
        sft = -F.logsigmoid(self.model(chosen)).mean()
        return self.pref_weight * preference + self.sft_weight * sft, margin

    def train_step(self) -> dict[str, float]:
        import torch

        chosen, rejected = self.train_cr
        idx = torch.randint(0, len(chosen), (64,), generator=self.g)
        loss, _ = self._loss(chosen[idx], rejected[idx])
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return {"loss": loss.item()}

    def validate(self) -> dict[str, float]:
        import torch

        with torch.no_grad():
            loss, margin = self._loss(*self.val_cr)
        return {"loss": loss.item(), "accuracy": (margin > 0).float().mean().item()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "reference": self.reference.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": self.g.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.reference.load_state_dict(state["reference"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.g.set_state(state["rng"])


def main() -> int:
    config = nrl_standin.parse_args_and_config("dpo.yaml")
    return nrl_standin.train(config, "dpo", Preference(config), val_prefix="validation-default")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
