"""CPU and wall time per trial of the trial loop and the job side alone, for A/B of two trees.

    PYTHONPATH=. python bench/loop_cost.py 60                 # this tree
    PYTHONPATH=../base python bench/loop_cost.py 60           # another checkout's code

No Hydra, no process start: an Optuna proposer, the loop (``sweep/core.AsyncSweep``, one job at
a time) and, in the launch thread as the basic launcher would, the job's start and end
(``sweep/job.on_job_start/on_job_end``) against a SQLite study. ``cpu_ms_per_trial`` (this
process's CPU time) is the figure that machine load disturbs least; alternate the two trees.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import optuna

from nemo_rl_hpo.search.grammar import parse_params
from nemo_rl_hpo.search.space import SearchSpace
from nemo_rl_hpo.sweep import job
from nemo_rl_hpo.sweep.core import AsyncSweep, LaunchOutcome, SweepSettings
from nemo_rl_hpo.sweep.proposer import OptunaProposer, Proposal
from nemo_rl_hpo.sweep.storage import open_storage


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tempfile.mkdtemp()}/loop_cost.db"
    sampler = optuna.samplers.RandomSampler(seed=0)
    study = optuna.create_study(storage=open_storage(url), study_name="m", sampler=sampler)
    space = SearchSpace(parse_params({"x": "interval(-2, 3)", "y": "interval(0, 1)"}))

    def launch(p: Proposal) -> LaunchOutcome:
        ctx = {"study": "m", "storage": url, "number": p.number, "objectives": None}
        os.environ["NEMO_RL_HPO_TRIAL"] = json.dumps(ctx)
        job.on_job_start(None)
        job.on_job_end(True, (p.trial.params["x"] - 1) ** 2)
        return LaunchOutcome(True)

    settings = SweepSettings(n_trials=n, n_jobs=1, early_release=False)
    loop = AsyncSweep(study, OptunaProposer(study, space, n), launch, settings)
    c0, t0 = time.process_time(), time.perf_counter()
    summary = loop.run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert summary.counts["COMPLETE"] == n, summary.counts
    print(
        json.dumps(
            {
                "ms_per_trial": round(wall / n * 1000, 2),
                "cpu_ms_per_trial": round(cpu / n * 1000, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
