"""Every default is written once, in the settings layer (``hydra_plugins/nemo_rl_hpo/config.py``).

The Hydra-free library has dataclasses and functions of its own for the same settings (the
trial loop's, PBT's, warm start's, repeats', the storage retry). Where one of them has a
default, it must be the schema's: a user gets the same sweep from Python as from Hydra, and a
changed default cannot drift in one place only.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from hydra_plugins.nemo_rl_hpo import config as schema
from hydra_plugins.nemo_rl_hpo._samplers import auto_sampler
from nemo_rl_hpo.pbt import PBTConfig
from nemo_rl_hpo.sweep import faults, repeats, warm_start
from nemo_rl_hpo.sweep.core import SweepSettings

# library field -> sweeper key, for the library settings that are sweeper keys
SWEEP_SETTINGS = {
    "n_jobs": "n_jobs",
    "timeout": "timeout",
    "max_failure_rate": "max_failure_rate",
    "retry_failed": "retry_failed",
    "heartbeat_interval": "heartbeat_interval",
}
PBT_CONFIG = {
    "population_size": "population_size",
    "perturbation_interval": "perturbation_interval",
    "num_rounds": "num_rounds",
    "total_steps": "total_steps",
    "direction": "direction",
    "quantile_fraction": "quantile_fraction",
    "resample_probability": "resample_probability",
    "perturbation_factors": "perturbation_factors",
    "seed": "seed",
    "synchronous": "synchronous",
    "max_retries": "max_retries",
}
REPEATS = {"n": "repeats", "seed_key": "seed_key", "aggregate": "aggregate"}
# Library parameters that take a different *kind* of value than the key, resolved by the
# settings layer (_settings.py), so a default of their own is not a second copy:
RESOLVED = {
    # The library needs a budget and None means "not given" (num_rounds or total_steps);
    # the schema's 4 rounds is the sweeper's budget.
    ("PBTConfig", "num_rounds"): "a budget must be given",
    # The key's null means "synchronous when n_jobs < population_size"; the library takes the
    # resolved bool (PBTSettings.is_synchronous).
    ("PBTConfig", "synchronous"): "null resolved from n_jobs",
}


def _sweepers() -> dict[str, dict[str, Any]]:
    """Every registered ``hydra/sweeper`` config, composed as Hydra composes it."""
    cs = ConfigStore.instance()
    out = {}
    for name in cs.list("hydra/sweeper"):
        if not name.endswith(".yaml"):
            continue  # a group (sampler/, pruner/, fidelity/)
        node = cs.load(f"hydra/sweeper/{name}").node
        out[name.removesuffix(".yaml")] = OmegaConf.to_container(node, resolve=False)
    return out


def _dataclass_defaults(cls: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def _function_defaults(fn: Any) -> dict[str, Any]:
    return {
        n: p.default
        for n, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return bool(a == b)


def _mismatches(
    owner: str, lib: dict[str, Any], keys: dict[str, str], conf: dict[str, Any]
) -> list[tuple[Any, ...]]:
    bad = []
    for field, key in keys.items():
        if field not in lib or key not in conf or (owner, field) in RESOLVED:
            continue  # the library has no default (or resolves the key): nothing to drift
        if not _same(lib[field], conf[key]):
            bad.append((owner, field, lib[field], key, conf[key]))
    return bad


def test_every_sweeper_config_is_checked() -> None:
    # Rule: the check covers every sweeper a user can select, not a hand-picked list.
    assert {"optuna", "optuna_mo", "pbt"} <= set(_sweepers())


@pytest.mark.parametrize("sweeper", ["optuna", "optuna_mo", "pbt"])
def test_library_defaults_are_the_schema_defaults(sweeper: str) -> None:
    conf = _sweepers()[sweeper]
    bad = _mismatches("SweepSettings", _dataclass_defaults(SweepSettings), SWEEP_SETTINGS, conf)
    bad += _mismatches(
        "storage retry", {"retry_s": faults.DEFAULT_RETRY_S}, {"retry_s": "storage_retry_s"}, conf
    )
    if sweeper == "pbt":
        bad += _mismatches("PBTConfig", _dataclass_defaults(PBTConfig), PBT_CONFIG, conf)
    else:
        bad += _mismatches("Repeats", _dataclass_defaults(repeats.Repeats), REPEATS, conf)
        ws = conf["warm_start"]
        lib = _function_defaults(warm_start.warm_start)
        bad += _mismatches("warm_start", lib, {"top_k": "top_k", "mode": "mode"}, ws)
    # Rule: a library default that exists equals the key's default in the composed config.
    assert bad == []


def test_auto_sampler_defaults_are_its_config_defaults() -> None:
    conf = OmegaConf.to_container(OmegaConf.structured(schema.AutoSamplerConfig))
    assert isinstance(conf, dict)
    lib = _function_defaults(auto_sampler)
    # Rule: the sampler's own knobs default as hydra/sweeper/sampler=auto says.
    assert {k: lib[k] for k in ("seed", "gp_max_trials")} == {
        k: conf[k] for k in ("seed", "gp_max_trials")
    }


def test_the_check_catches_a_drifted_default() -> None:
    # Rule: the comparison fails when a library default differs from the schema's.
    conf = {"n_jobs": 2}
    assert _mismatches("SweepSettings", {"n_jobs": 1}, {"n_jobs": "n_jobs"}, conf) == [
        ("SweepSettings", "n_jobs", 1, "n_jobs", 2)
    ]
