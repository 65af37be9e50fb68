"""GRPO's arithmetic against numbers worked out by hand (NeMo RL's semantics, see loss.py)."""

from __future__ import annotations

import math

import pytest
import torch

from nemo_rl_hpo.training.grpo.loss import ClippedPGLoss, grpo_advantages, kl_k3

SQRT_THIRD = math.sqrt(1 / 3)


def _adv(rewards: list[float], group: int, loo: bool, norm: bool) -> list[float]:
    out = grpo_advantages(
        torch.tensor(rewards, dtype=torch.float64),
        group,
        use_leave_one_out_baseline=loo,
        normalize_rewards=norm,
    )
    return [float(x) for x in out]


def test_group_mean_advantages() -> None:
    # Rewards 1,0,0,1: mean 0.5 -> advantages ±0.5.
    assert _adv([1, 0, 0, 1], 4, loo=False, norm=False) == pytest.approx([0.5, -0.5, -0.5, 0.5])
    # Bessel std of {1,0,0,1} = sqrt((0.5 - 0.25) * 4/3) = sqrt(1/3); 0.5 / (sqrt(1/3) + 1e-6).
    expected = 0.5 / (SQRT_THIRD + 1e-6)
    assert _adv([1, 0, 0, 1], 4, loo=False, norm=True) == pytest.approx(
        [expected, -expected, -expected, expected], rel=1e-9
    )


def test_leave_one_out_advantages() -> None:
    # For r=1 the others are {0,0,1}: baseline 1/3, advantage 2/3; for r=0 the others are
    # {1,0,1}: baseline 2/3, advantage -2/3.
    assert _adv([1, 0, 0, 1], 4, loo=True, norm=False) == pytest.approx(
        [2 / 3, -2 / 3, -2 / 3, 2 / 3]
    )
    # Normalized by the others' Bessel std: std{0,0,1} = std{1,0,1} = sqrt(1/3).
    e = (2 / 3) / (SQRT_THIRD + 1e-6)
    assert _adv([1, 0, 0, 1], 4, loo=True, norm=True) == pytest.approx([e, -e, -e, e], rel=1e-9)


def test_advantages_are_per_group_and_equal_rewards_stay_zero() -> None:
    # Two groups of 3 side by side: (0.2, 0.5, 0.8) and a group with no variation.
    out = _adv([0.2, 0.5, 0.8, 0.7, 0.7, 0.7], 3, loo=False, norm=True)
    # First group: mean 0.5, Bessel std 0.3 -> ±0.3 / (0.3 + 1e-6).
    assert out[:3] == pytest.approx([-0.3 / 0.300001, 0.0, 0.3 / 0.300001], rel=1e-6)
    # A group whose rewards are all equal is not sharpened: its advantages stay 0 (up to the
    # float rounding of its mean, which dividing by a rounding-sized std would blow up to ~1).
    assert out[3:] == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)


def _pg(logratio: float, advantage: float, **kwargs: float | None) -> float:
    """The clipped loss of one token with ratio exp(logratio), no KL."""
    loss = ClippedPGLoss(reference_policy_kl_penalty=0.0, **kwargs)  # type: ignore[arg-type]
    lp = torch.tensor([[logratio]])
    value, _ = loss(lp, torch.zeros(1, 1), lp, torch.tensor([[advantage]]), torch.ones(1, 1))
    return float(value)


@pytest.mark.parametrize(
    ("ratio", "advantage", "expected"),
    [
        (1.1, 1.0, -1.1),  # inside [0.8, 1.2]: -A·r
        (1.5, 1.0, -1.2),  # above, A > 0: the clipped -A·1.2 is the larger (pessimistic) loss
        (0.5, 1.0, -0.5),  # below, A > 0: -A·r = -0.5 > -A·0.8
        (0.5, -1.0, 0.8),  # below, A < 0: the clipped 0.8 is larger
        (1.5, -1.0, 1.5),  # above, A < 0: unclipped 1.5 is larger
    ],
)
def test_clipped_loss_inside_and_outside_the_range(
    ratio: float, advantage: float, expected: float
) -> None:
    assert _pg(math.log(ratio), advantage) == pytest.approx(expected, rel=1e-6)


def test_asymmetric_clip() -> None:
    # ratio_clip_min 0.1, ratio_clip_max 0.3: range [0.9, 1.3].
    assert _pg(math.log(1.5), 1.0, ratio_clip_min=0.1, ratio_clip_max=0.3) == pytest.approx(-1.3)
    assert _pg(math.log(0.5), -1.0, ratio_clip_min=0.1, ratio_clip_max=0.3) == pytest.approx(0.9)


def test_dual_clip_caps_negative_advantages_only() -> None:
    # A < 0, ratio 5: plain clip gives max(5, 1.2) = 5; dual clip caps it at -A·c = 3.
    assert _pg(math.log(5.0), -1.0) == pytest.approx(5.0, rel=1e-6)
    assert _pg(math.log(5.0), -1.0, ratio_clip_c=3.0) == pytest.approx(3.0, rel=1e-6)
    # Below the cap nothing changes.
    assert _pg(math.log(1.5), -1.0, ratio_clip_c=3.0) == pytest.approx(1.5, rel=1e-6)
    # A > 0 is never dual-clipped: -A·1.2 as without it.
    assert _pg(math.log(5.0), 1.0, ratio_clip_c=3.0) == pytest.approx(-1.2, rel=1e-6)


def test_dual_clip_bound_must_exceed_one() -> None:
    with pytest.raises(ValueError, match=r"loss_fn.ratio_clip_c must exceed 1"):
        ClippedPGLoss(ratio_clip_c=1.0)


def test_k3_kl_values() -> None:
    # π = 0.5, π_ref = 0.25: logr = log 0.5; k3 = 0.5 - 1 - log 0.5 = 0.19314718...
    kl = kl_k3(torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)]))
    assert float(kl) == pytest.approx(0.5 - 1 - math.log(0.5), rel=1e-6)
    # Never negative, whichever way the two differ, also for float32 log-ratios near 0 (where
    # exp(logr) - 1 - logr cancels below zero).
    g = torch.Generator().manual_seed(0)
    a = torch.randn(100_000, generator=g)
    for scale in (1.0, 1e-2, 1e-4, 1e-6):
        b = a + scale * torch.randn(100_000, generator=g)
        assert bool((kl_k3(a, b) >= 0).all()), scale
    # Exactly zero where policy equals reference.
    assert torch.equal(kl_k3(a, a), torch.zeros_like(a))
    # NeMo RL's clamps: logr to ±20 before k3, the result to ±10 after.
    big = kl_k3(torch.tensor([0.0]), torch.tensor([50.0]))
    assert float(big) == pytest.approx(10.0)
    clamped_in = kl_k3(torch.tensor([0.0]), torch.tensor([-50.0]), output_clamp_value=None)
    assert float(clamped_in) == pytest.approx(math.exp(-20) - 1 + 20)


def test_kl_penalty_is_added_to_the_loss() -> None:
    lp, ref = torch.tensor([[math.log(0.5)]]), torch.tensor([[math.log(0.25)]])
    loss = ClippedPGLoss(reference_policy_kl_penalty=0.1)
    value, metrics = loss(lp, lp.clone(), ref, torch.zeros(1, 1), torch.ones(1, 1))
    # Zero advantage: the loss is the KL alone, 0.1 · k3.
    assert float(value) == pytest.approx(0.1 * (0.5 - 1 - math.log(0.5)), rel=1e-6)
    assert metrics["kl_penalty"] == pytest.approx(float(value))
    # The same policy as the reference: no penalty at all.
    value, _ = loss(lp, lp.clone(), lp.clone(), torch.zeros(1, 1), torch.ones(1, 1))
    assert float(value) == 0.0


def test_token_and_sequence_level_normalization_on_unequal_lengths() -> None:
    # Ratio 1 everywhere, so each token's loss is -A. Sequence 1 has one token (loss 4),
    # sequence 2 has three (loss 1 each); padding carries a loss that must not count.
    lp = torch.zeros(2, 3)
    advantages = -torch.tensor([[4.0, 99.0, 99.0], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    token = ClippedPGLoss(reference_policy_kl_penalty=0.0, token_level_loss=True)
    sequence = ClippedPGLoss(reference_policy_kl_penalty=0.0, token_level_loss=False)
    # Token level: (4 + 1 + 1 + 1) / 4 tokens = 1.75.
    assert float(token(lp, lp, lp, advantages, mask)[0]) == pytest.approx(1.75)
    # Sequence level: mean of the sequences' means, (4 + 1) / 2 = 2.5.
    assert float(sequence(lp, lp, lp, advantages, mask)[0]) == pytest.approx(2.5)


def test_loss_gradient_flows_only_inside_the_clip() -> None:
    # Outside the clip on the pessimistic side the gradient is zero (the clipped term is flat).
    adv, mask, prev = torch.ones(1, 1), torch.ones(1, 1), torch.zeros(1, 1)
    for logratio, has_grad in ((math.log(1.1), True), (math.log(1.5), False)):
        lp = torch.tensor([[logratio]], requires_grad=True)
        loss, _ = ClippedPGLoss(reference_policy_kl_penalty=0.0)(lp, prev, lp, adv, mask)
        torch.autograd.backward(loss)
        assert lp.grad is not None
        assert (float(lp.grad) != 0.0) is has_grad
