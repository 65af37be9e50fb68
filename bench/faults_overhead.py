"""What the storage fault handling costs per trial: an ask/tell loop with and without it.

    python bench/faults_overhead.py [--trials 200] [--repeats 4]

Both sides use the same SQLite settings (``open_storage``: WAL, Optuna's cache); "unwrapped" is
the storage inside the retry wrapper, so the difference is the wrapper plus the creation token
(one more system attribute written with each new trial). Interleaved repeats, medians.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import optuna

from nemo_rl_hpo.sweep.storage import open_storage


def per_trial_ms(kind: str, n: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        opened = open_storage(f"sqlite:///{d}/bench.db")
        storage = opened._inner if kind == "unwrapped" else opened  # type: ignore[attr-defined]
        study = optuna.create_study(storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
        t0 = time.perf_counter()
        for _ in range(n):
            trial = study.ask()
            study.tell(trial, trial.suggest_float("x", 0.0, 1.0))
        ms = (time.perf_counter() - t0) / n * 1000
        opened.engine.dispose()  # type: ignore[attr-defined]
        return ms


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs: dict[str, list[float]] = {"unwrapped": [], "wrapped": []}
    for _ in range(args.repeats):
        for kind in runs:
            runs[kind].append(per_trial_ms(kind, args.trials))
    for kind, values in runs.items():
        rounded = [round(v, 1) for v in values]
        print(f"{kind:10s} ms/trial {rounded} median {statistics.median(values):.1f}")
    ratios = [w / u for w, u in zip(runs["wrapped"], runs["unwrapped"], strict=True)]
    print(f"wrapped / unwrapped, median of per-repeat ratios: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
