"""Config schema of ``hydra/sweeper=optuna`` (hydra-optuna-sweeper's keys plus ours) and its groups.

Registered in Hydra's ConfigStore at import, so any Hydra app finds ``hydra/sweeper=optuna``,
``hydra/sweeper/sampler=...`` and ``hydra/sweeper/pruner=...`` once the package is installed.
Kept free of optuna/torch imports: Hydra imports every plugin module at every app start.
"""

# No `from __future__ import annotations`: Hydra execs plugin modules outside sys.modules,
# where dataclasses cannot resolve string annotations.

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

_IMPL = "hydra_plugins.nemo_rl_hpo"
PROVIDER = "nemo_rl_hpo"

# Defaults every sweeper shares, written once here (the library's own defaults for the same
# settings equal these: tests/test_defaults.py).
N_JOBS = 2  # trials (member rounds) in flight at once
STORAGE_RETRY_S = 600.0  # seconds sweeper and jobs retry through a storage outage
HEARTBEAT_INTERVAL_S = 10.0  # seconds between the driver's signs of life per running trial


# ----------------------------------------------------------------------------- samplers
@dataclass
class SamplerConfig:
    _target_: str = MISSING


@dataclass
class AutoSamplerConfig(SamplerConfig):
    """Chosen by the space and budget (bench/README.md): GP where it wins, TPE elsewhere.

    GPSampler for a space without conditional parameters, at most ``gp_max_trials`` trials and
    one trial at a time (GP has no constant liar); otherwise multivariate TPE with constant liar.
    """

    _target_: str = f"{_IMPL}._samplers.auto_sampler"
    seed: int | None = None  # random seed of whichever sampler is chosen
    gp_max_trials: int = 200  # above this GP's O(n^3) fit costs seconds per trial: use TPE


@dataclass
class TPESamplerConfig(SamplerConfig):
    """Tree-structured Parzen Estimator; multivariate+group model conditional spaces jointly."""

    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None  # random seed; null: nondeterministic
    consider_prior: bool | None = None  # deprecated in Optuna 4+; null keeps Optuna's default
    prior_weight: float | None = None  # weight of the prior; null: Optuna's default (1.0)
    consider_magic_clip: bool | None = None  # null: Optuna's default
    consider_endpoints: bool | None = None  # null: Optuna's default
    n_startup_trials: int = 10  # random trials before the model is used
    n_ei_candidates: int = 24  # candidates scored per suggestion
    multivariate: bool = True  # joint density over parameters (better on correlated spaces)
    group: bool = False  # separate models per conditional sub-space: slightly worse in bench/
    warn_independent_sampling: bool | None = None  # deprecated in Optuna 4.9; null: default
    constant_liar: bool = True  # parallel trials see running ones, so proposals differ


@dataclass
class RandomSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = None  # random seed


@dataclass
class CmaEsSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.CmaEsSampler"
    x0: dict[str, Any] | None = None  # initial mean per parameter
    sigma0: float | None = None  # initial step size
    seed: int | None = None  # random seed
    n_startup_trials: int = 1  # independent trials before CMA-ES starts
    warn_independent_sampling: bool = True  # warn when a parameter falls back to random
    consider_pruned_trials: bool = False  # learn from pruned trials' last values
    restart_strategy: str | None = None  # "ipop" or "bipop" restarts, null: none
    popsize: int | None = None  # population size, null: CMA-ES default
    inc_popsize: int = -1  # population growth factor at restarts (-1: default)
    use_separable_cma: bool = False  # diagonal covariance (high dimensions)
    with_margin: bool = False  # CMA-ES with margin for discrete parameters
    lr_adapt: bool = False  # learning-rate adaptation for noisy/multimodal problems


@dataclass
class GPSamplerConfig(SamplerConfig):
    """Gaussian-process BO: strongest on small continuous spaces (≈0.5 s per trial at 100)."""

    _target_: str = "optuna.samplers.GPSampler"
    seed: int | None = None  # random seed
    n_startup_trials: int = 10  # random trials before the GP is fitted
    deterministic_objective: bool = False  # true: noise-free objective
    warn_independent_sampling: bool = False  # conditional parameters are drawn at random


@dataclass
class QMCSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.QMCSampler"
    qmc_type: str = "sobol"  # "sobol" or "halton"
    scramble: bool = False  # randomise the sequence
    seed: int | None = None  # seed used when scrambling
    warn_asynchronous_seeding: bool = True  # warn when seed is null with several workers
    warn_independent_sampling: bool = True  # warn for parameters outside the fixed space


@dataclass
class NSGAIISamplerConfig(SamplerConfig):
    """Multi-objective genetic algorithm; the Pareto front lands in the results."""

    _target_: str = "optuna.samplers.NSGAIISampler"
    population_size: int = 50  # individuals per generation
    mutation_prob: float | None = None  # null: 1 / number of parameters
    crossover_prob: float = 0.9  # probability of crossover per child
    swapping_prob: float = 0.5  # gene swap probability in uniform crossover
    seed: int | None = None  # random seed


@dataclass
class NSGAIIISamplerConfig(NSGAIISamplerConfig):
    """NSGA-III: reference-point selection, for three or more objectives."""

    _target_: str = "optuna.samplers.NSGAIIISampler"
    dividing_parameter: int = 3  # divisions of each objective axis for reference points


@dataclass
class GridSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.GridSampler"
    search_space: dict[str, Any] | None = None  # null: built from params (choice/range only)
    seed: int | None = None  # order in which grid points are visited


@dataclass
class BruteForceSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.BruteForceSampler"
    seed: int | None = None  # order of enumeration
    avoid_premature_stop: bool = False  # keep enumerating conditional branches fully


@dataclass
class MOTPESamplerConfig(SamplerConfig):
    """Removed from Optuna: selecting it explains the replacement."""

    _target_: str = f"{_IMPL}._removed.raise_motpe_removed"


# ------------------------------------------------------------------------------ pruners
@dataclass
class PrunerConfig:
    _target_: str = MISSING


@dataclass
class NopPrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class MedianPrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5  # trials that complete before any pruning
    n_warmup_steps: int = 0  # steps of a trial before it can be pruned
    interval_steps: int = 1  # check every this many reported steps
    n_min_trials: int = 1  # trials that must have reported a step to compare against


@dataclass
class PercentilePrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.PercentilePruner"
    percentile: float = 25.0  # prune below this percentile of trials at the same step (0-100)
    n_startup_trials: int = 5  # trials that complete before any pruning
    n_warmup_steps: int = 0  # steps of a trial before it can be pruned
    interval_steps: int = 1  # check every this many reported steps
    n_min_trials: int = 1  # trials that must have reported a step to compare against


@dataclass
class SuccessiveHalvingPrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"  # steps before the first rung ("auto": from the first trial)
    reduction_factor: int = 4  # keep 1/reduction_factor of trials at each rung
    min_early_stopping_rate: int = 0  # rungs skipped before stopping starts
    bootstrap_count: int = 0  # trials a rung needs before it promotes


@dataclass
class HyperbandPrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1  # minimum steps a trial gets
    max_resource: Any = "auto"  # steps of a full trial ("auto": from the first completed one)
    reduction_factor: int = 3  # keep 1/reduction_factor at each rung
    bootstrap_count: int = 0  # trials a rung needs before it promotes


@dataclass
class ThresholdPrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.ThresholdPruner"
    lower: float | None = None  # prune when the value falls below this
    upper: float | None = None  # prune when the value rises above this (e.g. diverged loss)
    n_warmup_steps: int = 0  # steps before the thresholds apply
    interval_steps: int = 1  # check every this many reported steps


@dataclass
class PatientPrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.PatientPruner"
    wrapped_pruner: Any = None  # another pruner config consulted once patience runs out
    patience: int = 3  # reported steps without improvement that are tolerated
    min_delta: float = 0.0  # improvement smaller than this does not count


@dataclass
class WilcoxonPrunerConfig(PrunerConfig):
    _target_: str = "optuna.pruners.WilcoxonPruner"
    p_threshold: float = 0.1  # prune when the trial is worse than the best with this p-value
    n_startup_steps: int = 2  # steps reported before testing starts


# ------------------------------------------------------------------------------ sweeper
@dataclass
class FidelityConfig:
    """Pause, don't kill: ASHA / asynchronous Hyperband over trial segments (docs/fidelity.md).

    ``hydra/sweeper/fidelity=asha`` (or ``hyperband``) turns it on; trials pause at rungs and
    resume from their checkpoints as new jobs.
    """

    scheduler: str = "asha"  # asha | hyperband (brackets of ASHA with later first rungs)
    step_key: str | None = None  # key of the run's length the rungs count in; null: the
    # command's max_steps_key, else grpo.max_num_steps, else max_steps (whichever the app has)
    validation_period: Any = None  # steps between validations: a number or a key; null: the
    # step key's partner (max_steps: eval_interval, grpo.max_num_steps: grpo.val_period, ...)
    min_resource: int | None = None  # first rung, in steps; null: the validation period
    max_resource: int | None = None  # last rung; null: the composed value of step_key
    reduction_factor: int = 3  # η: the top 1/η of a rung are promoted
    mode: str = "promotion"  # promotion (pause, promote later) | stopping (judge on arrival)
    brackets: int | None = None  # hyperband's brackets; null: all (asha: 1)
    min_observations: int | None = None  # sampler fits on the highest rung with this many
    # values; null: searched parameters + 1 (BOHB)
    keep_checkpoints: bool = False  # keep checkpoints of trials that can no longer be promoted
    max_paused_gb: float | None = None  # cap on what paused trials' checkpoints hold: past it,
    # the paused trials least likely to be promoted end (PRUNED, freed); null: no cap
    auto: bool = False  # true (fidelity=auto): on where it applies; off, logged, where a pruner
    # or several objectives decide instead, and under hydra/sweeper=pbt


@dataclass
class HyperbandFidelityConfig(FidelityConfig):
    scheduler: str = "hyperband"


@dataclass
class AutoFidelityConfig(FidelityConfig):
    """``hydra/sweeper/fidelity=auto``: ASHA where it applies (the embedded trials' default).

    A trial option that can pause and resume selects it; a user's explicit pruner, a
    multi-objective sweep or PBT then decides when trials stop instead, without an extra
    override (``fidelity=asha`` with a pruner stays an error: two explicit choices).
    """

    auto: bool = True


@dataclass
class WarmStartConfig:
    storage: str | None = None  # storage URL of the earlier study (null: this sweep's storage)
    study_name: str | None = None  # the earlier study; null: no warm start
    top_k: int = 5  # best trials to reuse
    mode: str = "enqueue"  # "enqueue": run its top-k configs first; "prior": add its trials


@dataclass
class BudgetConfig:
    gpu_hours: float | None = None  # no new trial once spent + in flight reach this (sacct)
    cpu_hours: float | None = None  # the same in CPU-hours (CPU-only machines)


@dataclass
class ConfirmConfig:
    """Confirmation on test seeds when the search ends (nemo_rl_hpo/sweep/confirm.py).

    Off by default: it costs top_k x seeds full-length runs on top of n_trials (15 more runs on
    the 20-trial default sweep with top_k=3, seeds=5), a cost a user must choose; the benchmark
    of confirmed against unconfirmed picks at equal cost decides whether a default pays.
    """

    top_k: int = 0  # best configurations re-run on test seeds when the search ends; 0: off
    seeds: int = 5  # test seeds per configuration
    seed_key: str | None = None  # the config key that takes the seed; null: hydra.sweeper.seed_key
    first_seed: int = 1000  # test seeds first_seed, first_seed+1, ...; disjoint from tuning seeds
    overrides: list[str] = field(default_factory=list)  # test-only settings, e.g. [data.split=test]


@dataclass
class OptunaSweeperConf:
    """hydra-optuna-sweeper's schema, plus pruner/timeout/objectives/retry_failed/warm_start."""

    _target_: str = f"{_IMPL}.optuna_sweeper.OptunaSweeper"
    _recursive_: bool = False  # the sweeper builds sampler/pruner itself (grid needs params)
    defaults: list[Any] = field(
        default_factory=lambda: [
            "_self_",
            {"sampler": "auto"},
            {"pruner": "nop"},
            {"fidelity": None},
        ]
    )

    sampler: Any = MISSING  # group hydra/sweeper/sampler (default auto: GP or TPE, see above)
    pruner: Any = MISSING  # group hydra/sweeper/pruner (default nop: no pruning)
    fidelity: Any = None  # group hydra/sweeper/fidelity (asha | hyperband; default: off)
    direction: Any = "minimize"  # minimize | maximize, or a list for multi-objective
    storage: Any = None  # null: SQLite in the sweep dir (journal file under SLURM)
    study_name: str | None = None  # null: the job name (e.g. "train")
    n_trials: int = 20  # trials in the study in total (a resumed sweep tops up to this)
    n_jobs: int = N_JOBS  # trials in flight at once (the basic launcher runs one at a time)
    search_space: dict[str, Any] | None = None  # removed upstream: use params
    params: dict[str, Any] | None = None  # key: override grammar (choice/range/interval/tag)
    max_failure_rate: float = 0.0  # abort when more than this fraction of trials fail
    custom_search_space: str | None = None  # dotted path of fn(cfg, trial) adding parameters
    check: str | None = None  # dotted path of fn(cfg) raising on a value a trial cannot run with:
    # called before any job on the config at each end of every searched range, in the sweeper's
    # process: it checks values, not the machine (SLURM trials run elsewhere)
    timeout: float | None = None  # seconds; no new trial starts after this
    objectives: Any = None  # metric names (or {name, weight}) picked from a returned mapping
    retry_failed: int = 0  # times a failed configuration is enqueued again
    repeats: int = 1  # seeds per configuration: n jobs, the trial's value their aggregate
    seed_key: str = "seed"  # the app's config key each repeat sets to its seed (0..repeats-1)
    aggregate: str = "mean"  # mean | median | min | max of the seeds' values (and reports)
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)  # study_name: enable
    budget: BudgetConfig = field(default_factory=BudgetConfig)  # GPU-/CPU-hours of the study
    confirm: ConfirmConfig = field(default_factory=ConfirmConfig)  # top_k > 0: test-seed re-runs
    heartbeat_interval: float = HEARTBEAT_INTERVAL_S  # the driver's signs of life per trial
    storage_retry_s: float = STORAGE_RETRY_S  # seconds sweeper and jobs retry through an outage
    write_report: bool = True  # write report/ (plots, importance) at the end of the sweep


@dataclass
class OptunaMOSweeperConf(OptunaSweeperConf):
    """Multi-objective preset: NSGA-II on validation loss and training time (Pareto front)."""

    defaults: list[Any] = field(
        default_factory=lambda: [
            "_self_",
            {"sampler": "nsgaii"},
            {"pruner": "nop"},
            {"fidelity": None},
        ]
    )
    direction: Any = field(default_factory=lambda: ["minimize", "minimize"])
    objectives: Any = field(default_factory=lambda: ["val_loss", "train_time_s"])


_SAMPLERS: dict[str, type[SamplerConfig]] = {
    "auto": AutoSamplerConfig,
    "tpe": TPESamplerConfig,
    "random": RandomSamplerConfig,
    "cmaes": CmaEsSamplerConfig,
    "gp": GPSamplerConfig,
    "qmc": QMCSamplerConfig,
    "nsgaii": NSGAIISamplerConfig,
    "nsgaiii": NSGAIIISamplerConfig,
    "grid": GridSamplerConfig,
    "bruteforce": BruteForceSamplerConfig,
    "motpe": MOTPESamplerConfig,
}
_PRUNERS: dict[str, type[PrunerConfig]] = {
    "nop": NopPrunerConfig,
    "median": MedianPrunerConfig,
    "percentile": PercentilePrunerConfig,
    "successive_halving": SuccessiveHalvingPrunerConfig,
    "hyperband": HyperbandPrunerConfig,
    "threshold": ThresholdPrunerConfig,
    "patient": PatientPrunerConfig,
    "wilcoxon": WilcoxonPrunerConfig,
}

cs = ConfigStore.instance()
cs.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider=PROVIDER)
cs.store(group="hydra/sweeper", name="optuna_mo", node=OptunaMOSweeperConf, provider=PROVIDER)
for _name, _node in _SAMPLERS.items():
    cs.store(group="hydra/sweeper/sampler", name=_name, node=_node, provider=PROVIDER)
for _name, _pnode in _PRUNERS.items():
    cs.store(group="hydra/sweeper/pruner", name=_name, node=_pnode, provider=PROVIDER)
cs.store(group="hydra/sweeper/fidelity", name="asha", node=FidelityConfig, provider=PROVIDER)
cs.store(
    group="hydra/sweeper/fidelity",
    name="hyperband",
    node=HyperbandFidelityConfig,
    provider=PROVIDER,
)
cs.store(group="hydra/sweeper/fidelity", name="auto", node=AutoFidelityConfig, provider=PROVIDER)


@dataclass
class PBTSweeperConf:
    """Population-based training: member rounds are trials of one Optuna study."""

    _target_: str = f"{_IMPL}.pbt_sweeper.PBTSweeper"
    _recursive_: bool = False
    # The fidelity group is here so a trial option that selects fidelity=auto also composes
    # under PBT, which schedules its members itself: auto is ignored, asha/hyperband an error.
    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"fidelity": None}])
    population_size: int = 4  # members trained side by side
    perturbation_interval: int = 100  # training steps per round (exploit/explore after each)
    num_rounds: int | None = 4  # rounds per member (budget = population x rounds x interval)
    total_steps: int | None = None  # alternative budget: steps per member (multiple of interval)
    quantile_fraction: float = 0.25  # bottom fraction that copies a top member each round
    resample_probability: float = 0.25  # chance a parameter is redrawn instead of perturbed
    perturbation_factors: list[float] = field(default_factory=lambda: [0.8, 1.2])  # multipliers
    synchronous: bool | None = None  # round barrier; null: when n_jobs < population_size
    max_retries: int = 2  # re-runs of a failed member round before the member retires
    seed: int | None = None  # PBT's random decisions (kept in the study for resumes)
    direction: Any = "minimize"  # minimize | maximize the objective
    objectives: Any = None  # metric name picked from a returned mapping, e.g. [val_loss]
    storage: Any = None  # null: SQLite in the sweep dir (journal file under SLURM)
    study_name: str | None = None  # null: the job name
    storage_retry_s: float = STORAGE_RETRY_S  # seconds sweeper and jobs retry through an outage
    n_jobs: int = N_JOBS  # member rounds in flight at once
    timeout: float | None = None  # seconds; no new member round starts after this
    heartbeat_interval: float = HEARTBEAT_INTERVAL_S  # the driver's signs of life per round
    params: dict[str, Any] | None = None  # same grammar as the Optuna sweeper
    check: str | None = None  # fn(cfg) run on each end of every range before any job (as optuna)
    budget: BudgetConfig = field(default_factory=BudgetConfig)  # no new round once spent
    write_report: bool = True  # write report/ at the end
    fidelity: Any = None  # only fidelity=auto (a trial's default), which PBT leaves off


cs.store(group="hydra/sweeper", name="pbt", node=PBTSweeperConf, provider=PROVIDER)
