"""Start-up checks of the sweepers, in-process: settings, sampler and pruner from config.

Each bad value is one SweepConfigError line naming the key, raised before anything is opened
or launched (tests/test_sweeper_errors.py runs the same through a real app).
"""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from hydra.errors import CompactHydraException
from omegaconf import OmegaConf

from hydra_plugins.nemo_rl_hpo._samplers import grid_space, make_pruner, make_sampler
from hydra_plugins.nemo_rl_hpo._settings import (
    OptunaSettings,
    PBTSettings,
    SweepConfigError,
    schema_defaults,
)
from hydra_plugins.nemo_rl_hpo.config import OptunaSweeperConf, PBTSweeperConf
from nemo_rl_hpo.search.grammar import parse_params
from nemo_rl_hpo.search.space import SearchSpace

BAD = [
    ({"n_trials": 0}, "hydra.sweeper.n_trials must be at least 1, but got 0."),
    ({"n_jobs": 0}, "hydra.sweeper.n_jobs must be at least 1 (trials in flight), but got 0."),
    ({"timeout": -5}, "hydra.sweeper.timeout must be a positive number of seconds or null"),
    ({"max_failure_rate": 1.5}, "hydra.sweeper.max_failure_rate must be in [0, 1], but got 1.5."),
    ({"retry_failed": -1}, "hydra.sweeper.retry_failed must be 0 or more, but got -1."),
    ({"heartbeat_interval": 0}, "hydra.sweeper.heartbeat_interval must be positive seconds"),
    ({"storage_retry_s": -1}, "hydra.sweeper.storage_retry_s must be 0 or more seconds"),
    ({"direction": "minimise"}, "'minimise' is not a direction; use minimize or maximize"),
    ({"direction": []}, "hydra.sweeper.direction must name at least one direction."),
    (
        {"objectives": ["loss"], "direction": ["minimize", "minimize"]},
        "give one objective per direction",
    ),
    (
        {"objectives": [{"name": "a", "weight": 1.0}], "direction": ["minimize", "maximize"]},
        "weights make one weighted objective",
    ),
    ({"storage": 5}, "hydra.sweeper.storage must be a URL string or null, got int."),
    ({"params": ["x=interval(0,1)"]}, "hydra.sweeper.params must be a mapping of key: grammar"),
    ({"search_space": {"x": 1}}, "hydra.sweeper.search_space was removed"),
    ({"budget": {"gpu_hours": -1}}, "hydra.sweeper.budget.gpu_hours must be a positive number"),
    ({"budget": {"gpus": 8}}, "hydra.sweeper.budget has no key 'gpus'"),
]


@pytest.mark.parametrize(("given", "message"), BAD, ids=[str(g) for g, _ in BAD])
def test_bad_optuna_setting_is_one_line_naming_the_key(given: dict[str, Any], message: str) -> None:
    with pytest.raises(SweepConfigError) as err:
        OptunaSettings.from_config(given)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_defaults_are_the_schemas() -> None:
    s = OptunaSettings.from_config({})
    defaults = OptunaSweeperConf()
    # Rule: a key not given takes config.py's default, the same wherever it is read.
    assert (s.n_trials, s.n_jobs) == (defaults.n_trials, defaults.n_jobs)
    assert s.heartbeat_interval == defaults.heartbeat_interval
    assert s.directions == ["minimize"] and s.objectives == []
    loop = s.loop_settings()
    assert (loop.n_trials, loop.n_jobs, loop.retry_failed) == (20, defaults.n_jobs, 0)
    assert loop.stale_after == max(6 * defaults.heartbeat_interval, 30.0)
    p = PBTSettings.from_config({})
    assert p.n_jobs == PBTSweeperConf().n_jobs and p.population_size == 4
    assert schema_defaults(PBTSweeperConf)["perturbation_factors"] == [0.8, 1.2]


def test_settings_read_a_hydra_config_node() -> None:
    node = OmegaConf.create({"n_trials": 3, "direction": ["minimize", "maximize"], "params": {}})
    s = OptunaSettings.from_config(node)
    assert s.n_trials == 3 and s.directions == ["minimize", "maximize"]
    assert s.raw["direction"] == ["minimize", "maximize"]


def test_extra_objectives_keep_the_first_ones_in_priority_order() -> None:
    s = OptunaSettings.from_config({"objectives": ["val_loss", "train_time_s"]})
    assert s.objectives == ["val_loss"]


def test_pbt_needs_one_direction_and_valid_population() -> None:
    with pytest.raises(SweepConfigError, match="PBT ranks members by one objective"):
        PBTSettings.from_config({"direction": ["minimize", "minimize"]})
    s = PBTSettings.from_config({"population_size": 1})
    with pytest.raises(SweepConfigError, match="hydra.sweeper: ") as err:
        s.pbt_config(seed=0, n_jobs=1)
    assert "population_size" in str(err.value)


def test_pbt_loop_never_aborts_and_rounds_wait_for_the_population_with_few_slots() -> None:
    s = PBTSettings.from_config({"population_size": 4})
    # Rule: PBT retries and retires members itself; the loop's failure-rate abort is off.
    assert s.loop_settings().max_failure_rate == 1.0
    assert s.pbt_config(seed=1, n_jobs=2).synchronous is True
    assert s.pbt_config(seed=1, n_jobs=4).synchronous is False
    assert PBTSettings.from_config({"synchronous": False}).pbt_config(1, 1).synchronous is False


def _space(params: dict[str, str]) -> SearchSpace:
    return SearchSpace(parse_params(params, []), {}, {}, lambda key: True, list(params))


def test_grid_sampler_is_recognised_by_its_class_and_gets_the_grid() -> None:
    space = _space({"a": "choice(1, 2)", "b": "range(0, 4, step=2)"})
    cfg = OmegaConf.create({"_target_": "optuna.samplers.GridSampler", "seed": 0})
    sampler = make_sampler(cfg, space, n_trials=6, n_jobs=1, n_objectives=1, custom_space=False)
    assert isinstance(sampler, optuna.samplers.GridSampler)
    assert grid_space(space) == {"a": [1, 2], "b": [0, 2, 4]}


def test_grid_of_a_continuous_range_names_the_key() -> None:
    with pytest.raises(SweepConfigError, match="hydra.sweeper.params.x: the grid sampler needs"):
        grid_space(_space({"x": "interval(0.0, 1.0)"}))


def test_auto_sampler_gets_the_space_and_the_slots() -> None:
    cfg = OmegaConf.create({"_target_": "hydra_plugins.nemo_rl_hpo._samplers.auto_sampler"})
    space = _space({"x": "interval(0.0, 1.0)"})
    one = make_sampler(cfg, space, n_trials=20, n_jobs=1, n_objectives=1, custom_space=False)
    many = make_sampler(cfg, space, n_trials=20, n_jobs=4, n_objectives=1, custom_space=False)
    custom = make_sampler(cfg, space, n_trials=20, n_jobs=1, n_objectives=1, custom_space=True)
    paused = make_sampler(
        cfg, space, n_trials=20, n_jobs=4, n_objectives=1, custom_space=False, fidelity=True
    )
    # Rule: GP for a fixed space one trial at a time; TPE with parallel trials or conditions,
    # joint over the parameters on a fixed space, one model per parameter on a conditional one
    # (the curve tables); random proposals under pause/resume fidelity.
    assert isinstance(one, optuna.samplers.GPSampler)
    assert isinstance(many, optuna.samplers.TPESampler) and many._multivariate
    assert isinstance(custom, optuna.samplers.TPESampler) and not custom._multivariate
    assert type(paused) is optuna.samplers.RandomSampler


def test_sampler_or_pruner_that_cannot_be_built_is_one_line() -> None:
    space = _space({"x": "interval(0.0, 1.0)"})
    bad = OmegaConf.create({"_target_": "optuna.samplers.TPESampler", "no_such_arg": 1})
    # Hydra's own instantiation error is already one compact line naming the target.
    with pytest.raises(CompactHydraException, match="TPESampler"):
        make_sampler(bad, space, n_trials=2, n_jobs=1, n_objectives=1, custom_space=False)
    with pytest.raises(SweepConfigError, match=r"hydra.sweeper.pruner \(nope.Pruner\)"):
        make_pruner(OmegaConf.create({"_target_": "nope.Pruner"}))


@pytest.mark.parametrize(
    ("name", "slurm"),
    [
        ("hydra_plugins.nemo_rl_hpo.launchers.SlurmLauncher", True),
        ("hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher", True),
        ("hydra_plugins.nemo_rl_hpo.launchers.LocalLauncher", False),
        ("hydra_plugins.nemo_rl_hpo.launchers.PoolLauncher", False),
    ],
)
def test_slurm_launchers_are_recognised_as_hydra_loads_them(name: str, slurm: bool) -> None:
    """Hydra's plugin registry holds its own copies of plugin modules: the launcher's kind must
    be told from what it declares, not from an isinstance against a class imported here."""
    from hydra.core.plugins import Plugins

    from hydra_plugins.nemo_rl_hpo._launch import HydraJobs

    cls = Plugins.instance().class_name_to_class[name]
    jobs = HydraJobs()
    jobs.launcher = cls.__new__(cls)  # type: ignore[assignment]  # a registry class, not set up
    # Rule: a Slurm launcher puts the default study in a journal file on the shared file system.
    assert jobs.on_slurm is slurm
    assert jobs.in_process is False
