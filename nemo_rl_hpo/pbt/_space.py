"""The PBT search space: what can be sampled for a new member and how a copied member explores.

Explore rules (one decision per parameter, in the order the space lists them):

- with probability ``resample_probability`` the value is drawn afresh from the parameter's own
  distribution (log-uniform for ``log`` parameters, uniform otherwise);
- otherwise a float or int is *perturbed* by a factor drawn uniformly from
  ``perturbation_factors`` and a categorical keeps its value:

  * ``log`` parameters are multiplied by the factor (a shift of ``log(factor)`` in log space);
  * linear parameters move by ``(factor - 1) * (high - low)``: with factors (0.8, 1.2) they step
    20 % of their range down or up. Multiplying a linear value, as Ray Tune does, slams a
    narrow range such as ``interval(0.8, 0.99)`` onto its bounds and can never move a value of 0;
  * ints are then rounded to their step grid and move at least one step in the factor's
    direction (``2 * 1.2`` becomes 3, not 2 again), so an int never stalls below its bound;

- the result is clipped to ``[low, high]`` (floats with a ``step`` are snapped to their grid).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Choice = str | int | float | bool | None
_CHOICE_TYPES = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class FloatParam:
    """A float in ``[low, high]``; ``log`` samples and perturbs it in log space."""

    name: str
    low: float
    high: float
    log: bool = False
    step: float | None = None  # grid spacing from ``low`` (``range(0.1, 1.0, 0.1)``); no log

    def __post_init__(self) -> None:
        _check_name(self)
        for field in ("low", "high"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(
                    f"FloatParam '{self.name}': {field} must be a number, but got {value!r}."
                )
            if not math.isfinite(value):
                raise ValueError(
                    f"FloatParam '{self.name}': {field} must be finite, but got {value}."
                )
            object.__setattr__(self, field, float(value))
        if self.low > self.high:
            raise ValueError(
                f"FloatParam '{self.name}': low must be at most high, but got low={self.low} "
                f"and high={self.high}; swap them."
            )
        if self.log and self.low <= 0:
            raise ValueError(
                f"FloatParam '{self.name}': a log parameter needs low > 0, but got "
                f"low={self.low}; use a small positive bound such as 1e-8."
            )
        if self.step is not None:
            if self.log:
                raise ValueError(
                    f"FloatParam '{self.name}': step cannot be combined with log; drop one."
                )
            if not (self.step > 0 and math.isfinite(self.step)):
                raise ValueError(
                    f"FloatParam '{self.name}': step must be positive, but got {self.step}."
                )
            object.__setattr__(self, "step", float(self.step))


@dataclass(frozen=True)
class IntParam:
    """An int in ``[low, high]`` on the grid ``low + k * step``; ``log`` needs ``step == 1``."""

    name: str
    low: int
    high: int
    log: bool = False
    step: int = 1

    def __post_init__(self) -> None:
        _check_name(self)
        for field in ("low", "high", "step"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(
                    f"IntParam '{self.name}': {field} must be an int, but got {value!r}."
                )
        if self.low > self.high:
            raise ValueError(
                f"IntParam '{self.name}': low must be at most high, but got low={self.low} and "
                f"high={self.high}; swap them."
            )
        if self.step < 1:
            raise ValueError(
                f"IntParam '{self.name}': step must be at least 1, but got {self.step}."
            )
        if (self.high - self.low) % self.step:
            raise ValueError(
                f"IntParam '{self.name}': high - low must be a multiple of step, but got "
                f"low={self.low}, high={self.high}, step={self.step}; use "
                f"high={self.high - (self.high - self.low) % self.step}."
            )
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError(
                f"IntParam '{self.name}': a log parameter needs low >= 1 and step == 1, but got "
                f"low={self.low}, step={self.step}."
            )


@dataclass(frozen=True)
class CategoricalParam:
    """One of ``choices`` (str, int, float, bool or None); resampled uniformly, never perturbed."""

    name: str
    choices: tuple[Choice, ...]

    def __post_init__(self) -> None:
        _check_name(self)
        choices = tuple(self.choices)
        if not choices:
            raise ValueError(f"CategoricalParam '{self.name}': choices must not be empty.")
        for c in choices:
            if not isinstance(c, _CHOICE_TYPES):
                raise ValueError(
                    f"CategoricalParam '{self.name}': choices must be str, int, float, bool or "
                    f"None, but got {c!r} ({type(c).__name__})."
                )
        keys = [(type(c), c) for c in choices]
        if len(set(keys)) != len(keys):
            raise ValueError(
                f"CategoricalParam '{self.name}': choices must be distinct, but got {choices}."
            )
        object.__setattr__(self, "choices", choices)


Param = FloatParam | IntParam | CategoricalParam


def _check_name(param: Param) -> None:
    if not isinstance(param.name, str) or not param.name:
        raise ValueError(
            f"{type(param).__name__}: name must be a non-empty string, but got {param.name!r}."
        )


def check_space(space: Iterable[Param]) -> tuple[Param, ...]:
    """The space as a tuple, after checking it is non-empty with unique parameter names."""
    params = tuple(space)
    if not params:
        raise ValueError("space must hold at least one parameter, but got none.")
    seen: set[str] = set()
    for p in params:
        if not isinstance(p, (FloatParam, IntParam, CategoricalParam)):
            raise ValueError(
                f"space must hold FloatParam, IntParam or CategoricalParam entries, but got {p!r}."
            )
        if p.name in seen:
            raise ValueError(f"space names parameter '{p.name}' twice; keep one entry.")
        seen.add(p.name)
    return params


def param_from_distribution(name: str, distribution: Any) -> Param:
    """Convert an Optuna distribution (what ``nemo_rl_hpo.search.grammar`` yields) to a Param."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    if isinstance(distribution, FloatDistribution):
        return FloatParam(
            name, distribution.low, distribution.high, distribution.log, distribution.step
        )
    if isinstance(distribution, IntDistribution):
        return IntParam(
            name, distribution.low, distribution.high, distribution.log, distribution.step
        )
    if isinstance(distribution, CategoricalDistribution):
        return CategoricalParam(name, tuple(distribution.choices))
    raise ValueError(
        f"parameter '{name}': PBT supports float, int and categorical distributions, but got "
        f"{type(distribution).__name__}."
    )


def sample_value(param: Param, rng: np.random.Generator) -> Any:
    """One draw from the parameter's distribution (log-uniform for ``log`` parameters)."""
    if isinstance(param, CategoricalParam):
        return param.choices[int(rng.integers(len(param.choices)))]
    if isinstance(param, IntParam):
        if param.log:
            # Log-uniform over [low - 0.5, high + 0.5], as Optuna does, so the end values are as
            # likely as their neighbours in log space.
            lo, hi = math.log(param.low - 0.5), math.log(param.high + 0.5)
            raw = math.exp(rng.uniform(lo, hi))
            return min(max(int(round(raw)), param.low), param.high)
        n = (param.high - param.low) // param.step
        return param.low + int(rng.integers(n + 1)) * param.step
    if param.log:
        value = math.exp(rng.uniform(math.log(param.low), math.log(param.high)))
        return min(max(value, param.low), param.high)
    if param.step is not None:
        n = int(math.floor((param.high - param.low) / param.step + 1e-9))
        return _snap_float(param, param.low + int(rng.integers(n + 1)) * param.step, param.step)
    return float(rng.uniform(param.low, param.high))


def sample(space: Sequence[Param], rng: np.random.Generator) -> dict[str, Any]:
    """A fresh member's hyperparameters: one draw per parameter, in space order."""
    return {p.name: sample_value(p, rng) for p in space}


def perturb_value(param: FloatParam | IntParam, value: Any, factor: float) -> Any:
    """``value`` moved by ``factor`` under the module's rules, clipped to the bounds."""
    v = float(value)
    if param.log:
        moved = v * factor
    else:
        moved = v + (factor - 1.0) * (param.high - param.low)
    if isinstance(param, IntParam):
        old = int(value)
        k = round((moved - param.low) / param.step)
        new = param.low + k * param.step
        if new == old and factor != 1.0:
            new = old + (param.step if factor > 1.0 else -param.step)
        return min(max(int(new), param.low), param.high)
    if param.step is not None:
        return _snap_float(param, moved, param.step)
    return min(max(moved, param.low), param.high)


def explore(
    params: Mapping[str, Any],
    space: Sequence[Param],
    rng: np.random.Generator,
    *,
    resample_probability: float,
    perturbation_factors: Sequence[float],
) -> dict[str, Any]:
    """A copied member's new hyperparameters: resample or perturb each one (module docstring)."""
    out: dict[str, Any] = {}
    for p in space:
        resample = rng.random() < resample_probability
        factor = perturbation_factors[int(rng.integers(len(perturbation_factors)))]
        if p.name not in params or resample:
            out[p.name] = sample_value(p, rng)
        elif isinstance(p, CategoricalParam):
            out[p.name] = params[p.name]
        else:
            out[p.name] = perturb_value(p, params[p.name], factor)
    return out


def _snap_float(param: FloatParam, value: float, step: float) -> float:
    n_max = int(math.floor((param.high - param.low) / step + 1e-9))
    k = min(max(round((value - param.low) / step), 0), n_max)
    return min(max(param.low + k * step, param.low), param.high)
