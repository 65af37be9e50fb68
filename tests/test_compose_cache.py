"""The cached per-trial compose builds exactly the config Hydra's own re-compose builds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.nemo_rl_hpo.compose_cache import CachedSweepConfigLoader

CONF = Path(__file__).resolve().parents[1] / "conf"

# Trials as the sweeper writes them: group choices, then values of keys that exist only in the
# chosen option; hydra overrides and added/deleted keys as users write them.
TRIALS = [
    ["optimizer=sgd", "optimizer.lr=0.001", "optimizer.momentum=0.5", "scheduler=step"],
    ["optimizer=sgd", "optimizer.lr=0.002", "optimizer.momentum=0.9", "scheduler=step"],
    ["optimizer=adam", "model=gpt", "loss=focal", "loss.gamma=1.5", "learning_rate=1e-4"],
    ["loss=focal", "model=gpt", "optimizer=adam", "loss.gamma=3", "batch_size=64"],
    ["+note='a, b'", "max_steps=5", "hydra.job.name=renamed", "~search"],
    ["precision=bf16", "dropout=0.1", "scheduler=plateau", "seed=7"],
]


@pytest.fixture
def loaders() -> Iterator[tuple[Any, CachedSweepConfigLoader, DictConfig]]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        inner = GlobalHydra.instance().config_loader()
        master = inner.load_configuration(
            "config", ["hydra.sweeper.n_trials=3", "max_steps=20"], run_mode=RunMode.MULTIRUN
        )
        yield inner, CachedSweepConfigLoader(inner), master
    GlobalHydra.instance().clear()


def _plain(cfg: DictConfig) -> Any:
    return OmegaConf.to_container(cfg, resolve=False)


def test_cached_config_equals_hydras_for_every_trial(
    loaders: tuple[Any, CachedSweepConfigLoader, DictConfig],
) -> None:
    inner, cached, master = loaders
    for _ in range(2):  # first pass fills the cache, second pass reads it
        for overrides in TRIALS:
            want = inner.load_sweep_config(master, list(overrides))
            got = cached.load_sweep_config(master, list(overrides))
            assert _plain(got) == _plain(want), overrides
            assert OmegaConf.is_struct(got) == OmegaConf.is_struct(want)
    # trials 0/1 share their group choices; 2/3 list theirs in another order (another entry)
    assert cached.hits >= len(TRIALS) + 1
    assert cached.misses <= len(TRIALS)


def test_a_trial_cannot_change_the_cached_base_of_the_next(
    loaders: tuple[Any, CachedSweepConfigLoader, DictConfig],
) -> None:
    _, cached, master = loaders
    first = cached.load_sweep_config(master, ["optimizer=sgd", "optimizer.lr=0.5"])
    first.optimizer.momentum = 0.123  # a launcher or task writing into its config
    second = cached.load_sweep_config(master, ["optimizer=sgd", "optimizer.lr=0.25"])
    assert second.optimizer.lr == 0.25
    assert second.optimizer.momentum != 0.123
    assert second.hydra.overrides.task == ["optimizer=sgd", "optimizer.lr=0.25"]


def test_bad_overrides_fail_as_they_do_in_hydra(
    loaders: tuple[Any, CachedSweepConfigLoader, DictConfig],
) -> None:
    inner, cached, master = loaders
    for overrides in (["optimizer=sgd", "optimizer.no_such_key=1"], ["optimizer=nadam"]):
        with pytest.raises(ConfigCompositionException) as want:
            inner.load_sweep_config(master, overrides)
        with pytest.raises(ConfigCompositionException) as got:
            cached.load_sweep_config(master, overrides)
        assert str(got.value) == str(want.value)


def test_the_loader_travels_to_a_submitit_job(
    loaders: tuple[Any, CachedSweepConfigLoader, DictConfig],
) -> None:
    """submitit_local/slurm pickle the Hydra context (and so this loader) into every job."""
    import cloudpickle

    _, cached, master = loaders
    cached.load_sweep_config(master, ["optimizer=sgd"])
    clone = cloudpickle.loads(cloudpickle.dumps(cached))
    got = clone.load_sweep_config(master, ["optimizer=sgd", "optimizer.lr=0.3"])
    assert got.optimizer.lr == 0.3
    assert clone.misses == 1 and clone.hits == 0  # the cache stayed behind


def test_task_only_config_is_the_jobs_config_without_hydra(
    loaders: tuple[Any, CachedSweepConfigLoader, DictConfig],
) -> None:
    """The sweeper's pre-launch check sees exactly what the task function will receive."""
    inner, cached, master = loaders
    for _ in range(2):
        for overrides in TRIALS:
            want = _plain(inner.load_sweep_config(master, list(overrides)))
            del want["hydra"]
            got = cached.load_sweep_config(master, list(overrides), task_only=True)
            assert "hydra" not in got
            assert _plain(got) == want, overrides
            got.optimizer.lr = -1.0  # writing into a checked config must not reach the cache
    again = cached.load_sweep_config(master, ["optimizer=sgd", "optimizer.momentum=0.5"])
    assert again.optimizer.lr != -1.0


def test_an_override_naming_the_current_option_shares_the_cache_entry(
    loaders: tuple[Any, CachedSweepConfigLoader, DictConfig],
) -> None:
    """``scheduler=cosine`` when cosine is already chosen composes the same config: one entry."""
    inner, cached, master = loaders
    assert master.hydra.runtime.choices.scheduler == "cosine"
    cached.load_sweep_config(master, ["optimizer=sgd"])
    pinned = ["scheduler=cosine", "optimizer=sgd", "precision=fp32", "learning_rate=0.1"]
    got = cached.load_sweep_config(master, pinned)
    assert (cached.misses, cached.hits) == (1, 1)
    assert _plain(got) == _plain(inner.load_sweep_config(master, pinned))
    cached.load_sweep_config(master, ["scheduler=step", "optimizer=sgd"])
    assert cached.misses == 2  # another option is another entry
