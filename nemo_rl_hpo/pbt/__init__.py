"""Population-based training (Jaderberg et al., 2017) as a plain ask/tell scheduler.

PBT trains ``population_size`` members side by side in rounds of ``perturbation_interval``
steps. After each round a member in the bottom ``quantile_fraction`` copies the checkpoint and
hyperparameters of a member in the top fraction (exploit) and changes them a little (explore),
so the population finds a hyperparameter *schedule*, not a constant. Nothing here imports Hydra:
``hydra_plugins`` adapts it (``hydra/sweeper=pbt``), and the rules are unit-tested on their own
(``tests/test_pbt_core.py``). The rule-by-rule definitions live in the docstrings of
``_scheduler`` (ranking, selection, order, failures, determinism) and ``_space`` (explore).

How a sweeper drives it, with ``n_jobs`` launcher slots::

    from nemo_rl_hpo.pbt import PBTConfig, PBTScheduler, RoundRecord, param_from_distribution

    space = [param_from_distribution(key, dist) for key, dist in distributions.items()]
    config = PBTConfig(population_size=4, perturbation_interval=100, num_rounds=3, seed=0,
                       synchronous=not launcher_is_async)
    pbt = PBTScheduler(config, space, checkpoint_root=sweep_dir / "checkpoints")
    # resuming: records = [RoundRecord.from_user_attrs(t.user_attrs, t.value) for t in the
    # study's finished PBT trials, ordered by datetime_complete]; keep the first run's seed;
    # pbt = PBTScheduler.from_records(config, space, records, checkpoint_root=...)
    while not pbt.finished:
        while free_slot() and (job := pbt.ask()) is not None:
            trial = study.ask(); trial.set_user_attr(...) for job.user_attrs()
            launch(job.params, resume_from=job.start_checkpoint, save_to=job.save_checkpoint,
                   steps=job.target_step)          # the trial context's resume_from,
                                                   # checkpoint_dir and steps (sweep/context.py)
        job, value, saved = wait_for_any()         # value None if the job failed
        record = pbt.tell(job.member, job.round, value, saved)
        # store record.user_attrs() on the trial; tell Optuna COMPLETE(value) or FAIL
    results = pbt.results()   # best member, its value, its schedule round by round, counts
    table = pbt.lineage()     # one row per member round, for plots

A synchronous launcher (one blocking batch at a time) sets ``synchronous=True`` and launches
every job ``ask`` returns as one batch; ``ask`` then returns None until the whole round is told.
"""

from __future__ import annotations

from nemo_rl_hpo.pbt._config import PBTConfig
from nemo_rl_hpo.pbt._proposer import PBTProposer
from nemo_rl_hpo.pbt._records import Job, RoundRecord, ScheduleStep
from nemo_rl_hpo.pbt._results import BestMember
from nemo_rl_hpo.pbt._scheduler import PBTScheduler, truncation_sets
from nemo_rl_hpo.pbt._space import (
    CategoricalParam,
    FloatParam,
    IntParam,
    Param,
    explore,
    param_from_distribution,
    perturb_value,
    sample,
    sample_value,
)

__all__ = [
    "BestMember",
    "CategoricalParam",
    "FloatParam",
    "IntParam",
    "Job",
    "PBTConfig",
    "PBTProposer",
    "PBTScheduler",
    "Param",
    "RoundRecord",
    "ScheduleStep",
    "explore",
    "param_from_distribution",
    "perturb_value",
    "sample",
    "sample_value",
    "truncation_sets",
]
