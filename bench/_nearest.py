"""Nearest table configuration of a sampled one: pure Python, shared by simulate.py and the peers.

The space is a *spec* (a list of dicts: key, kind, low/high/log or choices, and the group option
a conditional key needs), written by ``simulate.py --dump-space`` from the project's own search
space, so Ray Tune and Syne Tune (in their own venv, without the project) sample the same space
and map samples to table configurations by the same rule: fewest categorical mismatches first
(group options and choices compared as the override text), then the Euclidean distance of the
numeric keys scaled to [0, 1] (log scale where searched as log); a conditional numeric key
present on one side only counts as a whole range apart.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any


def parse_overrides(overrides: Iterable[str]) -> dict[str, str]:
    out = {}
    for o in overrides:
        k, _, v = o.partition("=")
        if k != "trial":
            out[k] = v
    return out


def read_records(path: Path) -> list[dict[str, Any]]:
    """The complete records of a curves.py table (a torn last gzip member is left out)."""
    out: list[dict[str, Any]] = []
    try:
        with gzip.open(path, "rt") as f:
            for line in f:
                if line.strip():
                    out.append(json.loads(line))
    except (EOFError, OSError, ValueError):
        pass
    return out


def active(spec: Sequence[Mapping[str, Any]], values: Mapping[str, str]) -> dict[str, str]:
    """The keys of ``values`` a trial has: a conditional key only with its group's option."""
    out = {}
    for p in spec:
        cond = p.get("condition")
        if cond and values.get(cond["group"]) not in cond["options"]:
            continue
        if p["key"] in values:
            out[p["key"]] = values[p["key"]]
    return out


class Nearest:
    """Map a sampled configuration to the table's nearest one (and say how far it was)."""

    def __init__(self, spec: Sequence[Mapping[str, Any]], configs: Mapping[str, Sequence[str]]):
        self.spec = list(spec)
        self.numeric = [p for p in self.spec if p["kind"] != "categorical"]
        self.categorical = [p for p in self.spec if p["kind"] == "categorical"]
        self.keys = list(configs)
        self.rows = [self._vector(parse_overrides(configs[k])) for k in self.keys]
        self._cache: dict[tuple[Any, ...], tuple[str, int, float]] = {}

    @staticmethod
    def _unit(p: Mapping[str, Any], text: str) -> float:
        x, lo, hi = float(text), float(p["low"]), float(p["high"])
        if p["log"]:
            return (math.log(x) - math.log(lo)) / (math.log(hi) - math.log(lo))
        return (x - lo) / (hi - lo) if hi > lo else 0.0

    def _vector(self, values: Mapping[str, str]) -> tuple[list[str | None], list[float | None]]:
        cats = [values.get(p["key"]) for p in self.categorical]
        nums = [
            self._unit(p, values[p["key"]]) if p["key"] in values else None for p in self.numeric
        ]
        return cats, nums

    def __call__(self, values: Mapping[str, str]) -> tuple[str, int, float]:
        """(table key, categorical mismatches, numeric distance) of the nearest configuration."""
        cache_key = tuple(sorted(values.items()))
        hit = self._cache.get(cache_key)
        if hit is not None:
            return hit
        cats, nums = self._vector(values)
        best: tuple[int, float, str] | None = None
        for key, (rc, rn) in zip(self.keys, self.rows, strict=True):
            mism = sum(1 for a, b in zip(cats, rc, strict=True) if a != b)
            if best is not None and mism > best[0]:
                continue
            sq = 0.0
            for a, b in zip(nums, rn, strict=True):
                if a is not None and b is not None:
                    sq += (a - b) ** 2
                elif a is not None or b is not None:
                    sq += 1.0
            d = math.sqrt(sq)
            if best is None or (mism, d) < (best[0], best[1]):
                best = (mism, d, key)
        assert best is not None
        out = (best[2], best[0], best[1])
        self._cache[cache_key] = out
        return out
