"""A plain ``study.optimize`` loop on the trivial objective; runs under Optuna 5 or 2.10.

    python bench/_plain_loop.py N STORAGE      # STORAGE: memory or a sqlite:/// URL

Prints one JSON line: the steady-state time per trial (first to last objective call).
"""

from __future__ import annotations

import json
import sys
import time

import optuna


def main() -> None:
    n = int(sys.argv[1])
    storage = None if sys.argv[2] == "memory" else sys.argv[2]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    stamps: list[float] = []

    def objective(trial: optuna.Trial) -> float:
        stamps.append(time.time())
        x = trial.suggest_float("x", -5.0, 5.0)
        y = trial.suggest_float("y", -5.0, 5.0)
        return x * x + y * y

    t0 = time.time()
    study = optuna.create_study(storage=storage, study_name="plain")
    study.optimize(objective, n_trials=n)
    wall = time.time() - t0
    per = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    print(json.dumps({"per_trial_s": per, "wall_s": wall, "n": len(stamps)}))


if __name__ == "__main__":
    main()
