"""Confirmed vs unconfirmed picks at an equal number of full runs, on a noisy synthetic objective.

    python bench/confirm_pick.py                 # ~3 min on 2 shared cores

A stand-in until the GRPO curve table (``bench/simulate.py``, issue 23) holds enough runs: the
``mixed`` and ``conditional`` problems of ``_problems.py`` (minimize) with run-to-run noise,
value = f(config) + sigma * N(0, 1) drawn from (config, seed), so a configuration's *true
quality* is f (its mean over infinitely many seeds) and a sweep's best value is optimistic.

At a budget of B full runs:
- **unconfirmed**: B search trials (TPE, one tuning seed), pick = best tuning value;
- **confirmed k x s**: B - k*s search trials, then the top k re-run on s test seeds, pick = best
  test mean (``nemo_rl_hpo.sweep.confirm.candidates`` + ``choose``, the sweeper's own logic).

Reported: the median (and IQR) over sweep seeds of the pick's true regret (f - the problem's
minimum), and the bias of the value the sweep reports for its pick (reported - true quality;
negative = optimistic, as these problems minimize): the tuning value unconfirmed, the test mean
confirmed.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path
from typing import Any

import optuna
from _common import iqr, machine, write_result
from _problems import OPTIMA, PROBLEMS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nemo_rl_hpo.sweep import confirm  # noqa: E402


def _noise(params: dict[str, Any], seed: int, sigma: float) -> float:
    return sigma * random.Random(f"{sorted(params.items())}|{seed}").gauss(0.0, 1.0)


def _true(problem: str, params: dict[str, Any]) -> float:
    fixed = optuna.trial.FixedTrial(params)
    return float(PROBLEMS[problem](fixed))


def one_sweep(
    problem: str, trials: int, k: int, s: int, sigma: float, seed: int
) -> tuple[float, float]:
    """(true regret of the pick, the value the sweep reports for it - its true quality): the
    reported value is the tuning value unconfirmed, the test mean confirmed."""
    fn = PROBLEMS[problem]

    def objective(t: optuna.Trial) -> float:
        return float(fn(t)) + _noise(t.params, 0, sigma)  # tuning seed 0

    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=trials)
    done = study.get_trials(deepcopy=False)
    if k == 0:
        pick = min((t for t in done if t.value is not None), key=lambda t: (t.value, t.number))
        tuning = float(pick.value)  # type: ignore[arg-type]
    else:
        chosen, _ = confirm.candidates(done, maximize=False, top_k=k)
        tests = [
            [float(fn(optuna.trial.FixedTrial(t.params))) + _noise(t.params, 1000 + j, sigma)
             for j in range(s)]
            for t in chosen
        ]  # fmt: skip
        choice = confirm.choose([float(t.value) for t in chosen], tests, maximize=False)  # type: ignore[arg-type]
        assert choice.winner is not None
        pick = chosen[choice.winner]
        tuning = statistics.fmean(tests[choice.winner])  # what the confirmed sweep reports
    true = _true(problem, pick.params)
    return true - OPTIMA[problem], tuning - true


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--budgets", default="30,60")
    ap.add_argument("--splits", default="0x0,2x3,3x3,3x5,5x2", help="top_k x seeds; 0x0: none")
    ap.add_argument("--sigmas", default="0.1,0.3")
    ap.add_argument("--problems", default="mixed,conditional")
    ap.add_argument("--out", default="confirm_pick")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    splits = [tuple(int(x) for x in sp.split("x")) for sp in args.splits.split(",")]
    rows: list[dict[str, Any]] = []
    for problem in args.problems.split(","):
        for sigma in (float(x) for x in args.sigmas.split(",")):
            for budget in (int(b) for b in args.budgets.split(",")):
                for k, s in splits:
                    search = budget - k * s
                    if search < max(k, 5):
                        continue
                    res = [
                        one_sweep(problem, search, k, s, sigma, seed) for seed in range(args.seeds)
                    ]
                    regret = [r for r, _ in res]
                    optimism = [o for _, o in res]
                    row = {
                        "problem": problem,
                        "sigma": sigma,
                        "budget_runs": budget,
                        "top_k": k,
                        "test_seeds": s,
                        "search_trials": search,
                        "regret_median": statistics.median(regret),
                        "regret_iqr": iqr(regret),
                        "reported_minus_true_median": statistics.median(optimism),
                        "per_seed_regret": regret,
                    }
                    rows.append(row)
                    print(
                        f"{problem:12s} sigma={sigma:<4} B={budget:3d} {k}x{s} search={search:3d} "
                        f"regret {row['regret_median']:.3f} IQR {row['regret_iqr'][0]:.3f}-"
                        f"{row['regret_iqr'][1]:.3f} "
                        f"reported-true {row['reported_minus_true_median']:+.3f}",
                        flush=True,
                    )
    write_result(
        args.out,
        {
            "machine": machine(),
            "command": " ".join(["bench/confirm_pick.py", *sys.argv[1:]]),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
