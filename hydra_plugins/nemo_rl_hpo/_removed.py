"""Targets of options that no longer exist: selecting one explains what to use instead."""

from __future__ import annotations

from typing import Any

from hydra.errors import CompactHydraException


def raise_motpe_removed(*args: Any, **kwargs: Any) -> None:
    raise CompactHydraException(
        "hydra/sweeper/sampler=motpe: MOTPESampler was removed from Optuna (3.2); "
        "use hydra/sweeper/sampler=tpe, which handles several objectives, or nsgaii."
    )
