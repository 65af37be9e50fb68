"""Turn what a trial returned into objective values and metrics.

A task may return a float, a sequence (one value per direction) or a mapping of named metrics;
``objectives`` picks metrics by name. Shared by the sweeper (validation) and the job-side hook
that tells the study, so both agree on what a return means.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from nemo_rl_hpo.errors import ParamError


class ObjectiveError(ParamError, ValueError):
    """A return value that cannot give the study's objective values."""


def numeric_metrics(ret: Any) -> dict[str, float]:
    """Every numeric metric of a mapping return (kept as trial user attributes)."""
    if not isinstance(ret, Mapping):
        return {}
    out: dict[str, float] = {}
    for k, v in ret.items():
        try:
            if isinstance(v, bool):
                continue
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            continue
    return out


def parse_objectives(raw: Any) -> tuple[list[str], list[float] | None]:
    """``objectives`` as names, or as ``{name, weight}`` entries for a weighted single objective."""
    if raw is None:
        return [], None
    if isinstance(raw, str):
        raw = [raw]
    names: list[str] = []
    weights: list[float] = []
    weighted = False
    for i, entry in enumerate(raw):
        if isinstance(entry, str):
            names.append(entry)
            weights.append(1.0)
        elif isinstance(entry, Mapping) and "name" in entry:
            names.append(str(entry["name"]))
            if "weight" in entry:
                weighted = True
            try:
                weights.append(float(entry.get("weight", 1.0)))
            except (TypeError, ValueError):
                raise ObjectiveError(
                    f"objectives[{i}].weight must be a number, got {entry['weight']!r}.",
                    "objectives",
                ) from None
        else:
            raise ObjectiveError(
                f"objectives[{i}] must be a metric name or "
                "{name: ..., weight: ...}, "
                f"got {entry!r}.",
                "objectives",
            )
    return names, (weights if weighted else None)


def objective_values(
    ret: Any,
    n_directions: int,
    objectives: Sequence[str] | None = None,
    weights: Sequence[float] | None = None,
) -> list[float]:
    """The study values of one return; raises ObjectiveError naming what is wrong.

    With ``weights`` the named metrics are combined into one weighted sum (one direction).
    """
    if isinstance(ret, Mapping):
        if not objectives:
            if n_directions == 1 and len(ret) == 1:
                objectives = list(map(str, ret))
            else:
                raise ObjectiveError(
                    f"the task returned metrics {sorted(map(str, ret))}; set "
                    "objectives to the metric names to optimize, one per direction.",
                    "objectives",
                )
        missing = [name for name in objectives if name not in ret]
        if missing:
            raise ObjectiveError(
                f"objectives: metric {missing[0]!r} was not returned by the task "
                f"(it returned {sorted(map(str, ret))}).",
                "objectives",
            )
        raw: list[Any] = [ret[name] for name in objectives]
        if weights is not None:
            try:
                raw = [sum(w * float(v) for w, v in zip(weights, raw, strict=True))]
            except (TypeError, ValueError):
                raise ObjectiveError(f"weighted objectives need numbers, got {raw!r}.") from None
    elif isinstance(ret, Sequence) and not isinstance(ret, (str, bytes)):
        raw = list(ret)
    else:
        raw = [ret]
    if len(raw) != n_directions:
        raise ObjectiveError(
            f"direction has {n_directions} direction(s) but the task gave "
            f"{len(raw)} value(s); make them match.",
            "direction",
        )
    values: list[float] = []
    for v in raw:
        if isinstance(v, (str, bytes)):  # float("1.5") would take text for a number
            kind = type(v).__name__
            raise ObjectiveError(f"return value must be a number, got the {kind} {v!r}.")
        try:
            f = float(v)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an int past float range
            shown = repr(v) if len(repr(v)) <= 80 else f"{repr(v)[:77]}..."
            raise ObjectiveError(f"return value must be float-castable, got {shown}.") from None
        if not math.isfinite(f):
            raise ObjectiveError(f"the objective value is {f}; the trial diverged.")
        values.append(f)
    return values
