"""Validation of the default trial's config: one sentence per problem, naming the key and the fix.

Checked before anything is built, so a bad command line fails in a fraction of a second with a
message instead of a torch traceback minutes into a sweep.
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A config value the trial cannot run with; the message names the key and the fix."""


DEVICES = ("auto", "cpu", "cuda")


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for the first value the trial cannot run with."""
    check_number(cfg, "learning_rate", low=0.0, open_low=True, example="learning_rate=3e-3")
    check_integer(cfg, "batch_size", low=1, example="batch_size=32")
    check_number(cfg, "weight_decay", low=0.0, example="weight_decay=0.01")
    check_number(cfg, "dropout", low=0.0, high=1.0, open_high=True, example="dropout=0.1")
    check_integer(cfg, "max_steps", low=1, example="max_steps=600")
    if cfg.get("warmup_steps") is not None:  # it wins over warmup_ratio (see resolve_warmup)
        check_integer(cfg, "warmup_steps", low=0, example="warmup_steps=50")
        if int(cfg.warmup_steps) >= int(cfg.max_steps):
            raise ConfigError(
                f"warmup_steps must be smaller than max_steps ({cfg.max_steps}), but got "
                f"warmup_steps={cfg.warmup_steps}; lower it, raise max_steps, or use "
                "warmup_ratio (a fraction of max_steps) with warmup_steps=null."
            )
    else:
        check_number(
            cfg, "warmup_ratio", low=0.0, high=1.0, open_high=True, example="warmup_ratio=0.1"
        )
    if cfg.get("max_grad_norm") is not None:
        check_number(
            cfg, "max_grad_norm", low=0.0, open_low=True, example="max_grad_norm=1.0 (or null)"
        )
    check_integer(cfg, "eval_interval", low=1, example="eval_interval=50")
    check_integer(
        cfg, "checkpoint_interval", low=0, example="checkpoint_interval=200 (0: at the end)"
    )
    check_integer(cfg, "seed", low=0, example="seed=0")
    check_integer(cfg, "num_threads", low=1, example="num_threads=1")
    device = str(cfg.get("device"))
    if device not in DEVICES and not device.startswith("cuda:"):
        raise ConfigError(
            f"device must be one of {', '.join(DEVICES)} (or cuda:N), but got {device=}."
        )
    # Keys owned by one option of a group: checked only where the chosen option has them.
    check_number(
        cfg, "optimizer.momentum", low=0.0, high=1.0, open_high=True, example="0.9", must=False
    )
    check_integer(cfg, "scheduler.step_size", low=1, example="scheduler.step_size=200", must=False)
    check_number(
        cfg, "scheduler.gamma", low=0.0, high=1.0, open_low=True, example="0.5", must=False
    )
    check_number(cfg, "loss.alpha", low=0.0, open_low=True, example="loss.alpha=0.25", must=False)
    check_number(cfg, "loss.gamma", low=0.0, example="loss.gamma=2", must=False)
    check_number(
        cfg, "loss.label_smoothing", low=0.0, high=1.0, open_high=True, example="0.1", must=False
    )


def resolve_warmup(cfg: DictConfig) -> None:
    """Set ``warmup_steps`` from ``warmup_ratio`` of this run's ``max_steps``, unless given.

    The search space tunes the ratio, so ``python train.py -m max_steps=40`` samples warm-ups
    that fit the shorter run instead of failing every trial whose warm-up outlasts it, while
    ``warmup_steps=N`` on a command line still means N. The schedules read ``${warmup_steps}``.
    """
    if cfg.get("warmup_steps") is None:
        cfg.warmup_steps = int(float(cfg.warmup_ratio) * int(cfg.max_steps))


def config_value(cfg: DictConfig, key: str, must: bool) -> Any:
    value = OmegaConf.select(cfg, key, default=None)
    if value is None and must:
        raise ConfigError(f"{key} is missing from the config; set it, e.g. {key}=...")
    return value


def check_number(
    cfg: DictConfig,
    key: str,
    *,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
    example: str,
    must: bool = True,
) -> None:
    value = config_value(cfg, key, must)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, but got {value!r}; e.g. {example}.")
    too_low = low is not None and (value <= low if open_low else value < low)
    too_high = high is not None and (value >= high if open_high else value > high)
    if too_low or too_high:
        if high is None:
            where = f"greater than {low:g}" if open_low else f"at least {low:g}"
        else:
            lo = ("(" if open_low else "[") + f"{low:g}"
            where = f"in {lo}, {high:g}" + (")" if open_high else "]")
        raise ConfigError(f"{key} must be {where}, but got {value!r}; e.g. {example}.")


def check_integer(cfg: DictConfig, key: str, *, low: int, example: str, must: bool = True) -> None:
    value = config_value(cfg, key, must)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key} must be an integer, but got {value!r}; e.g. {example}.")
    if value < low:
        raise ConfigError(f"{key} must be at least {low}, but got {value}; e.g. {example}.")
