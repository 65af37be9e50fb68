"""Run samplers on the synthetic problems with ask/tell; runs under Optuna 5 or 2.10.

    python bench/_quality_worker.py '{"jobs": [["conditional", "ours", 0], ...], "trials": 100}'

Prints one JSON line per job: the best value after every trial and the seconds per ask.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import optuna  # noqa: E402
from _problems import PROBLEMS  # noqa: E402


def make_sampler(name: str, seed: int) -> Any:
    s = optuna.samplers
    if name == "ours":  # hydra/sweeper=optuna default (hydra_plugins/nemo_rl_hpo/config.py)
        return s.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)
    if name in ("tpe", "upstream"):  # Optuna's default TPE (2.10 in the upstream venv)
        return s.TPESampler(seed=seed)
    if name == "tpe_indep":  # upstream's model (independent TPE) on Optuna 5
        return s.TPESampler(seed=seed, multivariate=False)
    if name == "gp":
        return s.GPSampler(seed=seed)
    if name == "random":
        return s.RandomSampler(seed=seed)
    if name == "cmaes":
        return s.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    raise ValueError(f"unknown sampler {name!r}")


def run(problem: str, sampler: str, seed: int, trials: int) -> dict[str, Any]:
    fn = PROBLEMS[problem]
    study = optuna.create_study(sampler=make_sampler(sampler, seed))
    best = float("inf")
    curve: list[float] = []
    ask_s: list[float] = []
    for _ in range(trials):
        t0 = time.perf_counter()
        trial = study.ask()
        value = fn(trial)  # suggestions happen here: part of the sampler's time
        ask_s.append(time.perf_counter() - t0)
        study.tell(trial, value)
        best = min(best, value)
        curve.append(best)
    return {
        "problem": problem,
        "sampler": sampler,
        "seed": seed,
        "optuna": optuna.__version__,
        "best_curve": curve,
        "ask_s": ask_s,
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    for problem, sampler, seed in spec["jobs"]:
        print(json.dumps(run(problem, sampler, int(seed), int(spec["trials"]))), flush=True)


if __name__ == "__main__":
    main()
