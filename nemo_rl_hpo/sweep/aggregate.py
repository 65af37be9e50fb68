"""How several values of one configuration become its value: mean, median, min or max.

The seeds of a repeated configuration (``sweep/repeats.py``) are folded with it, by the job
side (``sweep/job.py``) and by the readers (report, CLI). Standard library only: the CLI
imports it at start.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

AGGREGATES: dict[str, Callable[[Sequence[float]], float]] = {
    "mean": statistics.fmean,
    "median": statistics.median,
    "min": min,
    "max": max,
}


def combine(aggregate: str, values: Sequence[float]) -> float:
    return float(AGGREGATES[aggregate]([float(v) for v in values]))
