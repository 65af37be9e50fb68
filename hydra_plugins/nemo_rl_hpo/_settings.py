"""The sweepers' settings: ``hydra.sweeper.*`` read and checked once, into typed fields.

Every default is the schema's (``config.py``), so a key has one default wherever it is read.
A bad value is one :class:`SweepConfigError` line naming the key and the fix, raised here
before anything is composed, opened or launched.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hydra.errors import CompactHydraException
from omegaconf import DictConfig, ListConfig, OmegaConf

from hydra_plugins.nemo_rl_hpo.config import OptunaSweeperConf, PBTSweeperConf, WarmStartConfig
from nemo_rl_hpo.errors import named
from nemo_rl_hpo.pbt import PBTConfig
from nemo_rl_hpo.sweep.budget import Budget, BudgetError
from nemo_rl_hpo.sweep.confirm import Confirm, ConfirmConfigError
from nemo_rl_hpo.sweep.core import SweepSettings
from nemo_rl_hpo.sweep.objectives import ObjectiveError, parse_objectives

log = logging.getLogger(__name__)


class SweepConfigError(CompactHydraException):
    """Bad sweeper input: Hydra prints just this one line, before any job starts."""


SWEEPER_KEYS = "hydra.sweeper."  # where the library's parameters live in a Hydra config


def config_error(error: BaseException, prefix: str = SWEEPER_KEYS) -> SweepConfigError:
    """A library error as the one line a Hydra user sees: the same sentence, with the
    ``hydra.sweeper.*`` keys its parameters came from (``nemo_rl_hpo/errors.py``)."""
    return SweepConfigError(named(error, prefix))


def schema_defaults(schema: type) -> dict[str, Any]:
    """Each key's default in a sweeper schema of config.py (None where it has none)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(schema):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
        else:
            out[f.name] = None
    return out


class _Reader:
    """``hydra.sweeper`` as plain Python values, the schema's default for a key not given."""

    def __init__(self, cfg: Mapping[str, Any], schema: type) -> None:
        self.cfg = cfg
        self.defaults = schema_defaults(schema)

    def __call__(self, key: str) -> Any:
        value = self.cfg.get(key, self.defaults.get(key))
        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)  # a nested schema's defaults (warm_start)
        return value

    def node(self, key: str) -> Any:
        """A key as given (a DictConfig stays one: samplers and pruners are instantiated)."""
        return self.cfg.get(key, self.defaults.get(key))


@dataclass
class CommonSettings:
    """What both sweepers read: parallelism, objectives, storage, search space, outputs."""

    n_jobs: int
    timeout: float | None
    heartbeat_interval: float
    directions: list[str]
    objectives: list[str]
    storage: str | None
    storage_retry_s: float  # how long sweeper and jobs retry through a storage outage
    study_name: str | None
    params: Mapping[str, Any]
    check: str | None
    write_report: bool
    budget: Budget  # GPU-/CPU-hours after which no new job starts
    raw: dict[str, Any]  # every key as given (the results file records it, storage masked)

    def loop_settings(self) -> SweepSettings:
        """The trial loop's settings (each sweeper's budget and failure rules)."""
        raise NotImplementedError

    def loop(self, *, n_trials: int, max_failure_rate: float, retry_failed: int) -> SweepSettings:
        return SweepSettings(
            n_trials=n_trials,
            n_jobs=self.n_jobs,
            timeout=self.timeout,
            max_failure_rate=max_failure_rate,
            retry_failed=retry_failed,
            heartbeat_interval=self.heartbeat_interval,
            stale_after=max(6 * self.heartbeat_interval, 30.0),
            budget=self.budget,
        )


@dataclass
class OptunaSettings(CommonSettings):
    n_trials: int
    max_failure_rate: float
    retry_failed: int
    weights: list[float] | None
    sampler: Any  # the sampler's config node (instantiated by samplers.make_sampler)
    pruner: Any
    pruner_config: Any  # the pruner's config as plain values (the jobs rebuild it)
    custom_search_space: str | None
    warm_start: dict[str, Any]  # storage, study_name (None: no warm start), top_k, mode
    fidelity: dict[str, Any] | None  # hydra/sweeper/fidelity as plain values (_fidelity.py)
    repeats: Any  # seeds per configuration (checked by sweep/repeats.Repeats.from_config)
    seed_key: Any
    aggregate: Any
    confirm: Confirm  # the confirmation stage on test seeds (sweep/confirm.py)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> OptunaSettings:
        get = _Reader(cfg, OptunaSweeperConf)
        n_trials = get("n_trials")
        if not isinstance(n_trials, int) or n_trials < 1:
            raise SweepConfigError(
                f"hydra.sweeper.n_trials must be at least 1, but got {n_trials!r}."
            )
        common = _common(get)
        rate = get("max_failure_rate")
        retry = get("retry_failed")
        if not _is_num(rate) or not 0.0 <= rate <= 1.0:
            raise SweepConfigError(
                f"hydra.sweeper.max_failure_rate must be in [0, 1], but got {rate!r}."
            )
        if not isinstance(retry, int) or retry < 0:
            raise SweepConfigError(
                f"hydra.sweeper.retry_failed must be 0 or more, but got {retry!r}."
            )
        objectives, weights = _objectives(get, common["directions"])
        if get("search_space") is not None:
            raise SweepConfigError(
                "hydra.sweeper.search_space was removed in hydra-optuna-sweeper 1.2; "
                "write the space in hydra.sweeper.params with choice()/interval()/range()."
            )
        common["objectives"] = objectives
        confirm = _confirm(get, common["directions"])
        return cls(
            **common,
            confirm=confirm,
            n_trials=n_trials,
            max_failure_rate=float(rate),
            retry_failed=retry,
            weights=weights,
            sampler=get.node("sampler"),
            pruner=get.node("pruner"),
            pruner_config=get("pruner"),
            custom_search_space=get("custom_search_space") or None,
            warm_start={**schema_defaults(WarmStartConfig), **(get("warm_start") or {})},
            fidelity=get("fidelity"),
            repeats=get("repeats"),
            seed_key=get("seed_key"),
            aggregate=get("aggregate"),
        )

    def loop_settings(self) -> SweepSettings:
        return self.loop(
            n_trials=self.n_trials,
            max_failure_rate=self.max_failure_rate,
            retry_failed=self.retry_failed,
        )


@dataclass
class PBTSettings(CommonSettings):
    population_size: int
    perturbation_interval: int
    num_rounds: int | None
    total_steps: int | None
    quantile_fraction: float
    resample_probability: float
    perturbation_factors: tuple[float, ...]
    synchronous: bool | None
    max_retries: int
    seed: int | None

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> PBTSettings:
        get = _Reader(cfg, PBTSweeperConf)
        common = _common(get)
        if len(common["directions"]) != 1:
            raise SweepConfigError(
                "hydra.sweeper.direction: PBT ranks members by one objective; give one direction."
            )
        objectives, _ = _objectives(get, common["directions"])
        common["objectives"] = objectives
        fidelity = get("fidelity")
        if fidelity and not fidelity.get("auto"):
            raise SweepConfigError(
                "hydra/sweeper/fidelity: PBT schedules its members itself; pause/resume "
                "ASHA runs under hydra/sweeper=optuna (drop the fidelity override)."
            )
        try:
            return cls(
                **common,
                population_size=int(get("population_size")),
                perturbation_interval=int(get("perturbation_interval")),
                num_rounds=get("num_rounds"),
                total_steps=get("total_steps"),
                quantile_fraction=float(get("quantile_fraction")),
                resample_probability=float(get("resample_probability")),
                perturbation_factors=tuple(float(f) for f in get("perturbation_factors")),
                synchronous=get("synchronous"),
                max_retries=int(get("max_retries")),
                seed=get("seed"),
            )
        except (ValueError, TypeError) as e:
            raise SweepConfigError(f"hydra.sweeper: {e}") from None

    def loop_settings(self) -> SweepSettings:
        # A failed round is PBT's own business (retried, then the member retires): the loop
        # never aborts a population, and its budget is the scheduler's rounds.
        return self.loop(n_trials=0, max_failure_rate=1.0, retry_failed=0)

    def pbt_config(self, seed: int | None, n_jobs: int) -> PBTConfig:
        """The scheduler's config; ``seed``: the study's (a resumed population keeps its own)."""
        try:
            return PBTConfig(
                population_size=self.population_size,
                perturbation_interval=self.perturbation_interval,
                num_rounds=self.num_rounds,
                total_steps=self.total_steps,
                direction=self.directions[0],
                quantile_fraction=self.quantile_fraction,
                resample_probability=self.resample_probability,
                perturbation_factors=self.perturbation_factors,
                seed=seed,
                synchronous=self.is_synchronous(n_jobs),
                max_retries=self.max_retries,
            )
        except (ValueError, TypeError) as e:
            raise SweepConfigError(f"hydra.sweeper: {e}") from None

    def is_synchronous(self, n_jobs: int) -> bool:
        """Asynchronous PBT needs the population running side by side.

        With fewer slots than members, the first member to end a round would be ranked against
        itself only and never exploit (bench/pbt_vs_optuna.py: async 1.3x worse at n_jobs=1), so
        rounds then wait for the whole population.
        """
        if self.synchronous is not None:
            return bool(self.synchronous)
        return n_jobs < self.population_size


def _common(get: _Reader) -> dict[str, Any]:
    n_jobs = get("n_jobs")
    timeout = get("timeout")
    hb = get("heartbeat_interval")
    if not isinstance(n_jobs, int) or n_jobs < 1:
        raise SweepConfigError(
            f"hydra.sweeper.n_jobs must be at least 1 (trials in flight), but got {n_jobs!r}."
        )
    if timeout is not None and (not _is_num(timeout) or timeout <= 0):
        raise SweepConfigError(
            f"hydra.sweeper.timeout must be a positive number of seconds or null, "
            f"but got {timeout!r}."
        )
    if not _is_num(hb) or hb <= 0:
        raise SweepConfigError(
            f"hydra.sweeper.heartbeat_interval must be positive seconds, but got {hb!r}."
        )
    storage = get("storage")
    if storage is not None and not isinstance(storage, str):
        raise SweepConfigError(
            f"hydra.sweeper.storage must be a URL string or null, got {type(storage).__name__}."
        )
    retry_s = get("storage_retry_s")
    if not _is_num(retry_s) or retry_s < 0:
        raise SweepConfigError(
            f"hydra.sweeper.storage_retry_s must be 0 or more seconds, but got {retry_s!r}."
        )
    raw_budget = get("budget")
    if dataclasses.is_dataclass(raw_budget) and not isinstance(raw_budget, type):
        raw_budget = dataclasses.asdict(raw_budget)  # the schema's default
    if raw_budget is not None and not isinstance(raw_budget, Mapping):
        raise SweepConfigError(
            "hydra.sweeper.budget must be a mapping like {gpu_hours: 100} or null, "
            f"got {raw_budget!r}."
        )
    try:
        budget = Budget.from_mapping(raw_budget, where="hydra.sweeper.budget")
    except BudgetError as e:
        raise SweepConfigError(str(e)) from None
    params = get("params") or {}
    if not isinstance(params, Mapping):
        raise SweepConfigError(
            f"hydra.sweeper.params must be a mapping of key: grammar, got {type(params).__name__}."
        )
    return {
        "n_jobs": n_jobs,
        "timeout": float(timeout) if timeout is not None else None,
        "heartbeat_interval": float(hb),
        "directions": _directions(get("direction")),
        "objectives": [],
        "storage": storage,
        "storage_retry_s": float(retry_s),
        "study_name": get("study_name"),
        "params": params,
        "check": str(get("check")) if get("check") else None,
        "write_report": bool(get("write_report")),
        "budget": budget,
        "raw": {k: get(k) for k in get.cfg if k != "_target_"},
    }


def _confirm(get: _Reader, directions: list[str]) -> Confirm:
    raw = get("confirm")
    if dataclasses.is_dataclass(raw) and not isinstance(raw, type):
        raw = dataclasses.asdict(raw)
    if not isinstance(raw, Mapping):
        raise SweepConfigError(
            f"hydra.sweeper.confirm must be a mapping (top_k, seeds, ...), got {raw!r}."
        )
    seed_key = get("seed_key")
    try:
        confirm = Confirm.from_config(raw, seed_key if isinstance(seed_key, str) else "seed")
    except ConfirmConfigError as e:
        raise config_error(e) from None
    if confirm.active and len(directions) != 1:
        raise SweepConfigError(
            f"hydra.sweeper.confirm.top_k={confirm.top_k}: confirmation ranks configurations by "
            "one objective, but this sweep has several; set confirm.top_k=0."
        )
    return confirm


def _directions(raw: Any) -> list[str]:
    items = raw if isinstance(raw, list) else [raw]
    out: list[str] = []
    for d in items:
        name = str(getattr(d, "name", d)).lower()
        if name not in ("minimize", "maximize"):
            raise SweepConfigError(
                f"hydra.sweeper.direction: {d!r} is not a direction; use minimize or maximize "
                "(or a list of them for several objectives)."
            )
        out.append(name)
    if not out:
        raise SweepConfigError("hydra.sweeper.direction must name at least one direction.")
    return out


def _objectives(get: _Reader, directions: list[str]) -> tuple[list[str], list[float] | None]:
    try:
        names, weights = parse_objectives(get("objectives"))
    except ObjectiveError as e:
        raise config_error(e) from None
    expected = 1 if weights is not None else len(directions)
    if weights is not None and len(directions) != 1:
        raise SweepConfigError(
            "hydra.sweeper.objectives with weights make one weighted objective, but "
            f"hydra.sweeper.direction has {len(directions)} entries; give one direction."
        )
    if names and weights is None and len(names) < expected:
        raise SweepConfigError(
            f"hydra.sweeper.objectives names {len(names)} metric(s) {names} but "
            f"hydra.sweeper.direction has {len(directions)}; give one objective per direction."
        )
    if names and weights is None and len(names) > expected:
        # Metrics are listed in priority order: a single-objective sweep of an app whose
        # config lists [val_loss, train_time_s] optimizes val_loss.
        log.info("optimizing the first %d of objectives %s", expected, names)
        names = names[:expected]
    return names, weights


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
