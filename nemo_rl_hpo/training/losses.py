"""Training losses beyond torch's own (``CrossEntropyLoss`` covers plain and label smoothing)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FocalLoss(nn.Module):
    """Multi-class focal loss (Lin et al., 2017): ``-alpha * (1 - p_t)**gamma * log p_t``.

    ``gamma`` down-weights examples the model already gets right; ``gamma=0, alpha=1`` is plain
    cross-entropy.
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0) -> None:
        super().__init__()
        if alpha <= 0:
            raise ValueError(f"loss.alpha must be positive, but got {alpha=}; try loss.alpha=0.25.")
        if gamma < 0:
            raise ValueError(f"loss.gamma must be at least 0, but got {gamma=}; try loss.gamma=2.")
        self.alpha = alpha
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        log_p = F.log_softmax(logits.float(), dim=-1).gather(1, target.unsqueeze(1)).squeeze(1)
        weight = (1.0 - log_p.exp()).clamp(min=0.0) ** self.gamma
        return (-self.alpha * weight * log_p).mean()
