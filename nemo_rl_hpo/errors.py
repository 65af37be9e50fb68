"""Errors about a parameter, worded with the library's names; a front end shows its own keys.

The library (``search``, ``sweep``, ``pbt``) knows its parameters as ``params``, ``storage``,
``objectives``, ``repeats``...; a user of the Hydra sweeper knows them as
``hydra.sweeper.params``... A :class:`ParamError` keeps the library's sentence and lists the
parameters it names, so the Hydra layer shows the same one line with its keys
(``named(e, "hydra.sweeper.")``) and a script calling the library sees the names it passed.
"""

from __future__ import annotations

import re


class ParamError(Exception):
    """An error whose message names ``params`` (each where it first appears as a key); a
    subclass names those its messages always name in ``default_params``."""

    default_params: tuple[str, ...] = ()

    def __init__(self, message: str, *params: str) -> None:
        super().__init__(message)
        self.params = params or self.default_params


def named(error: BaseException, prefix: str) -> str:
    """``error``'s message with the parameters it names shown as ``prefix + name``."""
    text = str(error)
    for p in getattr(error, "params", ()):
        # The name as a key: not inside a word, a path or a quoted value.
        pattern = rf"(?<![\w./:'\"=-]){re.escape(p)}(?=[\s=.\[:,;)]|$)"
        text = re.sub(pattern, lambda m: prefix + m.group(0), text, count=1)
    return text
