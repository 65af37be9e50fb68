"""Rollouts of the policy: sample answers, score their log-probs, validate (greedy by default).

Shared by the warm start, every GRPO step and validation; log-probs are of temperature-scaled
logits, as NeMo RL's policy workers compute them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nemo_rl_hpo.training.grpo.task import EOS, DigitsTask, token_mask, verify
from nemo_rl_hpo.training.precision import Precision

VAL_BATCH = 1024  # validation prompts per forward pass


@torch.no_grad()
def generate(
    model: nn.Module,
    prompts: torch.Tensor,
    max_new_tokens: int,
    temperature: float,
    generator: torch.Generator | None,
    precision: Precision,
) -> torch.Tensor:
    """Sample ``max_new_tokens`` answer tokens (greedy at temperature 0); ``<eos>`` after the end.

    No KV cache: prompts are a dozen tokens, a full forward per new token is cheaper than the
    bookkeeping at this size.
    """
    model.eval()
    seq = prompts
    done = torch.zeros(len(prompts), dtype=torch.bool, device=prompts.device)
    out = []
    for _ in range(max_new_tokens):
        with precision.autocast(prompts.device):
            logits = model.token_logits(seq)[:, -1].float()  # type: ignore[operator]
        if temperature > 0:
            probs = F.softmax(logits / temperature, dim=-1).cpu()
            token = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(seq.device)
        else:
            token = logits.argmax(dim=-1)
        token = torch.where(done, torch.full_like(token, EOS), token)
        done |= token == EOS
        out.append(token)
        seq = torch.cat([seq, token.unsqueeze(1)], dim=1)
    return torch.stack(out, dim=1)


def answer_logprobs(
    model: nn.Module,
    sequences: torch.Tensor,
    answer_len: int,
    temperature: float,
    precision: Precision,
) -> torch.Tensor:
    """Log-probabilities ``(n, answer_len)`` of the answer tokens, of temperature-scaled logits."""
    with precision.autocast(sequences.device):
        logits = model.token_logits(sequences[:, :-1])[:, -answer_len:].float()  # type: ignore[operator]
    if temperature > 0:
        logits = logits / temperature
    logprobs = F.log_softmax(logits, dim=-1)
    return logprobs.gather(-1, sequences[:, -answer_len:].unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def validate_policy(
    policy: nn.Module,
    task: DigitsTask,
    device: torch.device,
    precision: Precision,
    temperature: float = 0.0,
    seed: int = 0,
) -> dict[str, float]:
    """Answers to the fixed validation prompts: mean reward, exact accuracy, length.

    ``temperature`` 0 answers greedily (the same decoding for every trial); above 0 it samples,
    as NeMo RL validates (``policy.generation.val_temperature``, by default the training
    temperature), from a generator seeded with ``seed`` afresh at every validation, so every
    validation and every trial draws the same noise and the run's own streams are untouched.
    """
    prompts, operands = task.validation()
    generator = torch.Generator().manual_seed(seed) if temperature > 0 else None
    rewards, lengths = [], []
    for i in range(0, len(prompts), VAL_BATCH):
        answers = generate(
            policy,
            prompts[i : i + VAL_BATCH].to(device),
            task.answer_len,
            temperature,
            generator,
            precision,
        ).cpu()
        rewards.append(verify(task, operands[i : i + VAL_BATCH], answers))
        lengths.append(token_mask(answers).sum(dim=1))
    reward = torch.cat(rewards)
    return {
        "validation/reward": float(reward.mean()),
        "validation/accuracy": float((reward == 1.0).float().mean()),
        "validation/avg_length": float(torch.cat(lengths).mean()),
    }
