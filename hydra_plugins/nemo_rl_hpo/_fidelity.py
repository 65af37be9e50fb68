"""Hydra side of ``hydra/sweeper/fidelity=asha|hyperband``: settings checked against the app.

Everything is read from the composed config before any job: the step key the rungs count in,
its validation period, and the rungs themselves. A rung where the trial does not validate would
pause a trial with no value to rank it by, so it is one ``SweepConfigError`` line naming both
numbers. The schedule itself is Hydra-free (``nemo_rl_hpo.fidelity``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from hydra_plugins.nemo_rl_hpo._settings import OptunaSettings, SweepConfigError
from nemo_rl_hpo.fidelity import FidelityError, FidelitySettings

log = logging.getLogger(__name__)

KEY = "hydra.sweeper.fidelity"
# A run-length key and the key of its validation period, as the apps we know name them.
PARTNERS = {
    "max_steps": "eval_interval",
    "grpo.max_num_steps": "grpo.val_period",
    "sft.max_num_steps": "sft.val_period",
    "dpo.max_num_steps": "dpo.val_period",
}
_MISSING = object()


@dataclass(frozen=True)
class FidelityPlan:
    settings: FidelitySettings
    step_key: str
    validation_period: int
    min_observations: int | None
    keep_checkpoints: bool
    max_paused_bytes: int | None = None  # the cap on paused trials' checkpoints


def plan(s: OptunaSettings, config: DictConfig, n_params: int) -> FidelityPlan | None:
    """The checked schedule, or None when ``hydra/sweeper/fidelity`` is not chosen (or is
    ``auto`` and a pruner or several objectives decide when trials stop instead)."""
    f: Mapping[str, Any] | None = s.fidelity
    if not f:
        return None
    pruner = (s.pruner_config or {}).get("_target_", "")
    pruned = bool(pruner) and not pruner.endswith("NopPruner")
    if f.get("auto") and (pruned or len(s.directions) != 1):
        why = (
            f"the pruner {pruner.rsplit('.', 1)[-1]} decides when trials stop"
            if pruned
            else f"{len(s.directions)} objectives: rungs rank by one value"
        )
        log.info("fidelity auto: off (%s)", why)
        return None
    if len(s.directions) != 1:
        raise SweepConfigError(
            f"{KEY}: rungs rank trials by one value; give one direction (or weights that "
            "combine the objectives into one)."
        )
    if pruned:
        raise SweepConfigError(
            f"{KEY} decides when trials stop; leave hydra/sweeper/pruner at nop (got {pruner})."
        )
    step_key = f.get("step_key") or _default_step_key(config)
    length = _int_at(config, step_key, f"{KEY}.step_key={step_key}")
    period = _validation_period(config, step_key, f.get("validation_period"))
    max_resource = f.get("max_resource") or length
    min_resource = f.get("min_resource") or period
    scheduler = str(f.get("scheduler", "asha"))
    if scheduler not in ("asha", "hyperband"):
        raise SweepConfigError(f"{KEY}.scheduler must be asha or hyperband, got {scheduler!r}.")
    if max_resource > length:
        raise SweepConfigError(
            f"{KEY}.max_resource={max_resource} is beyond the run's length {step_key}={length}; "
            f"lower it or lengthen the run."
        )
    try:
        probe = FidelitySettings(
            int(min_resource), int(max_resource), int(f.get("reduction_factor", 3))
        )
        brackets = f.get("brackets")
        if brackets is None:
            brackets = probe.max_brackets if scheduler == "hyperband" else 1
        settings = FidelitySettings(
            probe.min_resource,
            probe.max_resource,
            probe.reduction_factor,
            mode=str(f.get("mode", "promotion")),
            brackets=int(brackets),
            direction=s.directions[0],
        )
    except FidelityError as e:
        raise SweepConfigError(f"{KEY}: {e}") from None
    for rung in settings.all_rungs()[:-1]:
        if rung % period:
            raise SweepConfigError(
                f"{KEY}: a rung falls on step {rung}, where the trial does not validate "
                f"(every {period} steps); make min_resource a multiple of {period} "
                f"(min_resource={settings.min_resource}, reduction_factor="
                f"{settings.reduction_factor})."
            )
    n_min = f.get("min_observations")
    cap = f.get("max_paused_gb")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float)) or cap < 0):
        raise SweepConfigError(
            f"{KEY}.max_paused_gb must be a number of GB, 0 or more (null: no cap), got {cap!r}."
        )
    return FidelityPlan(
        settings=settings,
        step_key=step_key,
        validation_period=period,
        min_observations=int(n_min) if n_min is not None else n_params + 1,
        keep_checkpoints=bool(f.get("keep_checkpoints", False)),
        max_paused_bytes=None if cap is None else int(cap * 1e9),
    )


def _default_step_key(config: DictConfig) -> str:
    command_key = OmegaConf.select(config, "command.max_steps_key", default=None)
    if command_key and OmegaConf.select(config, str(command_key), default=_MISSING) is not _MISSING:
        return str(command_key)
    for key in ("grpo.max_num_steps", "max_steps"):
        if OmegaConf.select(config, key, default=_MISSING) is not _MISSING:
            return key
    raise SweepConfigError(
        f"{KEY}.step_key is not set and the app has none of grpo.max_num_steps, max_steps; "
        "name the key of the run's length, e.g. hydra.sweeper.fidelity.step_key=train.steps."
    )


def _validation_period(config: DictConfig, step_key: str, given: Any) -> int:
    if isinstance(given, int) and not isinstance(given, bool):
        if given < 1:
            raise SweepConfigError(f"{KEY}.validation_period must be 1 or more, got {given}.")
        return given
    key = given if isinstance(given, str) else PARTNERS.get(step_key)
    # An external command's own key, as its preset hands it over (command.overrides).
    handed = OmegaConf.select(config, "command.overrides", default=None)
    if key is not None and isinstance(handed, DictConfig) and key in handed:
        value = handed[key]
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
    if key is None or OmegaConf.select(config, key, default=_MISSING) is _MISSING:
        raise SweepConfigError(
            f"{KEY}.validation_period: cannot tell how often the trial validates "
            f"({step_key} has no known partner key in the app's config); give the number of "
            "steps, e.g. hydra.sweeper.fidelity.validation_period=10."
        )
    return _int_at(config, key, f"{KEY}.validation_period={key}")


def _int_at(config: DictConfig, key: str, setting: str) -> int:
    value = OmegaConf.select(config, key, default=_MISSING)
    if value is _MISSING or not isinstance(value, int) or isinstance(value, bool) or value < 1:
        shown = "missing" if value is _MISSING else repr(value)
        raise SweepConfigError(
            f"{setting}: the app's {key} must be a positive number of steps, but it is {shown}."
        )
    return value
