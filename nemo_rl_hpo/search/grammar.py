"""Hydra's override grammar -> Optuna distributions, exactly as hydra-optuna-sweeper maps it.

Keeping upstream's mapping (including ``range(a, b)`` with an *inclusive* ``b``, as its
``IntDistribution(a, b, step)`` does) is what lets an existing hydra-optuna-sweeper config run
unchanged. The parsed objects come from Hydra's own ``OverridesParser``; nothing here re-parses
strings.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from nemo_rl_hpo.errors import ParamError


class SearchSpaceError(ParamError, ValueError):
    """A search-space entry that cannot be turned into a distribution; names the key."""

    default_params = ("params",)


@dataclass(frozen=True)
class ParsedParam:
    """One entry of the sweep: a distribution to sample, or a fixed override passed through."""

    key: str  # override key as written, with any +/++/~ prefix (e.g. "+w", "optimizer.momentum")
    distribution: BaseDistribution | None  # None: a fixed override
    fixed: str | None = None  # the override's text for fixed entries (e.g. "~x", "lr=0.1")

    @property
    def bare_key(self) -> str:
        """The config key without +/++/~ prefixes."""
        return self.key.lstrip("+~")


def parse_params(
    params: Mapping[str, Any] | None, arguments: Iterable[str] = ()
) -> list[ParsedParam]:
    """Parse ``params`` plus command-line overrides into an ordered list.

    Command-line entries come last and replace a params entry of the same key, as upstream.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    lines: list[str] = []
    for key, value in (params or {}).items():
        lines.append(f"{key}={_value_text(value)}")
    lines.extend(arguments)
    parser = OverridesParser.create()
    parsed: dict[str, ParsedParam] = {}
    for line in lines:
        try:
            (override,) = parser.parse_overrides([line])
        except Exception as e:  # hydra raises OverrideParseException with a long message
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise SearchSpaceError(
                f"params: cannot parse {_shown(line)} ({_shown(first)}); write e.g. "
                "'interval(0.0, 1.0)', 'tag(log, interval(1e-5, 1e-2))', 'int(interval(1, 8))', "
                "'range(1, 10)' or 'choice(a, b)'."
            ) from None
        key = override.get_key_element()
        parsed.pop(key, None)
        if override.is_delete():
            parsed[key] = ParsedParam(key=key, distribution=None, fixed=line)
        elif override.is_sweep_override():
            try:
                dist = distribution_from_override(override)
            except SearchSpaceError:
                raise
            except Exception as e:  # Hydra's or Optuna's own check (step 0, NaN bounds, ...)
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise SearchSpaceError(
                    f"params.{key}: {_shown(line)} is not a space to sample "
                    f"({_shown(first)}); write e.g. 'interval(0.0, 1.0)' or 'range(1, 10)'."
                ) from None
            parsed[key] = ParsedParam(key=key, distribution=dist)
        else:
            parsed[key] = ParsedParam(key=key, distribution=None, fixed=line)
    return list(parsed.values())


def distribution_from_override(override: Any) -> BaseDistribution:
    """Map one parsed sweep override to an Optuna distribution (upstream's rules)."""
    from hydra.core.override_parser.types import (
        ChoiceSweep,
        IntervalSweep,
        RangeSweep,
        Transformer,
    )

    key = override.get_key_element()
    value = override.value()
    if override.is_choice_sweep():
        assert isinstance(value, ChoiceSweep)
        choices: list[CategoricalChoiceType] = []
        for x in override.sweep_iterator(transformer=Transformer.encode):
            choices.append(x)
        if not choices:
            raise SearchSpaceError(f"params.{key}: choice() needs at least one value.")
        return CategoricalDistribution(choices)
    if override.is_range_sweep():
        assert isinstance(value, RangeSweep)
        if value.shuffle:
            shuffled = list(override.sweep_iterator(transformer=Transformer.encode))
            if not shuffled:
                raise SearchSpaceError(
                    f"params.{key}: shuffle(range(...)) gives no values; give a "
                    "range with at least one, e.g. range(1, 10)."
                )
            return CategoricalDistribution(shuffled)
        start, stop, step = value.start, value.stop, value.step
        if start is None or stop is None:
            raise SearchSpaceError(f"params.{key}: range() needs a start and stop.")
        _check_bounds(key, "range", start, stop)
        if not step > 0:
            raise SearchSpaceError(
                f"params.{key}: range({start}, {stop}, {step}) needs a positive step."
            )
        if any(isinstance(v, float) for v in (start, stop, step)):
            return FloatDistribution(float(start), float(stop), step=float(step))
        return IntDistribution(int(start), int(stop), step=int(step))
    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep)
        start, end = value.start, value.end
        if start is None or end is None:
            raise SearchSpaceError(f"params.{key}: interval() needs two bounds.")
        _check_bounds(key, "interval", start, end)
        log = "log" in value.tags
        if log and start <= 0:
            raise SearchSpaceError(
                f"params.{key}: a log interval needs a positive lower bound, "
                f"but got {start}; use e.g. tag(log, interval(1e-6, {end}))."
            )
        if isinstance(start, int) and isinstance(end, int):
            return IntDistribution(int(start), int(end), log=log)
        return FloatDistribution(float(start), float(end), log=log)
    raise SearchSpaceError(
        f"params.{key}: {_shown(override.input_line)} is not supported by the Optuna "
        "sweeper; use choice(), range(), interval() or tag(log, interval())."
    )


def _shown(text: str) -> str:
    """``text`` quoted for a one-line message (a newline in it would split the line)."""
    return (
        repr(text)
        if any(c in text for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
        else f"'{text}'"
    )


def _check_bounds(key: str, kind: str, low: float, high: float) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise SearchSpaceError(f"params.{key}: {kind}({low}, {high}) needs finite bounds.")
    if low > high:
        raise SearchSpaceError(
            f"params.{key}: {kind}({low}, {high}) has its lower bound above its "
            f"upper bound; write {kind}({high}, {low})."
        )


def _value_text(value: Any) -> str:
    """Params values may be YAML lists/bools/numbers: turn them back into override text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "choice(" + ",".join(_value_text(v) for v in value) + ")"
    return str(value)


def format_value(value: Any) -> str:
    """Render a sampled value as override text Hydra parses back to the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        from hydra.core.override_parser.overrides_parser import OverridesParser

        try:
            (ov,) = OverridesParser.create().parse_overrides([f"k={value}"])
            if ov.value() == value:
                return value
        except Exception:  # not a plain primitive: quote it below
            pass
        return hydra_quote(value)
    return str(value)


_BACKSLASHES_BEFORE_QUOTE = re.compile(r"(\\*)('|$)")


def hydra_quote(text: str) -> str:
    """``text`` as a single-quoted Hydra string that Hydra parses back to ``text``.

    In Hydra's quoted strings a backslash is literal unless it precedes a quote (or the closing
    quote), so only those runs of backslashes are doubled and the quote itself is escaped.
    """

    def _escape(m: re.Match[str]) -> str:
        slashes, q = m.group(1), m.group(2)
        return slashes * 2 + ("\\'" if q else "")

    return "'" + _BACKSLASHES_BEFORE_QUOTE.sub(_escape, text) + "'"
