"""The RL trial's tasks: digit problems whose reward a verifier computes, never a learned model.

- ``sort`` (the default): the prompt is ``num_digits`` random digits then ``=``; the answer is the
  *distinct* digits of the prompt in ascending order, then ``<eos>``. Answers differ in length
  (how many distinct digits there are), so token- and sequence-level loss normalization differ.
- ``addition``: the prompt is ``a + b =`` (``num_digits`` digits each, most significant first);
  the answer is the digits of ``a + b`` least significant first (the order in which a causal
  model can carry, no leading zeros), then ``<eos>``.

The reward of an answer is the number of positions where it agrees with the truth, over the
longer one's length, both read up to and including their first ``<eos>``: 1.0 exactly when the
whole answer and its end are right. Validation prompts are a fixed set generated from the task's
``seed``; training prompts are drawn fresh every step from the run's own generator, so nothing
repeats and a checkpoint's generator state resumes the same stream.

Why ``sort``: a tiny causal model learns it in seconds with supervision, so a warm start of a few
steps sets the starting reward (≈ 0.3 after 10 steps) and GRPO has real headroom from there —
climbing under a good learning rate, stalling or collapsing under a bad one (docs/grpo.md has
the measurements). ``addition`` (carries) is far slower to learn on two cores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PLUS, EQUALS, EOS = 10, 11, 12  # token ids; 0..9 are the digits; EOS also pads after the end
VOCAB_SIZE = 13
NAMES = ("sort", "addition")
SPLITS = ("validation", "test")


@dataclass(frozen=True)
class DigitsTask:
    """One of :data:`NAMES`; every trial of a sweep sees the same validation prompts."""

    name: str = "sort"
    num_digits: int = 8
    seed: int = 1234  # the data's own seed: the validation prompts
    validation_size: int = 256
    # Which held-out prompts every validation answers: "validation" (what the sweep tunes on) or
    # "test" (as many other prompts, none equal to a validation one; the confirmation stage's
    # hydra.sweeper.confirm.overrides=[task.split=test] scores the pick on them).
    split: str = "validation"

    def __post_init__(self) -> None:
        if self.name not in NAMES:
            raise ValueError(f"task.name must be one of {', '.join(NAMES)}, got {self.name!r}.")
        if self.num_digits < 1:
            raise ValueError(f"task.num_digits must be at least 1, got {self.num_digits}.")
        if self.split not in SPLITS:
            raise ValueError(f"task.split must be one of {', '.join(SPLITS)}, got {self.split!r}.")
        if self.validation_size < 1:
            raise ValueError(
                f"task.validation_size must be at least 1, got {self.validation_size}."
            )

    @property
    def vocab_size(self) -> int:
        return VOCAB_SIZE

    @property
    def prompt_len(self) -> int:
        return self.num_digits + 1 if self.name == "sort" else 2 * self.num_digits + 2

    @property
    def answer_len(self) -> int:
        """The most tokens an answer may have, ``<eos>`` included."""
        digits = min(self.num_digits, 10) if self.name == "sort" else self.num_digits + 1
        return digits + 1

    @property
    def seq_len(self) -> int:
        """Prompt plus answer: the longest sequence the model sees."""
        return self.prompt_len + self.answer_len

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` fresh problems: prompt tokens ``(n, prompt_len)`` and the problems' operands."""
        if self.name == "sort":
            operands = torch.randint(0, 10, (n, self.num_digits), generator=generator)
        else:
            operands = torch.randint(0, 10**self.num_digits, (n, 2), generator=generator)
        return self.encode(operands), operands

    def validation(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed held-out prompts and operands of ``split``.

        Both splits come from one generator seeded by ``seed``: the validation prompts first,
        then the test prompts, skipping any equal to a validation prompt (so a test score is on
        problems the sweep never chose a configuration by).
        """
        gen = torch.Generator().manual_seed(self.seed)
        prompts, operands = self.sample(self.validation_size, gen)
        if self.split == "validation":
            return prompts, operands
        seen = {tuple(p.tolist()) for p in prompts}
        keep_p: list[torch.Tensor] = []
        keep_o: list[torch.Tensor] = []
        while len(keep_p) < self.validation_size:
            more_p, more_o = self.sample(self.validation_size, gen)
            for p, o in zip(more_p, more_o, strict=True):
                if tuple(p.tolist()) not in seen and len(keep_p) < self.validation_size:
                    keep_p.append(p)
                    keep_o.append(o)
        return torch.stack(keep_p), torch.stack(keep_o)

    def encode(self, operands: torch.Tensor) -> torch.Tensor:
        """Prompt tokens of ``operands``."""
        n = operands.shape[0]
        equals = torch.full((n, 1), EQUALS, dtype=torch.long)
        if self.name == "sort":
            return torch.cat([operands, equals], dim=1)
        plus = torch.full((n, 1), PLUS, dtype=torch.long)
        a = _digits(operands[:, 0], self.num_digits).flip(1)  # most significant first
        b = _digits(operands[:, 1], self.num_digits).flip(1)
        return torch.cat([a, plus, b, equals], dim=1)

    def answers(self, operands: torch.Tensor) -> torch.Tensor:
        """The correct answers ``(n, answer_len)``; ``<eos>`` ends them and pads."""
        positions = torch.arange(self.answer_len).unsqueeze(0)
        if self.name == "sort":
            present = torch.zeros(len(operands), 10, dtype=torch.bool)
            present.scatter_(1, operands, True)
            # ascending distinct digits: sort (present first, then by digit) and keep the present
            key = torch.where(present, torch.arange(10), 10 + torch.arange(10))
            order = key.argsort(dim=1)[:, : self.answer_len]
            count = present.sum(dim=1, keepdim=True)
            if order.shape[1] < self.answer_len:
                pad = torch.full((len(operands), self.answer_len - order.shape[1]), EOS)
                order = torch.cat([order, pad], dim=1)
            return torch.where(positions < count, order, EOS)
        total = operands.sum(dim=1)
        out = _digits(total, self.answer_len)  # least significant first
        length = _num_digits(total)  # without leading zeros
        return torch.where(positions < length.unsqueeze(1), out, EOS)


def _digits(values: torch.Tensor, width: int) -> torch.Tensor:
    """The ``width`` lowest digits of ``values``, least significant first."""
    powers = 10 ** torch.arange(width, dtype=torch.long)
    return (values.unsqueeze(1) // powers) % 10


def _num_digits(total: torch.Tensor) -> torch.Tensor:
    """Digits of each non-negative ``total`` (0 has one)."""
    length = torch.ones_like(total)
    rest = total // 10
    while bool((rest > 0).any()):
        length += (rest > 0).long()
        rest = rest // 10
    return length


def token_mask(answer: torch.Tensor) -> torch.Tensor:
    """1 for generated tokens up to and including the first ``<eos>``, 0 for the padding after."""
    is_eos = (answer == EOS).long()
    ended_before = is_eos.cumsum(dim=1) - is_eos
    return (ended_before == 0).float()


def verify(task: DigitsTask, operands: torch.Tensor, answer: torch.Tensor) -> torch.Tensor:
    """Reward of each generated ``answer`` ``(n, answer_len)``, in [0, 1] (see the module doc)."""
    truth = task.answers(operands)
    mask_a, mask_t = token_mask(answer), token_mask(truth)
    agree = ((answer == truth).float() * mask_a * mask_t).sum(dim=1)
    return agree / torch.maximum(mask_a.sum(dim=1), mask_t.sum(dim=1))
