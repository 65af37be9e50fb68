"""GRPO's arithmetic, matching NeMo RL: group-relative advantages and the clipped PG loss.

Read from NeMo RL (``NVIDIA-NeMo/RL``) at commit ``7ea279abfbeb698b092856d0dab61e7cf39bc909``
(2026-08-22): ``nemo_rl/algorithms/advantage_estimator.py`` (``GRPOAdvantageEstimator``),
``nemo_rl/algorithms/utils.py`` (``calculate_baseline_and_std_per_prompt``, ``calculate_kl``,
``masked_mean``) and ``nemo_rl/algorithms/loss/loss_functions.py`` (``ClippedPGLossFn``). What
carries over, rule by rule:

- **Baseline.** Per prompt group of ``n`` rewards: the group mean, or with
  ``use_leave_one_out_baseline`` the mean of the *other* ``n - 1`` rewards (RLOO). The std is the
  Bessel-corrected std of the same set the baseline averaged (so, leave-one-out, of the others).
- **normalize_rewards.** ``advantage / (std + 1e-6)``, only where ``std > 0``: a group whose
  rewards are all equal keeps its (zero) advantage instead of being sharpened.
- **Ratio clip.** ``r = exp(logp - logp_old)``; loss ``max(-A r, -A clip(r, 1 - ratio_clip_min,
  1 + ratio_clip_max))`` per token.
- **Dual clip** (``ratio_clip_c``, must exceed 1): only where ``A < 0`` the loss is capped at
  ``-A c``, i.e. ``min(clip_loss, -A c)``.
- **KL (k3).** ``logr = logp_ref - logp`` clamped to ``[-kl_input_clamp_value, +…]``, then
  ``exp(logr) - 1 - logr`` (never negative, exactly 0 where policy equals reference), multiplied
  by ``exp(logp - logp.detach())`` (value 1, keeps the score-function gradient), clamped to
  ``[-kl_output_clamp_value, +…]`` and scaled by ``reference_policy_kl_penalty``. Computed as
  ``expm1(logr) - logr``: the same value, but NeMo RL's float32 ``exp(logr) - 1 - logr`` cancels
  to slightly below zero (−7e-9 at ``logr`` ≈ −1e-4), which this form never does.
- **Normalization.** ``token_level_loss``: every token of the batch weighs the same
  (sum / number of tokens); otherwise each sequence's tokens are averaged first and the
  sequences then weigh the same. ``masked_mean`` adds 1e-8 to the denominator, as NeMo RL does.
- **Total.** ``loss = actor_loss + kl`` (NeMo RL's ``positive_example_nll_weight`` is 0).

Log-probabilities everywhere are of temperature-scaled logits, as NeMo RL's policy workers divide
logits by ``policy.generation.temperature`` before computing training and reference logprobs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

STD_EPSILON = 1e-6  # GRPOAdvantageEstimator's epsilon
MEAN_EPSILON = 1e-8  # masked_mean's


def grpo_advantages(
    rewards: torch.Tensor,
    group_size: int,
    *,
    use_leave_one_out_baseline: bool,
    normalize_rewards: bool,
) -> torch.Tensor:
    """Per-sample advantages of ``rewards`` laid out as consecutive groups of ``group_size``.

    ``rewards`` is ``(num_prompts * group_size,)``; the result has the same shape.
    """
    if group_size < 2:
        raise ValueError(f"grpo.num_generations_per_prompt must be at least 2, got {group_size}.")
    r = rewards.reshape(-1, group_size).double()
    n = group_size
    if use_leave_one_out_baseline:
        count = n - 1
        baseline = (r.sum(dim=1, keepdim=True) - r) / count
        sq_mean = ((r * r).sum(dim=1, keepdim=True) - r * r) / count
    else:
        count = n
        baseline = r.mean(dim=1, keepdim=True).expand_as(r)
        sq_mean = (r * r).mean(dim=1, keepdim=True).expand_as(r)
    if count > 1:
        var = ((sq_mean - baseline.square()) * (count / (count - 1))).clamp_min(0.0)
        std = var.sqrt().nan_to_num(0.0)
    else:  # one other sample: NeMo RL's 0/0 std becomes 0 (nan_to_num)
        std = torch.zeros_like(r)
    advantages = r - baseline
    if normalize_rewards:
        nonzero = std > 0
        advantages = torch.where(nonzero, advantages / (std + STD_EPSILON), advantages)
    dtype = rewards.dtype if rewards.is_floating_point() else torch.get_default_dtype()
    return advantages.reshape(-1).to(dtype)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """NeMo RL's ``masked_mean`` (local normalization): ``sum(v * m) / (sum(m) + 1e-8)``."""
    if dim is None:
        return (values * mask).sum() / (mask.sum() + MEAN_EPSILON)
    return (values * mask).sum(dim=dim) / (mask.sum(dim=dim) + MEAN_EPSILON)


def kl_k3(
    logprobs: torch.Tensor,
    reference_logprobs: torch.Tensor,
    *,
    input_clamp_value: float | None = 20.0,
    output_clamp_value: float | None = 10.0,
) -> torch.Tensor:
    """Per-token k3 estimate of KL(policy || reference), clamped as NeMo RL's ``calculate_kl``."""
    logr = reference_logprobs - logprobs
    weights = torch.exp(logprobs - logprobs.detach())  # value 1; keeps the sampling gradient
    if input_clamp_value is not None:
        clamped = logr.clamp(min=-input_clamp_value, max=input_clamp_value)
        weights = torch.where(logr == clamped, weights, weights.detach())
        logr = clamped
    kl = weights * (torch.expm1(logr) - logr)  # exp(logr) - 1 - logr without the cancellation
    if output_clamp_value is not None:
        kl = kl.clamp(min=-output_clamp_value, max=output_clamp_value)
    return kl


@dataclass(frozen=True)
class ClippedPGLoss:
    """``loss_fn.*`` of NeMo RL's ClippedPGLossFn that this trial supports."""

    ratio_clip_min: float = 0.2
    ratio_clip_max: float = 0.2
    ratio_clip_c: float | None = None  # dual clip; None: off
    reference_policy_kl_penalty: float = 0.01
    kl_input_clamp_value: float | None = 20.0
    kl_output_clamp_value: float | None = 10.0
    token_level_loss: bool = True

    def __post_init__(self) -> None:
        if self.ratio_clip_c is not None and not self.ratio_clip_c > 1:
            raise ValueError(
                "loss_fn.ratio_clip_c must exceed 1 (a lower bound of the ratio), "
                f"but got {self.ratio_clip_c}; e.g. loss_fn.ratio_clip_c=3."
            )

    def __call__(
        self,
        logprobs: torch.Tensor,
        prev_logprobs: torch.Tensor,
        reference_logprobs: torch.Tensor,
        advantages: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one batch: per-token tensors ``(batch, answer_len)``, ``advantages`` per token.

        Returns the loss and metrics (``kl_penalty``, ``clip_fraction``, ``probs_ratio``).
        """
        mask = mask.to(logprobs.dtype)
        if self.reference_policy_kl_penalty != 0:
            kl = self.reference_policy_kl_penalty * kl_k3(
                logprobs,
                reference_logprobs,
                input_clamp_value=self.kl_input_clamp_value,
                output_clamp_value=self.kl_output_clamp_value,
            )
            kl_loss = self._reduce(kl, mask)
        else:
            kl_loss = torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
        ratios = torch.exp(logprobs - prev_logprobs)
        clamped = ratios.clamp(1.0 - self.ratio_clip_min, 1.0 + self.ratio_clip_max)
        clip_loss = torch.max(-advantages * ratios, -advantages * clamped)
        if self.ratio_clip_c is not None:
            dual = -advantages * self.ratio_clip_c
            clip_loss = torch.where(advantages < 0, torch.min(clip_loss, dual), clip_loss)
        actor_loss = self._reduce(clip_loss, mask)
        with torch.no_grad():
            clipped = (ratios != clamped).to(mask.dtype)
            metrics = {
                "kl_penalty": float(kl_loss),
                "clip_fraction": float(masked_mean(clipped, mask)),
                "probs_ratio": float(masked_mean(ratios, mask)),
            }
        return actor_loss + kl_loss, metrics

    def _reduce(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.token_level_loss:
            return masked_mean(values, mask)
        per_sequence = masked_mean(values, mask, dim=-1)
        return masked_mean(per_sequence, torch.ones_like(per_sequence))
