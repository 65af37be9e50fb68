"""Render ``{key: value}`` as Hydra-syntax overrides for a command that parses them itself.

NeMo RL's ``examples/run_*.py`` apply their positional arguments with Hydra's override parser on
a struct-mode OmegaConf config (``nemo_rl.utils.config.parse_hydra_overrides``): an existing key is
``key=value``, a new key needs ``+key=value`` (``++`` adds or replaces, ``~`` deletes), and list
items are addressed by index (``policy.scheduler.0.kwargs.T_max``). Values must survive that
grammar unchanged, so every rendered override is parsed back with Hydra's own parser and compared
before a trial starts: a value that cannot be expressed is an error naming its key, never a
silently different configuration.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from nemo_rl_hpo.search.grammar import hydra_quote

_KEY = re.compile(r"^(\+\+|\+|~)?[A-Za-z_][\w\-]*(\.[\w\-]+)*$")
_DICT_KEY = re.compile(r"^[A-Za-z_][\w\-]*$")


# Hydra's quoting has one home: the search grammar renders sampled values the same way.
quote = hydra_quote


class OverrideError(ValueError):
    """A key or value that cannot be written as a Hydra override."""


def render_value(value: Any) -> str:
    """One value in Hydra's override grammar (None -> null, bools lower-case, strings quoted
    when the bare form would parse differently)."""
    value = _plain(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return value if _bare_ok(value) else quote(value)
    if isinstance(value, Mapping):
        items = []
        for k, v in value.items():
            if not isinstance(k, str) or not _DICT_KEY.match(k):
                raise OverrideError(
                    f"dict key {k!r} cannot be written in a Hydra override; use keys made of "
                    "letters, digits, '_' and '-', or override the nested keys one by one."
                )
            items.append(f"{k}:{render_value(v)}")
        return "{" + ",".join(items) + "}"
    if isinstance(value, Sequence):
        return "[" + ",".join(render_value(v) for v in value) + "]"
    raise OverrideError(
        f"value {value!r} of type {type(value).__name__} has no Hydra override form; use a "
        "number, string, bool, null, list or dict."
    )


def render_override(key: str, value: Any) -> str:
    """``key=value`` (key may carry ``+``/``++``/``~``), checked by parsing it back."""
    if not isinstance(key, str) or not _KEY.match(key):
        raise OverrideError(
            f"override key {key!r} is not a dotted config key; write e.g. "
            "'policy.optimizer.kwargs.lr', '+new.key' or 'policy.scheduler.0.kwargs.T_max'."
        )
    if key.startswith("~") and value is None:
        text = key
    else:
        text = f"{key}={render_value(value)}"
    _check_round_trip(text, key, value)
    return text


def render_overrides(mapping: Mapping[str, Any]) -> list[str]:
    """Every ``key: value`` of ``mapping`` as an override, in order."""
    return [render_override(str(k), v) for k, v in mapping.items()]


def _plain(value: Any) -> Any:
    """OmegaConf containers as plain Python (resolved), everything else unchanged."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return value
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _bare_ok(text: str) -> bool:
    if not text or text != text.strip() or any(c.isspace() for c in text):
        return False
    try:
        parsed = _parser().parse_override(f"k={text}")
        value = parsed.value()
    except Exception:
        return False
    return isinstance(value, str) and value == text


def _check_round_trip(text: str, key: str, value: Any) -> None:
    try:
        parsed = _parser().parse_override(text)
    except Exception as e:
        raise OverrideError(
            f"override for {key!r} renders as {text!r}, which Hydra cannot parse ({e})."
        ) from None
    if key.startswith("~") and value is None:
        return
    got = parsed.value()
    if not _same(got, _plain(value)):
        raise OverrideError(
            f"override for {key!r} renders as {text!r}, which Hydra reads back as {got!r} "
            f"instead of {value!r}; pass the value as a string or change it."
        )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, Sequence) and not isinstance(b, str):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) and type(a) is type(b)


_PARSER: Any = None


def _parser() -> Any:
    global _PARSER
    if _PARSER is None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        _PARSER = OverridesParser.create()
    return _PARSER
