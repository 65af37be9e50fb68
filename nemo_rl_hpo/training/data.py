"""The generated task: which marker token occurs most often in a sequence?

A transformer solves it by attending from the pooled position to every marker and comparing
counts, which a tiny model learns in a few hundred CPU steps; with a poor learning rate or no
warm-up it plateaus visibly higher, so the default trial is a useful thing to optimize.

Each example is ``[CLS] t_1 ... t_n [SEP]``: ``t_i`` are filler tokens with ``num_classes``
distinct marker tokens mixed in; the label is the index of the most frequent marker (always
unique). Everything is generated from ``seed`` alone, so every trial of a sweep sees the same
splits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CLS, SEP = 0, 1  # special tokens; markers follow, then fillers
FIRST_MARKER = 2


@dataclass(frozen=True)
class Split:
    """One split of the task: token ids ``(n, seq_len)`` and labels ``(n,)``."""

    tokens: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class Task:
    """Train, validation and test splits of the marker-majority task."""

    train: Split
    validation: Split
    test: Split
    vocab_size: int
    num_classes: int
    seq_len: int


def make_task(
    *,
    seed: int = 1234,
    num_classes: int = 4,
    vocab_size: int = 32,
    seq_len: int = 32,
    max_count: int = 6,
    train_size: int = 8192,
    validation_size: int = 1024,
    test_size: int = 1024,
) -> Task:
    """Generate the task deterministically from ``seed``.

    ``seq_len`` counts the ``[CLS]`` and ``[SEP]`` tokens; each marker occurs 0..``max_count``
    times, and ties for the most frequent marker are rejected so every label is unambiguous.
    """
    fillers = vocab_size - FIRST_MARKER - num_classes
    if fillers < 1:
        raise ValueError(
            f"task.vocab_size must exceed num_classes + {FIRST_MARKER} to leave filler tokens, "
            f"but got vocab_size={vocab_size}, num_classes={num_classes}."
        )
    body = seq_len - 2
    if num_classes * max_count > body:
        raise ValueError(
            f"task.seq_len must be at least num_classes * max_count + 2 = "
            f"{num_classes * max_count + 2} to fit every marker, but got seq_len={seq_len}."
        )
    generator = torch.Generator().manual_seed(seed)
    total = train_size + validation_size + test_size
    tokens, labels = _examples(generator, total, num_classes, fillers, body, max_count)
    bounds = [0, train_size, train_size + validation_size, total]
    train, validation, test = (
        Split(tokens[a:b].contiguous(), labels[a:b].contiguous())
        for a, b in zip(bounds, bounds[1:], strict=False)
    )
    return Task(train, validation, test, vocab_size, num_classes, seq_len)


def _examples(
    generator: torch.Generator, n: int, num_classes: int, fillers: int, body: int, max_count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    counts_parts: list[torch.Tensor] = []
    have = 0
    while have < n:  # reject ties for the maximum; about half of all draws survive
        counts = torch.randint(0, max_count + 1, (2 * n, num_classes), generator=generator)
        top = counts.max(dim=1, keepdim=True).values
        unique = ((counts == top).sum(dim=1) == 1) & (top.squeeze(1) > 0)
        counts_parts.append(counts[unique])
        have += int(unique.sum())
    counts = torch.cat(counts_parts)[:n]
    labels = counts.argmax(dim=1)
    # Body: markers first (marker k repeated counts[k] times), fillers after, then shuffled.
    slots = torch.arange(body).expand(n, body)
    ends = counts.cumsum(dim=1)
    marker_of_slot = (slots.unsqueeze(-1) >= ends.unsqueeze(1)).sum(dim=-1)  # num_classes = filler
    filler_tokens = (
        FIRST_MARKER + num_classes + torch.randint(0, fillers, (n, body), generator=generator)
    )
    body_tokens = torch.where(
        marker_of_slot < num_classes, FIRST_MARKER + marker_of_slot, filler_tokens
    )
    order = torch.rand(n, body, generator=generator).argsort(dim=1)
    body_tokens = body_tokens.gather(1, order)
    cls = torch.full((n, 1), CLS, dtype=torch.long)
    sep = torch.full((n, 1), SEP, dtype=torch.long)
    return torch.cat([cls, body_tokens, sep], dim=1), labels
