"""Per-trial config composition, cached by the trial's config-group choices.

Every launcher re-composes the whole config for every job (``load_sweep_config``): it re-reads
and re-merges each YAML file of the defaults list although, within a sweep, only the group
choices change what is read. On the default trial that costs ~80 ms per trial, most of a basic
launcher's per-trial overhead (bench/overhead.py). This loader composes once per distinct set of
group overrides and applies the value overrides (``optimizer.lr=...``) to a copy, with Hydra's
own override code, so the result is the config Hydra would have built.

Anything that could change the defaults list other than a group choice bypasses the cache:
``hydra.searchpath`` overrides and dict-valued overrides. Config files are read once per group
choice set and sweep, so editing a YAML file while a sweep runs no longer affects later trials
of an already-seen choice set (with upstream it did, one trial at a time).
"""

import copy
import threading
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

# Composed bases kept per loader; a sweep rarely has more distinct group-choice sets.
MAX_ENTRIES = 256


class CachedSweepConfigLoader:
    """Wraps Hydra's ConfigLoader; only ``load_sweep_config`` differs (it is cached)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._cache: dict[tuple[str, ...], DictConfig] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_inner", "_cache", "_lock"):
            raise AttributeError(name)
        return getattr(self._inner, name)

    def __reduce__(self) -> tuple[Any, ...]:
        """Submitit pickles the context into each job: send the loader, not the cache."""
        return (CachedSweepConfigLoader, (self._inner,))

    def load_sweep_config(
        self, master_config: DictConfig, sweep_overrides: list[str], task_only: bool = False
    ) -> Any:
        """Same contract as Hydra's: the job config for ``sweep_overrides`` on top of the run's.

        ``task_only``: just the app's keys, without the ``hydra`` node, for checking a config
        rather than running it; copying the large ``hydra`` node is most of a cache hit's cost.
        """
        if not isinstance(self._inner, ConfigLoaderImpl):
            cfg = self._inner.load_sweep_config(master_config, sweep_overrides)
            return _without_hydra(cfg) if task_only else cfg
        hydra_overrides = OmegaConf.to_container(master_config.hydra.overrides.hydra)
        assert isinstance(hydra_overrides, list)
        lines = [str(x) for x in hydra_overrides] + list(sweep_overrides)
        parsed = OverridesParser.create().parse_overrides(overrides=lines)
        split = self._split(parsed)
        if split is None:
            cfg = self._inner.load_sweep_config(master_config, sweep_overrides)
            return _without_hydra(cfg) if task_only else cfg
        structural, values = split
        key = self._key(master_config, structural)
        with self._lock:
            base = self._cache.get(key)
        if base is None:
            self.misses += 1
            base = self._inner.load_configuration(
                config_name=master_config.hydra.job.config_name,
                overrides=[str(o.input_line) for o in structural],
                run_mode=RunMode.RUN,
            )
            # deepcopy, not pickle: structured-config classes of plugins that Hydra loaded
            # outside sys.modules (submitit's SlurmQueueConf) do not pickle by reference.
            with self._lock:
                if len(self._cache) >= MAX_ENTRIES:
                    self._cache.pop(next(iter(self._cache)))
                self._cache[key] = base
        else:
            self.hits += 1
        if task_only:
            cfg = _without_hydra(base)
            ConfigLoaderImpl._apply_overrides_to_config(
                [o for o in values if not o.is_hydra_override()], cfg
            )
            return cfg
        cfg = copy.deepcopy(base)
        ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        self._record_overrides(cfg, parsed)
        OmegaConf.copy_cache(from_config=master_config, to_config=cfg)
        return cfg

    @staticmethod
    def _key(master_config: DictConfig, structural: list[Override]) -> tuple[str, ...]:
        """Cache key: the config name and the group overrides that change a group's option.

        ``scheduler=cosine`` where the run already chose cosine composes the same config as no
        override at all, so both share an entry: the sweeper's pre-launch checks (which pin
        every group) and the jobs (which name only the searched ones) compose each set once.
        """
        choices = master_config.hydra.runtime.choices
        lines = [
            str(o.input_line)
            for o in structural
            if not (
                not o.is_add()
                and not o.is_delete()
                and not o.is_force_add()
                and o.package is None
                and isinstance(o.value(), str)
                and choices.get(o.key_or_group) == o.value()
            )
        ]
        return (str(master_config.hydra.job.config_name), *lines)

    def _split(self, parsed: list[Override]) -> tuple[list[Override], list[Override]] | None:
        """(group overrides, value overrides) as Hydra's defaults list tells them apart."""
        repo = self._inner.repository
        structural: list[Override] = []
        values: list[Override] = []
        for o in parsed:
            if o.is_sweep_override():
                return None
            key = o.key_or_group
            if key.startswith("hydra.searchpath") or isinstance(o.value(), dict):
                return None
            if repo.group_exists(key):
                structural.append(o)
            else:
                values.append(o)
        return structural, values

    @staticmethod
    def _record_overrides(cfg: DictConfig, parsed: list[Override]) -> None:
        """hydra.overrides and override_dirname as a full compose writes them, in input order."""
        task = [o for o in parsed if not o.is_hydra_override()]
        with open_dict(cfg.hydra):
            cfg.hydra.overrides.hydra = [str(o.input_line) for o in parsed if o.is_hydra_override()]
            cfg.hydra.overrides.task = [str(o.input_line) for o in task]
            dirname = cfg.hydra.job.config.override_dirname
            cfg.hydra.job.override_dirname = get_overrides_dirname(
                overrides=task,
                kv_sep=dirname.kv_sep,
                item_sep=dirname.item_sep,
                exclude_keys=dirname.exclude_keys,
            )


def _without_hydra(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` without its ``hydra`` node (what a task function receives)."""
    return OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "hydra"])
