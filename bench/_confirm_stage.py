"""The confirmation stage (``hydra.sweeper.confirm``) replayed on a curve table.

``bench/simulate.py`` calls :func:`replay` when a contender's sweeper config turns confirmation
on. What runs is the sweeper's own code, as ``_optuna_sweep.OptunaSweeperImpl._confirm`` runs
it: ``confirm.candidates`` picks the top-k full-length configurations of the in-memory study,
``confirm.record_plan`` writes the plan, ``confirm.run_stage`` launches every job, each job goes
through ``sweep/job.on_job_start``/``on_job_end`` (which record its result on the study as a live
confirmation job does), and ``confirm.read_confirmation`` makes the pick. Simulated: a job's
work is its configuration's final metrics on a confirmation seed of the table (a table seed that
neither the tuning nor the test of that simulation seed uses), and its seconds are the recorded
ones. The jobs run one at a time in real time (the job side finds its context in the process
environment) and are list-scheduled on ``n_jobs`` workers in simulated time.
"""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Confirmed:
    """What the stage did: its pick, and what it cost in simulated seconds."""

    key: str | None  # the table configuration picked (None: no candidate completed)
    candidates: list[str]
    makespan_s: float  # simulated wall seconds on n_jobs workers
    compute_s: float  # worker-seconds of its jobs


def replay(
    study: Any,
    conf: Any,
    keys: Mapping[int, str],
    run_of: Callable[[str, int], Any],
    confirm_seeds: Sequence[int],
    base_ctx: Mapping[str, Any],
    n_jobs: int,
    job_start_s: float = 0.0,
) -> Confirmed:
    """Run the stage of ``conf`` (a ``sweep.confirm.Confirm``) on ``study``'s trials.

    ``keys``: trial number -> its table configuration; ``run_of(key, table_seed)``: that
    configuration's record (``simulate.Run``); test seed ``i`` of ``conf`` reads table seed
    ``confirm_seeds[i]``.
    """
    from optuna.study import StudyDirection

    from nemo_rl_hpo import trial as trial_api
    from nemo_rl_hpo.report.trials import trial_overrides
    from nemo_rl_hpo.sweep import confirm
    from nemo_rl_hpo.sweep import context as trial_context
    from nemo_rl_hpo.sweep import job as job_api

    if conf.seeds > len(confirm_seeds):
        raise SystemExit(
            f"hydra.sweeper.confirm.seeds={conf.seeds}: the simulation sets aside "
            f"{len(confirm_seeds)} table seed(s) for confirmation (--confirm-seeds)"
        )
    maximize = study.directions[0] == StudyDirection.MAXIMIZE
    chosen, note = confirm.candidates(study.get_trials(deepcopy=False), maximize, conf.top_k)
    if not chosen:
        return Confirmed(None, [], 0.0, 0.0)
    confirm.record_plan(study, conf, chosen, note, [])
    durations: list[float] = []

    def launch(job: Any, ctx: dict[str, Any]) -> tuple[bool, str | None]:
        run = run_of(keys[job.number], confirm_seeds[job.index])
        job_ctx = {k: v for k, v in base_ctx.items() if k not in ("prune_metric", "pruner")}
        os.environ[trial_api.ENV_TRIAL] = json.dumps({**job_ctx, **ctx}, separators=(",", ":"))
        try:
            job_api.on_job_start(None)
            if run.error or not run.values:
                job_api.on_job_end(False, RuntimeError(run.error or "no validation"))
            else:
                job_api.on_job_end(True, run.final)
        finally:
            os.environ.pop(trial_api.ENV_TRIAL, None)
        durations.append(sum(run.cpu) + job_start_s)
        return True, None

    real_open = trial_context.open_study
    trial_context.open_study = lambda url, name: study  # type: ignore[assignment]  # the seam
    try:
        # one job at a time: the job side reads its context from the process environment
        confirm.run_stage(
            study, conf, chosen, trial_overrides, launch, 1, is_job_alive=lambda _: False
        )
    finally:
        trial_context.open_study = real_open  # type: ignore[assignment]
    result = confirm.read_confirmation(study)
    pick = None if result is None or result.pick is None else keys[result.pick.trial.number]
    return Confirmed(
        pick, [keys[t.number] for t in chosen], _makespan(durations, n_jobs), sum(durations)
    )


def _makespan(durations: Sequence[float], n_jobs: int) -> float:
    """Jobs in launch order on ``n_jobs`` workers, each taking the next free one."""
    free = [0.0] * max(1, n_jobs)
    heapq.heapify(free)
    end = 0.0
    for d in durations:
        t = heapq.heappop(free) + d
        end = max(end, t)
        heapq.heappush(free, t)
    return end
