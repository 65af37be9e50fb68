"""Replay sweeps on a learning-curve table with a simulated clock: many seeds in seconds.

    python bench/simulate.py --table bench/data/grpo.jsonl.gz --contenders random,default --seeds 20
    python bench/simulate.py --table bench/data/supervised.jsonl.gz \\
        --contenders random,default,tpe_indep,gp,median,hyperband --seeds 20 --budgets 30,60
    python bench/simulate.py --table ... --contenders random,default --trials 20,50,100  # by trials
    python bench/simulate.py --table bench/data/supervised.jsonl.gz --contenders random,pbt
    python bench/simulate.py --list            # the contenders and their Hydra overrides

A contender is the Hydra overrides a user would type (``hydra/sweeper/sampler=random``,
``hydra/sweeper/pruner=median``, ``hydra.sweeper.repeats=2``): the sweeper's config is composed
with Hydra's compose API for ``-m trial=<table's trial>`` and the sweep is built by the project's
own code (``_search_space.build_space``, ``_samplers.make_sampler``/``make_pruner``,
``sweep.proposer.OptunaProposer``). What is simulated, and only that:

- the launcher and the clock: a discrete-event loop with ``n_jobs`` workers calls the Proposer
  protocol (``ask`` while a worker is free, ``tell`` with the trial's record once its job ended)
  as ``sweep/core.AsyncSweep`` does; a validation segment takes the CPU seconds the table
  recorded for it;
- the job's work: reading its curve. At every validation the job calls the real
  ``nemo_rl_hpo.trial.report`` and ``should_prune`` (so pruners, and seed repeats'
  aggregate-and-prune in ``sweep/repeats.py``, run as in a live job), and at its end the real
  ``sweep/job.on_job_end``. The one seam: the job finds its trial in the in-memory study
  (``nemo_rl_hpo.sweep.context.open_trial`` returns it) instead of opening the storage URL.

PBT contenders (``hydra/sweeper=pbt``, :func:`simulate_pbt`) drive the real population
(``nemo_rl_hpo.pbt.PBTProposer`` around ``PBTScheduler``, settings from ``PBTSettings``) through
the same simulated launcher. A table has no curve for a member that changes hyperparameters
mid-run, so an exploit is replayed by the tabular approximation of ``_pbt_curve.py`` (by
default Syne Tune's rule: from the exploit step on, the member reads the curve of the table
configuration nearest to its explored hyperparameters; ``--pbt-mode`` picks another;
``bench/pbt_exploit_check.py`` measures each against live exploits). One population per budget
(``{population}`` members); a member's true quality is its schedule replayed on the test seeds.

A sampled configuration maps to the nearest configuration of the table: fewest categorical
mismatches first (group options and choices compared exactly), then the Euclidean distance of
the numeric keys in [0, 1] (log scale where searched as log). The distances are reported.
Each simulation seed ``i`` is a sampler seed ``i`` and a split of the table's seeds: one test
seed (rotating) that the sweep never sees, the rest the tuning pool; each evaluation draws its
run's seed from the pool. The *true* quality of a configuration is its mean final objective
over the test seeds (Eimer et al., ICML 2023: separate tuning and test seeds).
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

import _common as c  # noqa: E402
import _confirm_stage  # noqa: E402
import _pbt_curve as pc  # noqa: E402
import curves  # noqa: E402
from _nearest import Nearest, active, parse_overrides  # noqa: E402

# name -> Hydra overrides of `python train.py -m trial=<trial>`. The trials select
# hydra/sweeper/fidelity=auto (random proposals under pause/resume ASHA), so "default" is that;
# a contender without pausing removes it (~hydra/sweeper/fidelity). "auto": the auto sampler
# with every trial full length (independent TPE on these conditional spaces); the default
# before the flip was multivariate TPE, full length: today's "tpe".
_FULL = "~hydra/sweeper/fidelity"
CONTENDERS: dict[str, list[str]] = {
    "default": [],
    "auto": [_FULL],
    "random": ["hydra/sweeper/sampler=random", _FULL],
    "tpe": ["hydra/sweeper/sampler=tpe", _FULL],
    "tpe_indep": ["hydra/sweeper/sampler=tpe", "hydra.sweeper.sampler.multivariate=false", _FULL],
    "tpe_group": ["hydra/sweeper/sampler=tpe", "hydra.sweeper.sampler.group=true", _FULL],
    "tpe_startup5": [
        "hydra/sweeper/sampler=tpe",
        "hydra.sweeper.sampler.n_startup_trials=5",
        _FULL,
    ],
    "gp": ["hydra/sweeper/sampler=gp", _FULL],
    # a pruner turns fidelity=auto off by itself (hydra_plugins/nemo_rl_hpo/_fidelity.py)
    "median": ["hydra/sweeper/pruner=median"],
    "median_w30": ["hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_warmup_steps=30"],
    "hyperband": ["hydra/sweeper/pruner=hyperband"],
    "sha": ["hydra/sweeper/pruner=successive_halving"],
    "random_sha": ["hydra/sweeper/sampler=random", "hydra/sweeper/pruner=successive_halving"],
    "random_hyperband": ["hydra/sweeper/sampler=random", "hydra/sweeper/pruner=hyperband"],
    "repeats2": ["hydra.sweeper.repeats=2", _FULL],
    "asha": ["hydra/sweeper/fidelity=asha"],  # the auto sampler: random under fidelity
    "random_asha": ["hydra/sweeper/sampler=random", "hydra/sweeper/fidelity=asha"],
    # ASHA with the rung-fitted TPE (what the auto sampler chose under fidelity before the flip)
    "tpe_asha": ["hydra/sweeper/sampler=tpe", "hydra/sweeper/fidelity=asha"],
    "hyperband_pause": ["hydra/sweeper/fidelity=hyperband"],
    "random_hyperband_pause": ["hydra/sweeper/sampler=random", "hydra/sweeper/fidelity=hyperband"],
    "tpe_hyperband_pause": ["hydra/sweeper/sampler=tpe", "hydra/sweeper/fidelity=hyperband"],
    # PBT (hydra/sweeper=pbt): one population per budget B of full runs; {population} is the
    # largest multiple of n_jobs <= 0.8 B (--pbt-fill; members train the full length in
    # synchronous rounds: the barrier idles workers, and a population of B members overran)
    "pbt": ["hydra/sweeper=pbt", "hydra.sweeper.population_size={population}"],
    "pbt4": ["hydra/sweeper=pbt"],  # its defaults: 4 members x 4 rounds of 100 steps
}
# Keys a contender holds at the trial's default configuration (its sampled value, and the
# conditional keys of other options, are dropped before the nearest-configuration mapping).
# `pbt_fixed_groups` holds the groups whose state a checkpoint cannot carry across options (an
# Adam checkpoint does not load into SGD, a cosine schedule's state not into a step schedule):
# the only PBT of this space that runs live on the supervised trial. `random_fixed_groups` is
# its control: random search on the same subspace (the default holds the table's best options).
HELD: dict[str, list[str]] = {
    "pbt_fixed_groups": ["optimizer", "scheduler"],
    "random_fixed_groups": ["optimizer", "scheduler"],
}
CONTENDERS["pbt_fixed_groups"] = CONTENDERS["pbt"]
CONTENDERS["random_fixed_groups"] = CONTENDERS["random"]


# --- the table --------------------------------------------------------------------------------


@dataclass
class Run:
    """One record of the table: a configuration's run on one seed."""

    steps: list[int]  # validation steps, in order
    values: list[float]  # the objective at each
    cpu: list[float]  # CPU seconds of the segment ending at each
    metrics: list[dict[str, float]]  # every validation metric at each
    final: dict[str, float]  # what the trial function returned
    error: str | None


@dataclass
class Table:
    kind: curves.TrialKind
    runs: dict[tuple[str, int], Run]
    overrides: dict[str, list[str]]  # key -> overrides
    seeds: list[int]
    default_key: str
    fixed: list[str] = field(default_factory=list)  # the build's --set overrides
    full_run_s: float = 0.0  # median CPU seconds of a full-length run
    pbt_mode: str = "jump"  # how a PBT member's curve joins after an exploit (_pbt_curve)
    pbt_fill: float = 0.8  # a PBT population: n_jobs x floor(pbt_fill x budget / n_jobs)

    @property
    def sign(self) -> float:
        """+1: lower is better (regret = value - best); -1 for maximized objectives."""
        return 1.0 if self.kind.direction == "minimize" else -1.0

    def keys(self) -> list[str]:
        return [k for k in self.overrides if all((k, s) in self.runs for s in self.seeds)]

    @property
    def end_step(self) -> int:
        return max(max(r.steps) for r in self.runs.values() if r.steps)

    def curve(self, key: str, seed: int) -> tuple[list[int], list[float]]:
        run = self.runs[(key, seed)]
        return run.steps, run.values

    def final(self, key: str, seed: int) -> float:
        schedule = pc.parse_key(key)
        if schedule is not None:  # a PBT member: its schedule replayed on this seed
            maximize = self.kind.direction == "maximize"
            return pc.final(self.curve, schedule, seed, self.end_step, self.pbt_mode, maximize)
        run = self.runs[(key, seed)]
        if run.error or not run.values:
            return math.inf * self.sign  # a failed run is the worst there is
        return run.values[-1]

    def true_quality(self, key: str, test_seeds: Sequence[int]) -> float:
        return statistics.fmean(self.final(key, s) for s in test_seeds)


def load_table(path: Path, limit: int = 0) -> Table:
    """The table's records (only its first ``limit`` when given: a table that grew since a
    result was made still reproduces it)."""
    records = curves.read_table(path)
    if limit:
        records = records[:limit]
    if not records:
        raise SystemExit(f"{path}: no records")
    kind = curves.TRIALS[records[0]["trial"]]
    runs: dict[tuple[str, int], Run] = {}
    overrides: dict[str, list[str]] = {}
    for r in records:
        steps = sorted((int(s) for s in r["curve"]), key=int)
        cpu_by_step = {int(seg["step"]): float(seg["cpu_s"]) for seg in r["segments"]}
        # A step-0 validation (GRPO's warm start) is no report: its seconds go to the first one.
        reported = [s for s in steps if s > 0]
        cpu = [cpu_by_step.get(s, 0.0) for s in reported]
        if reported and 0 in cpu_by_step:
            cpu[0] += cpu_by_step[0]
        if cpu:
            cpu[-1] += float(r["tail"]["cpu_s"])
        runs[(r["key"], int(r["seed"]))] = Run(
            steps=reported,
            values=[float(r["curve"][str(s)]) for s in reported],
            cpu=cpu,
            metrics=[r["val"][str(s)] for s in reported],
            final=dict(r["final"]),
            error=r["error"],
        )
        overrides.setdefault(r["key"], r["overrides"])
    seeds = sorted({s for _, s in runs})
    table = Table(
        kind, runs, overrides, seeds, records[0]["key"], list(records[0].get("fixed", []))
    )
    full = [sum(run.cpu) for run in runs.values() if not run.error]
    table.full_run_s = statistics.median(full)
    return table


# --- nearest configuration --------------------------------------------------------------------


def space_spec(space: Any) -> list[dict[str, Any]]:
    """The project's search space as plain data, for ``_nearest`` and the peers' venv."""
    from optuna.distributions import CategoricalDistribution

    from nemo_rl_hpo.search.grammar import format_value

    spec = []
    for p in space.params:
        d = p.distribution
        cond = space.conditions.get(p.key)
        entry: dict[str, Any] = {"key": p.key}
        if isinstance(d, CategoricalDistribution):
            entry.update(kind="categorical", choices=[format_value(c) for c in d.choices])
        else:
            is_int = type(d).__name__ == "IntDistribution"
            entry.update(
                kind="int" if is_int else "float", low=d.low, high=d.high, log=d.log, step=d.step
            )
        if cond is not None:
            entry["condition"] = {"group": cond.group, "options": sorted(cond.options)}
        spec.append(entry)
    return spec


# --- one simulated sweep ----------------------------------------------------------------------


@dataclass(order=True)
class _Event:
    time: float
    order: int
    job: Any = field(compare=False)


@dataclass
class _Job:
    number: int
    trial_id: int
    context: str  # the JSON trial context, as the launcher puts it in the job's environment
    run: Run
    segs: list[int]  # indices of the validations this job runs to (a segment, under fidelity)
    index: int = 0  # which seed of a repeated configuration
    seg: int = 0  # position in segs
    scale: float = 1.0  # simulated seconds per recorded second (1: the table's clock)


@dataclass
class SweepResult:
    contender: str
    seed: int
    test_seeds: list[int]
    finished: list[dict[str, Any]]  # per trial: time, number, state, value, key
    incumbents: list[tuple[float, str]]  # (time, key) whenever the incumbent changes
    end_time: float
    distances: list[tuple[int, float]]
    evals: int
    segments: int
    budget_trials: int = 0
    budget: float | None = None  # a PBT population sized for this budget (full runs) only
    # per trial: number, key, state, value, rungs [[step, value], ...], end (fidelity's reason)
    trials: list[dict[str, Any]] = field(default_factory=list)
    # every job launched (the first seed's, under repeats): (time, number, from step, to step)
    launches: list[tuple[float, int, int, int]] = field(default_factory=list)
    # the confirmation stage (hydra.sweeper.confirm): its candidates, pick, and total
    # worker-seconds of the run (search + confirmation) / the budget's
    confirm: dict[str, Any] | None = None


# A segment's simulated seconds from a clock other than the table's: (table key, from step, to
# step, simulated time it starts) -> seconds, or None for the table's own (bench/replay_check.py
# ends each segment when the live sweep's job ended).
SegmentSeconds = Callable[[str, int, int, float], "float | None"]


def simulate_one(
    table: Table,
    space: Any,
    nearest: Nearest,
    composer: curves.Composer,
    contender: str,
    overrides: list[str],
    seed: int,
    n_jobs: int,
    budget_s: float | None,
    n_trials: int,
    test_seeds: list[int],
    held: dict[str, str] | None = None,
    sweeper_config: Mapping[str, Any] | None = None,
    seconds: SegmentSeconds | None = None,
    job_start_s: float = 0.0,
    confirm_seeds: Sequence[int] = (),
    batch_s: float = 0.0,
) -> SweepResult:
    """One sweep of one contender on the table, with simulated time.

    ``sweeper_config``: a recorded ``hydra.sweeper`` (a results JSON's ``sweep_config``) in
    place of the one ``overrides`` compose, to replay that sweep; ``seconds``: the clock (see
    ``SegmentSeconds``); ``job_start_s``: simulated seconds every job spends before its first
    step (a segment is a job: pausing costs one per promotion), which the table does not hold.
    ``confirm_seeds``: the table seeds a confirmation stage (``hydra.sweeper.confirm``) runs
    on; with one, the search stops ``top_k x seeds`` full runs' worth before ``budget_s`` and
    the stage (``_confirm_stage.replay``) makes the pick.

    Built as ``hydra_plugins/nemo_rl_hpo/_impl.py`` builds a live sweep (settings, sampler,
    pruner, repeats, the fidelity proposer); the loop below is ``AsyncSweep.run`` with events
    in place of threads.
    """
    import random

    import optuna
    from omegaconf import OmegaConf

    from hydra_plugins.nemo_rl_hpo import _fidelity
    from hydra_plugins.nemo_rl_hpo._samplers import make_pruner, make_sampler
    from hydra_plugins.nemo_rl_hpo._settings import OptunaSettings
    from nemo_rl_hpo import trial as trial_api
    from nemo_rl_hpo.fidelity import Scheduler
    from nemo_rl_hpo.fidelity._proposer import FidelityProposer
    from nemo_rl_hpo.fidelity._sampler import RungSampler
    from nemo_rl_hpo.sweep import context as trial_context
    from nemo_rl_hpo.sweep import job as job_api
    from nemo_rl_hpo.sweep import records, repeats
    from nemo_rl_hpo.sweep.proposer import OptunaProposer, Proposer

    kind = table.kind
    cfg = composer.compose(
        [f"trial={kind.name}", *table.fixed, *overrides, f"hydra.sweeper.n_trials={n_trials}"],
        hydra=True,
    )
    sweeper = (
        OmegaConf.to_container(cfg.hydra.sweeper, resolve=False)
        if sweeper_config is None
        else json.loads(json.dumps(sweeper_config))
    )
    sweeper["n_jobs"] = n_jobs  # type: ignore[index]
    s = OptunaSettings.from_config(OmegaConf.create(sweeper))  # type: ignore[arg-type]
    sampler_cfg = s.sampler
    if sampler_cfg is not None and "seed" in sampler_cfg:
        sampler_cfg = OmegaConf.merge(sampler_cfg, {"seed": seed})
    reps = repeats.Repeats.from_config(s.repeats, kind.seed_key, s.aggregate)
    in_flight = reps.configurations_in_flight(n_jobs) if reps.active else n_jobs
    task_cfg = OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "hydra"])
    fidelity = _fidelity.plan(s, task_cfg, len(space.distributions))
    sampler = make_sampler(
        sampler_cfg,
        space,
        n_trials=n_trials,
        n_jobs=in_flight,
        n_objectives=1,
        custom_space=False,
        fidelity=fidelity is not None,
    )
    if fidelity is not None:
        sampler = RungSampler(sampler, fidelity.min_observations or 1)
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(
        storage=storage,
        study_name=f"sim-{contender}-{seed}",
        direction=s.directions[0],  # type: ignore[arg-type]
        sampler=sampler,
        pruner=make_pruner(s.pruner),
    )
    base = OptunaProposer(study, space, n_trials)
    proposer: Proposer = base
    if fidelity is not None:
        proposer = FidelityProposer(
            base, Scheduler(fidelity.settings), Path("/nonexistent/simulated"), True
        )
    base_ctx = {
        "study": study.study_name,
        "storage": "simulated://memory",
        "prune_metric": kind.objective,
        "objectives": [kind.objective],
        "weights": None,
        "pruner": s.pruner_config,
    }
    ids: dict[int, int] = {}

    def in_memory_trial(storage_url: str, study_name: str, number: int, pruner: str = "") -> Any:
        return optuna.Trial(study, ids[number])

    trial_context.open_trial = in_memory_trial  # type: ignore[assignment]  # the seam (see top)

    rng = random.Random(seed * 7919 + 17)
    pool = [x for x in table.seeds if x not in test_seeds]
    clock = 0.0
    events: list[_Event] = []
    order = 0
    busy: dict[int, int] = {}  # trial number -> its jobs still running (seeds of a repeat)
    keys: dict[int, str] = {}
    runs: dict[tuple[int, int], Run] = {}  # (trial number, seed index) -> its table run
    done_step: dict[tuple[int, int], int] = {}  # how far a paused trial got
    finished: list[dict[str, Any]] = []
    incumbents: list[tuple[float, str]] = []
    distances: list[tuple[int, float]] = []
    launches: list[tuple[float, int, int, int]] = []
    best: float | None = None
    n_segments = 0
    per_config = reps.n if reps.active else 1
    deadline = math.inf if budget_s is None else budget_s
    if s.confirm.active:  # the budget holds the confirmation's full runs
        deadline -= s.confirm.top_k * s.confirm.seeds * table.full_run_s / n_jobs

    def start(number: int, index: int, ctx: dict[str, Any]) -> None:
        nonlocal order
        run = runs[(number, index)]
        target = ctx.get("steps")
        first = done_step.get((number, index), 0)
        segs = [i for i, st in enumerate(run.steps) if st > first]
        if target is not None:
            segs = [i for i in segs if run.steps[i] <= int(target)]
        scale = 1.0
        if segs and seconds is not None:
            recorded = sum(run.cpu[i] for i in segs)
            wanted = seconds(keys[number], first, run.steps[segs[-1]], clock)
            if wanted is not None and recorded > 0:
                scale = wanted / recorded
        job = _Job(
            number, ids[number], json.dumps(ctx, separators=(",", ":")), run, segs, index, 0, scale
        )
        if index == 0:
            launches.append((clock, number, first, run.steps[segs[-1]] if segs else first))
        wait = run.cpu[segs[0]] * scale + job_start_s if segs else 1.0
        heapq.heappush(events, _Event(clock + wait, order, job))
        order += 1

    # The sweeper's reaction time (``batch_s``): live, a job records its own rung value in the
    # study as it ends, and the sweeper asks only after it has handled the end that woke it, so
    # its ask already sees the jobs that ended meanwhile. Ends within ``batch_s`` of the end
    # that opened a batch are all handled before the next ask.
    batch_until = -math.inf
    while True:
        batching = bool(events) and events[0].time <= batch_until
        while not batching and len(busy) * per_config + per_config <= n_jobs and clock < deadline:
            proposal = proposer.ask()
            if proposal is None:
                break
            number = proposal.number
            ids[number] = proposal.trial._trial_id
            if number not in keys:  # a new configuration (not a promotion)
                values = {**parse_overrides(proposal.overrides), **(held or {})}
                key, mism, dist = nearest(active(nearest.spec, values) if held else values)
                keys[number] = key
                # the configuration the trial runs is the table's: two proposals that map to
                # one table configuration are one configuration (confirmation dedupes on this)
                study._storage.set_trial_user_attr(
                    proposal.trial._trial_id, records.OVERRIDES, list(table.overrides[key])
                )
                distances.append((mism, dist))
                for i in range(per_config):
                    seed_of_run = pool[i % len(pool)] if reps.active else rng.choice(pool)
                    runs[(number, i)] = table.runs[(key, seed_of_run)]
            ctx = {**base_ctx, **proposal.context, "number": number}
            for i in range(per_config):
                if reps.active:
                    ctx = {**ctx, "repeat": {"index": i, "seed": i, **reps.as_dict()}}
                start(number, i, ctx)
            busy[number] = per_config
        if not events:
            break
        ev = heapq.heappop(events)
        if ev.time > deadline:
            clock = deadline
            break
        clock = ev.time
        job: _Job = ev.job
        os.environ[trial_api.ENV_TRIAL] = job.context
        run = job.run
        result: Any = None
        completed = True
        ended = True
        if not job.segs:
            completed, result = False, RuntimeError(run.error or "no validation")
        else:
            i = job.segs[job.seg]
            trial_api.report(run.steps[i], run.metrics[i])
            n_segments += 1
            done_step[(job.number, job.index)] = run.steps[i]
            pruned = trial_api.should_prune()
            last = job.seg == len(job.segs) - 1
            if pruned or last:
                at_end = i == len(run.steps) - 1
                result = run.final if at_end and not pruned else dict(run.metrics[i])
                if at_end and run.error:
                    completed, result = False, RuntimeError(run.error)
            else:
                ended = False
                job.seg += 1
                wait = run.cpu[job.segs[job.seg]] * job.scale
                heapq.heappush(events, _Event(clock + wait, order, job))
                order += 1
        if not ended:
            continue
        job_api.on_job_end(completed, result)
        if clock > batch_until:
            batch_until = clock + batch_s
        busy[job.number] -= 1
        if busy[job.number] > 0:
            continue
        del busy[job.number]
        frozen = study._storage.get_trial(job.trial_id)
        if not (frozen.state.is_finished() or records.is_paused(frozen)):
            records.fail_trial(study, frozen, "the job ended without reporting a result")
            frozen = study._storage.get_trial(job.trial_id)
        proposer.tell(frozen)
        for t in study.get_trials(deepcopy=False):  # told now, or retired by the proposer
            if t.state.is_finished() and t.number not in {f["number"] for f in finished}:
                value = t.value if t.state == optuna.trial.TrialState.COMPLETE else None
                finished.append(
                    {
                        "time": clock,
                        "number": t.number,
                        "state": t.state.name,
                        "value": value,
                        "key": keys.get(t.number),
                    }
                )
                if value is not None and (best is None or table.sign * (value - best) < 0):
                    best = value
                    incumbents.append((clock, keys[t.number]))
    os.environ.pop(trial_api.ENV_TRIAL, None)
    trials = [
        {
            "number": t.number,
            "key": keys.get(t.number),
            "state": t.state.name,
            "value": t.value if t.state == optuna.trial.TrialState.COMPLETE else None,
            "rungs": [
                [int(r["step"]), float(r["value"])]
                for r in t.user_attrs.get(records.FIDELITY_RUNGS, [])
            ],
            "end": t.user_attrs.get(records.FIDELITY_END),
        }
        for t in study.get_trials(deepcopy=False)
    ]
    confirmed = None
    if s.confirm.active:
        stage = _confirm_stage.replay(
            study,
            s.confirm,
            keys,
            lambda key, seed: table.runs[(key, seed)],
            confirm_seeds,
            base_ctx,
            n_jobs,
            job_start_s,
        )
        clock += stage.compute_s / n_jobs  # the budget's clock: worker-seconds / n_jobs
        if stage.key is not None:
            incumbents.append((clock, stage.key))
        used = clock if budget_s is None else clock / budget_s
        confirmed = {"candidates": stage.candidates, "pick": stage.key, "compute_ratio": used}
    return SweepResult(
        contender,
        seed,
        test_seeds,
        finished,
        incumbents,
        clock,
        distances,
        len(keys),
        n_segments,
        n_trials,
        trials=trials,
        launches=launches,
        confirm=confirmed,
    )


def simulate_pbt(
    table: Table,
    space: Any,
    nearest: Nearest,
    composer: curves.Composer,
    contender: str,
    overrides: list[str],
    seed: int,
    n_jobs: int,
    budget_s: float,
    budget_runs: float,
    test_seeds: list[int],
    defaults: dict[str, str],
    compute_clock: bool = False,
) -> SweepResult:
    """One PBT sweep (``hydra/sweeper=pbt``) on the table, with simulated time.

    Real: the sweeper's settings (``PBTSettings`` from the composed ``hydra.sweeper``, so a
    population smaller than ``n_jobs`` goes synchronous as live), the population
    (``nemo_rl_hpo.pbt.PBTScheduler`` inside ``PBTProposer``: ranking, truncation selection,
    exploit, explore, retries), the member rounds as Optuna trials, and in each job
    ``trial.report`` and ``sweep/job.on_job_end``. Simulated: the clock and launcher (as in
    :func:`simulate_one`) and the training: a round of a member reads the table with the
    approximation of ``_pbt_curve`` (after an exploit it continues on the nearest table
    configuration of its explored hyperparameters, from the parent's checkpoint value, on the
    seed it inherited). Conditional keys are not explored (PBT refuses them) and neither are
    the keys of ``HELD[contender]``: they keep the trial's default configuration.

    ``compute_clock``: the budget and the times of results are the worker-seconds consumed /
    ``n_jobs`` (idle workers at the synchronous barrier cost nothing), the accounting of
    ``peers.py``'s Ray Tune runs, for comparing with them; the default is the simulated wall
    clock of every other contender.
    """
    import random

    import optuna
    from omegaconf import OmegaConf

    from hydra_plugins.nemo_rl_hpo._settings import PBTSettings
    from nemo_rl_hpo import pbt
    from nemo_rl_hpo import trial as trial_api
    from nemo_rl_hpo.sweep import context as trial_context
    from nemo_rl_hpo.sweep import job as job_api

    kind = table.kind
    population = max(2, n_jobs * int(table.pbt_fill * budget_runs // n_jobs))
    ovs = [o.replace("{population}", str(population)) for o in overrides]
    cfg = composer.compose([f"trial={kind.name}", *table.fixed, *ovs], hydra=True)
    sweeper = OmegaConf.to_container(cfg.hydra.sweeper, resolve=False)
    sweeper["n_jobs"] = n_jobs  # type: ignore[index]
    s = PBTSettings.from_config(OmegaConf.create(sweeper))  # type: ignore[arg-type]
    config = s.pbt_config(seed, n_jobs)
    end = config.rounds * config.perturbation_interval
    if end != table.end_step:
        raise SystemExit(
            f"{contender}: PBT trains {config.rounds} rounds x {config.perturbation_interval} "
            f"steps = {end}, the table's runs {table.end_step}: set hydra.sweeper.num_rounds"
        )
    fixed = set(HELD.get(contender, []))
    dists = {
        k: d for k, d in space.distributions.items() if k not in space.conditions and k not in fixed
    }
    params = [pbt.param_from_distribution(k, d) for k, d in dists.items()]
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(
        storage=storage,
        study_name=f"sim-{contender}-{seed}",
        direction=s.directions[0],  # type: ignore[arg-type]
        sampler=optuna.samplers.RandomSampler(),
        pruner=optuna.pruners.NopPruner(),
    )
    root = Path("/simulated/checkpoints")
    proposer = pbt.PBTProposer(study, config, params, dists, space.overrides, root)
    proposer.adopt([])
    base_ctx = {
        "study": study.study_name,
        "storage": "simulated://memory",
        "prune_metric": kind.objective,
        "objectives": [kind.objective],
        "weights": None,
        "pruner": None,
    }
    ids: dict[int, int] = {}

    def in_memory_trial(storage_url: str, study_name: str, number: int, pruner: str = "") -> Any:
        return optuna.Trial(study, ids[number])

    trial_context.open_trial = in_memory_trial  # type: ignore[assignment]  # the seam (see top)
    rng = random.Random(seed * 7919 + 17)
    pool = [x for x in table.seeds if x not in test_seeds]
    maximize = kind.direction == "maximize"
    # checkpoint path -> (schedule, table seed) of the member that saved it
    saved: dict[str, tuple[list[tuple[int, str]], int]] = {}
    clock, order, n_segments = 0.0, 0, 0
    consumed = 0.0  # worker-seconds of the segments run so far / n_jobs
    events: list[_Event] = []
    running = 0
    finished: list[dict[str, Any]] = []
    incumbents: list[tuple[float, str]] = []
    distances: list[tuple[int, float]] = []
    best: float | None = None

    while True:
        while running < n_jobs and (consumed if compute_clock else clock) < budget_s:
            proposal = proposer.ask()
            if proposal is None:
                break
            ids[proposal.number] = proposal.trial._trial_id
            ctx = proposal.context
            values = {**defaults, **parse_overrides(proposal.overrides)}
            key, mism, dist = nearest(active(nearest.spec, values))
            distances.append((mism, dist))
            start_step = int(ctx["steps"]) - config.perturbation_interval
            if ctx.get("resume_from"):
                parent_sched, run_seed = saved[str(ctx["resume_from"])]
                schedule = [x for x in parent_sched if x[0] < start_step]
            else:
                schedule, run_seed = [], rng.choice(pool)
            if not schedule or schedule[-1][1] != key:
                schedule = [*schedule, (start_step, key)]
            member_curve = pc.replay(
                table.curve, schedule, run_seed, int(ctx["steps"]), table.pbt_mode, maximize
            )
            vals = [(st, v) for st, v in member_curve if st > start_step]
            run = table.runs[(key, run_seed)]
            cost = dict(zip(run.steps, run.cpu, strict=True))
            job = {
                "number": proposal.number,
                "ctx": json.dumps({**base_ctx, **ctx, "number": proposal.number}),
                "vals": vals,
                "cost": [cost.get(st, 0.0) for st, _ in vals] or [run.cpu[0] if run.cpu else 1.0],
                "i": 0,
                "target": int(ctx["steps"]),
                "save": str(ctx["checkpoint_dir"]),
                "schedule": schedule,
                "seed": run_seed,
            }
            heapq.heappush(events, _Event(clock + job["cost"][0], order, job))
            order += 1
            running += 1
        if not events or (compute_clock and consumed >= budget_s):
            break  # (compute clock: Ray's budget Stopper ends the whole run here)
        ev = heapq.heappop(events)
        if not compute_clock and ev.time > budget_s:
            clock = budget_s
            break
        clock = ev.time
        job = ev.job
        os.environ[trial_api.ENV_TRIAL] = job["ctx"]
        vals = job["vals"]
        if not vals:
            completed, result = False, RuntimeError("the configuration diverged before this round")
        else:
            step, value = vals[job["i"]]
            trial_api.report(step, {kind.objective: value})
            consumed += job["cost"][job["i"]] / n_jobs
            n_segments += 1
            if job["i"] + 1 < len(vals) and math.isfinite(value):
                job["i"] += 1
                heapq.heappush(events, _Event(clock + job["cost"][job["i"]], order, job))
                order += 1
                continue
            ok = step == job["target"] and math.isfinite(value)
            completed = ok
            result = (
                {kind.objective: value, "step": float(step)} if ok else RuntimeError("diverged")
            )
        job_api.on_job_end(completed, result)
        running -= 1
        frozen = study._storage.get_trial(ids[job["number"]])
        proposer.tell(frozen)
        saved[job["save"]] = (job["schedule"], job["seed"])
        if completed and job["target"] == end:
            v = frozen.value
            key = pc.schedule_key(job["schedule"])
            finished.append(
                {
                    "time": consumed if compute_clock else clock,
                    "number": frozen.number,
                    "state": "COMPLETE",
                    "value": v,
                    "key": key,
                }
            )
            if v is not None and (best is None or table.sign * (v - best) < 0):
                best = v
                incumbents.append((consumed if compute_clock else clock, key))
    os.environ.pop(trial_api.ENV_TRIAL, None)
    return SweepResult(
        contender,
        seed,
        test_seeds,
        finished,
        incumbents,
        clock,
        distances,
        len(distances),
        n_segments,
        budget=budget_runs,
    )


# --- many sweeps ------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init(
    table_path: str,
    limit: int = 0,
    pbt_mode: str = "jump",
    job_start_s: float = 0.0,
    compute_clock: bool = False,
    pbt_fill: float = 0.8,
) -> None:
    logging.getLogger("optuna").setLevel(logging.ERROR)
    logging.getLogger("nemo_rl_hpo").setLevel(logging.ERROR)
    logging.getLogger("hydra_plugins").setLevel(logging.ERROR)
    import optuna

    from nemo_rl_hpo.search.grammar import format_value

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    import warnings

    warnings.simplefilter("ignore")
    table = load_table(Path(table_path), limit)
    table.pbt_mode = pbt_mode
    table.pbt_fill = pbt_fill
    composer = curves.Composer()
    space = composer.space(table.kind)
    configs = {k: table.overrides[k] for k in table.keys()}
    defaults = {
        k: format_value(v)
        for k, v in curves.default_values(composer, space, table.kind).items()
        if k not in space.conditions
    }
    _WORKER.update(
        job_start_s=job_start_s,
        table=table,
        composer=composer,
        space=space,
        nearest=Nearest(space_spec(space), configs),
        defaults=defaults,
        compute_clock=compute_clock,
    )


Task = tuple[str, list[str], int, int, "float | None", int, list[int], "float | None", list[int]]


def is_pbt(overrides: Sequence[str]) -> bool:
    return "hydra/sweeper=pbt" in overrides


def confirms(overrides: Sequence[str]) -> bool:
    """A contender with a confirmation stage: it splits each budget between search and
    confirmation, so it runs one sweep per budget."""
    return any(o.startswith("hydra.sweeper.confirm.top_k=") for o in overrides)


def _task(args: Task) -> SweepResult:
    contender, overrides, seed, n_jobs, budget_s, n_trials, test_seeds, budget_runs, conf = args
    w = _WORKER
    if is_pbt(overrides):
        assert budget_s is not None and budget_runs is not None
        return simulate_pbt(
            w["table"],
            w["space"],
            w["nearest"],
            w["composer"],
            contender,
            overrides,
            seed,
            n_jobs,
            budget_s,
            budget_runs,
            test_seeds,
            w["defaults"],
            w["compute_clock"],
        )
    res = simulate_one(
        w["table"],
        w["space"],
        w["nearest"],
        w["composer"],
        contender,
        overrides,
        seed,
        n_jobs,
        budget_s,
        n_trials,
        test_seeds,
        {k: w["defaults"][k] for k in HELD.get(contender, [])},
        job_start_s=w["job_start_s"],
        confirm_seeds=conf,
    )
    if budget_runs is not None:
        res.budget = budget_runs
    return res


def anytime(
    table: Table, res: SweepResult, grid: Sequence[float], test: Sequence[int]
) -> list[float]:
    """True quality of the incumbent at each time of ``grid`` (NaN before the first result)."""
    out = []
    j = -1
    for t in grid:
        while j + 1 < len(res.incumbents) and res.incumbents[j + 1][0] <= t:
            j += 1
        out.append(math.nan if j < 0 else table.true_quality(res.incumbents[j][1], test))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--table", help="a table of bench/curves.py")
    ap.add_argument("--contenders", default="random,default")
    ap.add_argument(
        "--contender",
        action="append",
        default=[],
        metavar="NAME=OVERRIDES",
        help="another contender: a name and space-separated Hydra overrides",
    )
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--n-jobs", type=int, default=4, help="simulated workers")
    ap.add_argument("--budgets", default="30,60", help="in full runs' worth of CPU seconds")
    ap.add_argument("--trials", default="", help="instead of --budgets: trial budgets (20,50,100)")
    ap.add_argument(
        "--tune-seeds",
        type=int,
        default=1,
        help="table seeds the sweep may see (rotating); the others are the test seeds",
    )
    ap.add_argument(
        "--confirm-seeds",
        type=int,
        default=0,
        help="table seeds set aside (rotating, after the tuning seeds) for contenders' "
        "confirmation stages (hydra.sweeper.confirm); every contender's test seeds exclude "
        "them",
    )
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--out", help="bench/results/<out>.json and .png (default: sim_<table>)")
    ap.add_argument("--list", action="store_true", help="print the contenders and exit")
    ap.add_argument("--records", type=int, default=0, help="use the table's first N records")
    ap.add_argument(
        "--peers",
        action="append",
        default=[],
        metavar="JSON",
        help="bench/results/peers_*.json of bench/peers.py: their rows join the table",
    )
    ap.add_argument("--dump-space", metavar="PATH", help="write the space spec (for the peers)")
    ap.add_argument(
        "--pbt-mode",
        choices=pc.MODES,
        default="jump",
        help="how a PBT member's curve continues after an exploit (bench/_pbt_curve.py)",
    )
    ap.add_argument(
        "--job-start-s",
        type=float,
        default=0.0,
        help="CPU seconds every job spends before its first step, which the table does not "
        "hold (a segment of a paused trial is a job); bench/replay_check.py measures it",
    )
    ap.add_argument(
        "--reach-of",
        default="",
        metavar="CONTENDER",
        help="also report, seed by seed, the share of the budget each contender needs to reach "
        "this contender's final true quality (e.g. default: the unpruned sweep)",
    )
    ap.add_argument(
        "--pbt-fill",
        type=float,
        default=0.8,
        help="PBT population: the largest multiple of n_jobs <= this x the budget in full runs "
        "(lower where run lengths vary: synchronous rounds wait for the slowest member)",
    )
    ap.add_argument(
        "--pbt-compute-clock",
        action="store_true",
        help="PBT: budget and times in worker-seconds consumed / n_jobs (peers.py's accounting)",
    )
    args = ap.parse_args(argv)
    contenders = dict(CONTENDERS)
    for spec in args.contender:
        name, _, ovs = spec.partition("=")
        contenders[name] = ovs.split()
    if args.list:
        for k, v in contenders.items():
            print(f"{k:18} {' '.join(v) or '(the default: python train.py -m trial=...)'}")
        return
    if not args.table:
        ap.error("--table is required")
    if args.dump_space:
        table = load_table(Path(args.table), args.records)
        with curves.Composer() as composer:
            spec = space_spec(composer.space(table.kind))
        Path(args.dump_space).write_text(json.dumps(spec, indent=1))
        return
    names = [n for n in args.contenders.split(",") if n]
    unknown = [n for n in names if n not in contenders]
    if unknown:
        ap.error(f"unknown contender {unknown[0]!r}; --list shows them, --contender adds one")
    t0 = time.perf_counter()
    table = load_table(Path(args.table), args.records)
    keys = table.keys()
    if len(table.seeds) < 2 or len(keys) < 2:
        raise SystemExit(
            f"{args.table}: {len(table.runs)} records, {len(keys)} configurations with every "
            f"seed of {table.seeds}; a replay needs 2+ seeds (tuning and test) and 2+ complete "
            "configurations: build more (bench/curves.py build, it resumes)."
        )
    by_trials = [int(x) for x in args.trials.split(",") if x]
    budgets = [float(x) for x in args.budgets.split(",") if x]
    max_budget = max(budgets) if budgets else 0
    jobs: list[Task] = []
    for name in names:
        for seed in range(args.seeds):
            n = len(table.seeds)
            if args.tune_seeds + args.confirm_seeds >= n:
                ap.error(
                    f"--tune-seeds {args.tune_seeds} + --confirm-seeds {args.confirm_seeds} "
                    f"leave no test seed of the table's {n}"
                )
            split = [table.seeds[(seed + j) % n] for j in range(n)]
            tune = set(split[: args.tune_seeds])
            conf = split[args.tune_seeds : args.tune_seeds + args.confirm_seeds]
            test = [s for s in table.seeds if s not in tune and s not in conf]
            ovs = contenders[name]
            if is_pbt(ovs) or confirms(ovs):  # a sweep per budget
                if by_trials:
                    ap.error(f"{name}: PBT and confirmation replay --budgets, not --trials")
                for b in budgets:
                    budget_s = b * table.full_run_s / args.n_jobs
                    jobs.append((name, ovs, seed, args.n_jobs, budget_s, 100000, test, b, conf))
            elif by_trials:
                for n in by_trials:
                    jobs.append((name, ovs, seed, args.n_jobs, None, n, test, None, conf))
            else:
                budget_s = max_budget * table.full_run_s / args.n_jobs
                jobs.append((name, ovs, seed, args.n_jobs, budget_s, 100000, test, None, conf))
    table.pbt_mode = args.pbt_mode
    init = (
        args.table,
        args.records,
        args.pbt_mode,
        args.job_start_s,
        args.pbt_compute_clock,
        args.pbt_fill,
    )
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers, initializer=_init, initargs=init) as ex:
            results = list(ex.map(_task, jobs, chunksize=1))
    else:
        _init(*init)
        results = [_task(j) for j in jobs]
    payload = report(table, keys, names, results, args, by_trials, budgets)
    payload["elapsed_s"] = round(time.perf_counter() - t0, 1)
    print(f"({payload['elapsed_s']} s)")
    out = args.out or f"sim_{Path(args.table).name.split('.')[0]}"
    c.write_result(out, payload)
    if not by_trials:
        plot(table, results, names, args, out, max_budget)


def report(
    table: Table,
    keys: Sequence[str],
    names: Sequence[str],
    results: Sequence[SweepResult],
    args: argparse.Namespace,
    by_trials: Sequence[int],
    budgets: Sequence[float],
) -> dict[str, Any]:
    sign = table.sign
    best_cache: dict[tuple[int, ...], float] = {}

    def best_true(test: Sequence[int]) -> float:
        """The table's best configuration judged on the same test seeds."""
        k = tuple(test)
        if k not in best_cache:
            best_cache[k] = sign * min(sign * table.true_quality(x, test) for x in keys)
        return best_cache[k]

    rows: list[dict[str, Any]] = []
    per: dict[tuple[str, Any], list[float]] = {}
    for res in results:
        test = res.test_seeds
        if by_trials:
            b: Any = res.budget_trials
            points = [(b, res.end_time)]
        else:
            points = [
                (b, b * table.full_run_s / args.n_jobs)
                for b in budgets
                if res.budget is None or b == res.budget
            ]
        for b, t in points:
            if res.confirm is not None:  # its pick, made when the stage ended
                t = max(t, res.end_time)
            q = anytime(table, res, [t], test)[0]
            r = sign * (q - best_true(test)) if not math.isnan(q) else math.inf
            per.setdefault((res.contender, b), []).append(r)
            n_done = sum(1 for f in res.finished if f["time"] <= t)
            row = {
                "contender": res.contender,
                "seed": res.seed,
                "budget": b,
                "regret": r,
                "true": q,
                "trials": n_done,
            }
            if res.confirm is not None:
                row["confirm"] = res.confirm
            if by_trials:  # what the trial budget cost: worker-seconds in full runs' worth
                row["full_runs"] = res.end_time * args.n_jobs / table.full_run_s
            rows.append(row)
    print(
        f"\n{table.kind.name} table: {len(keys)} configurations x {len(table.seeds)} seeds, "
        f"full run {table.full_run_s:.1f} CPU s, {args.n_jobs} workers, {args.seeds} seeds"
    )
    unit = "trials" if by_trials else "full runs"
    if args.peers:  # Ray Tune / Syne Tune rows from bench/peers.py, same seeds and budgets
        for path in args.peers:
            for r in json.loads(Path(path).read_text())["rows"]:
                if r["seed"] < args.seeds:
                    rows.append(r)
                    per.setdefault((r["contender"], r["budget"]), []).append(r["regret"])
    # Paired by seed: in how many seeds a contender's regret is below random's (ties apart).
    by_seed = {(r["contender"], r["budget"], r["seed"]): r["regret"] for r in rows}
    reach = time_to_reach(table, results, args, budgets) if not by_trials else {}
    print(
        f"| contender | budget ({unit}) | median regret | IQR | trials (median) "
        "| seeds better / worse than random | full runs to random's final quality |"
    )
    print("|---|---:|---:|---|---:|---|---|")
    summary = {}
    for (name, b), regs in per.items():
        lo, hi = c.iqr(regs)
        n_tr = [r["trials"] for r in rows if r["contender"] == name and r["budget"] == b]
        seeds = [r["seed"] for r in rows if r["contender"] == name and r["budget"] == b]
        pairs = [
            (by_seed[(name, b, sd)], by_seed[("random", b, sd)])
            for sd in seeds
            if ("random", b, sd) in by_seed
        ]
        better = sum(1 for x, y in pairs if x < y)
        worse = sum(1 for x, y in pairs if x > y)
        r_med, r_never = reach.get(name, (math.nan, 0))
        summary[f"{name}@{b}"] = {
            "median": c.median(regs),
            "iqr": [lo, hi],
            "trials": c.median(n_tr),
            "better_than_random": better,
            "worse_than_random": worse,
            "seeds": len(regs),
            "full_runs_to_random_final": r_med,
            "never_reached": r_never,
        }
        ratios = [
            r["confirm"]["compute_ratio"]
            for r in rows
            if r["contender"] == name and r["budget"] == b and "confirm" in r
        ]
        if ratios:  # search + confirmation worker-seconds / the budget's
            summary[f"{name}@{b}"]["compute_ratio"] = {
                "median": c.median(ratios),
                "max": max(ratios),
            }
        reach_txt = f"{r_med:.1f} ({r_never} never)" if reach else ""
        print(
            f"| {name} | {b:g} | {c.median(regs):.4f} | {lo:.4f}–{hi:.4f} | "
            f"{c.median(n_tr):.0f} | {better} / {worse} of {len(pairs)} | {reach_txt} |"
        )
    dists = [d for r in results for d in r.distances]
    mism = [m for m, _ in dists]
    num = [d for _, d in dists]
    nn = {
        "evaluations": len(dists),
        "categorical_mismatch_share": {k: mism.count(k) / len(mism) for k in sorted(set(mism))},
        "numeric_distance_quantiles": [round(x, 3) for x in statistics.quantiles(num, n=4)]
        if len(num) > 1
        else num,
    }
    print(f"nearest configuration: {nn}")
    spread = landscape(table, keys)
    print(f"landscape: {spread}")
    paired = {}
    if not by_trials and args.reach_of:
        paired = paired_reach(table, results, args, budgets, args.reach_of)
        print(
            f"\nseconds to reach {args.reach_of}'s final quality of the same seed, as a share of "
            f"the budget ({max(budgets):g} full runs):"
        )
        print("| contender | median share | seeds within 0.5x | seeds never |")
        print("|---|---:|---:|---:|")
        for name, p in paired.items():
            half, n = p["within_half"], p["seeds"]
            print(f"| {name} | {p['median']:.2f} | {half} of {n} | {p['never']} |")
    return {
        "machine": c.machine(),
        "command": " ".join(sys.argv),
        "table": args.table,
        "records": args.records or len(table.runs),
        "configurations": len(keys),
        "table_seeds": table.seeds,
        "full_run_cpu_s": table.full_run_s,
        "n_jobs": args.n_jobs,
        "seeds": args.seeds,
        "best_true": {",".join(map(str, k)): v for k, v in best_cache.items()},
        "summary": summary,
        "rows": rows,
        "nearest": nn,
        "landscape": spread,
        "paired_reach": {"of": args.reach_of, **paired} if paired else None,
    }


def time_to_reach(
    table: Table, results: Sequence[SweepResult], args: argparse.Namespace, budgets: Sequence[float]
) -> dict[str, tuple[float, int]]:
    """Full runs' worth of time until the incumbent's true quality reaches random search's
    final one (the median over seeds at the largest budget): median over seeds, and how many
    seeds never got there within that budget."""
    unit = table.full_run_s / args.n_jobs
    top = max(budgets) * unit
    finals = [anytime(table, r, [top], r.test_seeds)[0] for r in results if r.contender == "random"]
    finals = [q for q in finals if not math.isnan(q)]
    if not finals:
        return {}
    target = statistics.median(finals)
    out: dict[str, tuple[float, int]] = {}
    for name in sorted({r.contender for r in results}):
        times, never = [], 0
        # a PBT contender: its population for the largest budget
        for r in (x for x in results if x.contender == name and x.budget in (None, max(budgets))):
            hit = next(
                (
                    t
                    for t, k in r.incumbents
                    if t <= top and table.sign * (table.true_quality(k, r.test_seeds) - target) <= 0
                ),
                None,
            )
            if hit is None:
                never += 1
                times.append(math.inf)
            else:
                times.append(hit / unit)
        out[name] = (statistics.median(times), never)
    return out


def paired_reach(
    table: Table,
    results: Sequence[SweepResult],
    args: argparse.Namespace,
    budgets: Sequence[float],
    ref: str,
) -> dict[str, dict[str, Any]]:
    """Per seed: the time a contender's incumbent first reaches the true quality that ``ref``
    (e.g. the unpruned default) ends with at the largest budget on the same seed, as a share
    of that budget (inf: never); the median share and the seeds within 0.5x."""
    top = max(budgets) * table.full_run_s / args.n_jobs
    final = {
        r.seed: anytime(table, r, [top], r.test_seeds)[0]
        for r in results
        if r.contender == ref and r.budget in (None, max(budgets))
    }
    out: dict[str, dict[str, Any]] = {}
    for name in sorted({r.contender for r in results}):
        shares = []
        for r in results:
            if r.contender != name or r.budget not in (None, max(budgets)):
                continue
            target = final.get(r.seed)
            if target is None or math.isnan(target):
                continue
            hit = next(
                (
                    t
                    for t, k in r.incumbents
                    if t <= top and table.sign * (table.true_quality(k, r.test_seeds) - target) <= 0
                ),
                None,
            )
            shares.append(math.inf if hit is None else hit / top)
        if shares:
            out[name] = {
                "median": statistics.median(shares),
                "within_half": sum(1 for x in shares if x <= 0.5),
                "never": sum(1 for x in shares if math.isinf(x)),
                "seeds": len(shares),
            }
    return out


def landscape(table: Table, keys: Sequence[str]) -> dict[str, float]:
    """Spread of final objectives across configurations vs across seeds of one configuration."""
    means = [statistics.fmean(table.final(k, s) for s in table.seeds) for k in keys]
    finite = [m for m in means if math.isfinite(m)]
    seed_sd = [
        statistics.stdev([table.final(k, s) for s in table.seeds])
        for k in keys
        if all(math.isfinite(table.final(k, s)) for s in table.seeds)
    ]
    return {
        "sd_across_configurations": statistics.stdev(finite) if len(finite) > 1 else math.nan,
        "median_sd_across_seeds": statistics.median(seed_sd) if seed_sd else math.nan,
        "default_mean": statistics.fmean(table.final(table.default_key, s) for s in table.seeds),
        "best_mean": min(finite, key=lambda m: table.sign * m) if finite else math.nan,
        "median_mean": statistics.median(finite) if finite else math.nan,
    }


def plot(
    table: Table,
    results: Sequence[SweepResult],
    names: Sequence[str],
    args: argparse.Namespace,
    out: str,
    max_budget: float,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid_runs = [max_budget * i / 100 for i in range(1, 101)]
    grid_s = [g * table.full_run_s / args.n_jobs for g in grid_runs]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in names:
        curves_ = [
            anytime(table, r, grid_s, r.test_seeds)
            for r in results
            if r.contender == name and r.budget in (None, max_budget)
        ]
        med = []
        for i in range(len(grid_s)):
            col = [cv[i] for cv in curves_ if not math.isnan(cv[i])]
            med.append(statistics.median(col) if len(col) * 2 > len(curves_) else math.nan)
        ax.plot(grid_runs, med, label=name)
    ax.axhline(
        statistics.fmean(table.final(table.default_key, s) for s in table.seeds),
        color="grey",
        ls="--",
        label="default configuration",
    )
    ax.set_xlabel(f"simulated CPU time, full runs' worth ({args.n_jobs} workers)")
    ax.set_ylabel(f"true {table.kind.objective} of the incumbent (median, {args.seeds} seeds)")
    ax.set_title(f"{table.kind.name} table: anytime quality")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = c.RESULTS / f"{out}.png"
    fig.savefig(path, dpi=110)
    print(f"wrote {path.relative_to(c.ROOT)}")


if __name__ == "__main__":
    main()
