"""A search space with conditional parameters taken from config-group structure.

A parameter such as ``optimizer.momentum`` belongs to the group ``optimizer``; it is sampled only
when the chosen option (sampled first, or fixed on the command line) has that key. Sampling is
define-by-run, so TPE and the other samplers see the real conditional structure. The Hydra side
(``hydra_plugins``) supplies which keys each option has; nothing here imports Hydra.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from nemo_rl_hpo.search.grammar import ParsedParam, SearchSpaceError, format_value

# group path ("optimizer", "model/encoder") -> option name -> dotted keys the option defines
GroupKeys = Mapping[str, Mapping[str, frozenset[str]]]


@dataclass(frozen=True)
class Condition:
    """``key`` is sampled only when group ``group`` is one of ``options``."""

    group: str
    options: frozenset[str]


class SearchSpace:
    """Ordered parameters, their conditions and the fixed overrides of a sweep."""

    def __init__(
        self,
        params: Iterable[ParsedParam],
        groups: GroupKeys | None = None,
        choices: Mapping[str, str | None] | None = None,
        config_has_key: Callable[[str], bool] | None = None,
        config_keys: Iterable[str] = (),
    ) -> None:
        """Build and validate the space.

        ``groups`` gives the keys of every option of the groups the params touch, ``choices``
        the currently selected option of each group, ``config_has_key`` whether a dotted key
        exists in the composed config (for non-group keys; ``None`` skips that check) and
        ``config_keys`` the known keys used to suggest a fix for a typo.
        """
        self.groups: GroupKeys = groups or {}
        self.choices: Mapping[str, str | None] = choices or {}
        all_params = list(params)
        self.fixed: list[str] = [p.fixed for p in all_params if p.fixed is not None]
        searched = [p for p in all_params if p.distribution is not None]
        # Group choices first: their values decide which conditional keys exist.
        self.params: list[ParsedParam] = [p for p in searched if p.bare_key in self.groups] + [
            p for p in searched if p.bare_key not in self.groups
        ]
        self.conditions: dict[str, Condition] = {}
        self._validate(config_has_key, list(config_keys))

    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        return {p.key: p.distribution for p in self.params if p.distribution is not None}

    def group_of(self, key: str) -> tuple[str, str] | None:
        """(group, key inside the option) for the longest group that prefixes ``key``."""
        parts = key.split(".")
        for i in range(len(parts) - 1, 0, -1):
            group = "/".join(parts[:i])
            if group in self.groups:
                return group, ".".join(parts[i:])
        return None

    def _validate(self, config_has_key: Callable[[str], bool] | None, known: list[str]) -> None:
        searched_groups = {p.bare_key: p for p in self.params if p.bare_key in self.groups}
        for group, param in searched_groups.items():
            options = self.groups[group]
            if not isinstance(param.distribution, CategoricalDistribution):
                raise SearchSpaceError(
                    f"params.{group}: a config group is searched with choice(), "
                    f"e.g. choice({', '.join(sorted(options))})."
                )
            unknown = [c for c in param.distribution.choices if str(c) not in options]
            if unknown:
                raise SearchSpaceError(
                    f"params.{group}: unknown option {unknown[0]!r}; the options of "
                    f"'{group}' are {', '.join(sorted(options))}."
                )
        for param in self.params:
            key = param.bare_key
            if key in self.groups or param.key.startswith("+"):
                continue
            owner = self.group_of(key)
            if owner is None:
                if config_has_key is not None and not config_has_key(key):
                    close = difflib.get_close_matches(key, known, n=1)
                    hint = f"did you mean '{close[0]}'? " if close else ""
                    raise SearchSpaceError(
                        f"params.{key}: no such key in the config; {hint}"
                        f"write '+{key}' to add a new key."
                    )
                continue
            group, sub = owner
            options = self.groups[group]
            owners = frozenset(o for o, keys in options.items() if sub in keys)
            if not owners:
                raise SearchSpaceError(
                    f"params.{key}: '{sub}' exists in no option of group '{group}' "
                    f"(options: {', '.join(sorted(options))}); fix the key or add it to the option "
                    "that owns it."
                )
            if group in searched_groups:
                dist = searched_groups[group].distribution
                assert isinstance(dist, CategoricalDistribution)
                if not owners & {str(c) for c in dist.choices}:
                    raise SearchSpaceError(
                        f"params.{key}: only {group}={'/'.join(sorted(owners))} has "
                        f"'{sub}', which the choice() of '{group}' never selects; add it to the "
                        "choices or drop the key."
                    )
                if owners != frozenset(options):
                    self.conditions[param.key] = Condition(group, owners)
            else:
                current = self.choices.get(group)
                if current not in owners:
                    raise SearchSpaceError(
                        f"params.{key}: only {group}={'/'.join(sorted(owners))} has "
                        f"'{sub}', but {group} is fixed to {current}; search '{group}' too or "
                        f"select "
                        f"{group}={sorted(owners)[0]}."
                    )

    def is_active(self, key: str, values: Mapping[str, Any]) -> bool:
        cond = self.conditions.get(key)
        if cond is None:
            return True
        chosen = values.get(cond.group, self.choices.get(cond.group))
        return str(chosen) in cond.options

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample every active parameter into ``trial`` (define-by-run), in order."""
        values: dict[str, Any] = {}
        for param in self.params:
            if not self.is_active(param.bare_key, {k.lstrip("+"): v for k, v in values.items()}):
                continue
            values[param.key] = suggest(trial, param.key, param.distribution)
        return values

    def probes(self) -> list[Probe]:
        """Trials that together reach every end of every range and every choice.

        First a reference trial (each numeric range at its middle, each group at its current
        option, other choices at the first), then one parameter at a time moved to each end or
        choice; a conditional parameter brings an option of its group that owns it. Each is a
        trial the sampler can propose, so an app check that rejects one names a range that would
        fail real trials, before any job.
        """
        out = [Probe(None, None, self._assign({}))]
        for param in self.params:
            for value in _ends(param.distribution):
                pinned: dict[str, Any] = {}
                cond = self.conditions.get(param.key)
                if cond is not None:
                    current = self.choices.get(cond.group)
                    pinned[cond.group] = current if current in cond.options else min(cond.options)
                pinned[param.key] = value
                inward = None
                dist = param.distribution
                if isinstance(dist, FloatDistribution) and dist.step is None:
                    nudge = (dist.high - dist.low) * 1e-6 * (1 if value == dist.low else -1)
                    inward = self._assign({**pinned, param.key: value + nudge})
                out.append(Probe(param.key, value, self._assign(pinned), inward))
        return out

    def _assign(self, pinned: Mapping[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for param in self.params:
            if not self.is_active(param.bare_key, {k.lstrip("+"): v for k, v in values.items()}):
                continue
            if param.key in pinned:
                values[param.key] = pinned[param.key]
            elif param.bare_key in pinned:
                values[param.key] = pinned[param.bare_key]
            else:
                values[param.key] = self._reference_value(param)
        return values

    def _reference_value(self, param: ParsedParam) -> Any:
        """The middle of a numeric range (on its step grid); a group's current option."""
        dist = param.distribution
        if isinstance(dist, (FloatDistribution, IntDistribution)):
            if dist.log:
                mid = math.sqrt(dist.low * dist.high)
            else:
                mid = (dist.low + dist.high) / 2
            if dist.step is not None:
                mid = dist.low + round((mid - dist.low) / dist.step) * dist.step
            return int(round(mid)) if isinstance(dist, IntDistribution) else float(mid)
        ends = _ends(dist)
        current = self.choices.get(param.bare_key)
        return next((c for c in ends if str(c) == current), ends[0])

    def overrides(self, values: Mapping[str, Any]) -> list[str]:
        """Hydra overrides of one trial: sampled values, then the sweep's fixed overrides."""
        return [f"{k}={format_value(v)}" for k, v in values.items()] + list(self.fixed)


@dataclass(frozen=True)
class Probe:
    """One trial of :meth:`SearchSpace.probes`: ``key`` moved to ``value`` (None: reference).

    ``inward`` is the same trial with a continuous end moved a hair inside its range: a float
    range's exact end is (almost) never drawn, so a check that rejects only the end itself
    (``dropout: interval(0, 1)`` where dropout must be < 1) does not fail real trials.
    """

    key: str | None
    value: Any
    values: dict[str, Any]
    inward: dict[str, Any] | None = None


def _ends(dist: BaseDistribution | None) -> list[Any]:
    """Both ends of a numeric range, or every choice."""
    if isinstance(dist, (FloatDistribution, IntDistribution)):
        return [dist.low, dist.high] if dist.high != dist.low else [dist.low]
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    raise SearchSpaceError(f"unsupported distribution {dist!r}.")


def suggest(trial: optuna.Trial, name: str, dist: BaseDistribution | None) -> Any:
    """Suggest one value through the public ``suggest_*`` API of the distribution's type."""
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    raise SearchSpaceError(f"{name}: unsupported distribution {dist!r}.")
