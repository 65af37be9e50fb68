"""Sampler time per trial with 100 and 1,000 finished trials in the study.

    python bench/sampler_time.py                          # full run: results/sampler_time.json
    python bench/sampler_time.py --sizes 100 --repeats 2  # smoke run

For each size the study is prefilled with that many random trials of a problem (in memory, so
storage time is excluded), then each sampler samples ``--repeats`` more trials, interleaved
(A, B, C, A, B, C, ...); the figure is the median time of ask + the problem's suggestions.
``upstream`` (Optuna 2.10's TPE, hydra-optuna-sweeper's default) runs in its own venv.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402


def worker(spec: dict[str, Any]) -> None:
    """Runs in the venv under test: prints one JSON line per (problem, size)."""
    import optuna
    from _problems import PROBLEMS
    from _quality_worker import make_sampler

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    for problem in spec["problems"]:
        fn = PROBLEMS[problem]
        for size in spec["sizes"]:
            base = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
            base.optimize(fn, n_trials=size)
            studies = {}
            for name in spec["samplers"]:
                s = optuna.create_study(sampler=make_sampler(name, 0))
                s.add_trials(base.trials)
                studies[name] = s
            times: dict[str, list[float]] = {name: [] for name in studies}
            cpu: dict[str, list[float]] = {name: [] for name in studies}
            for rep in range(spec["repeats"]):
                for name, s in studies.items():
                    if name == "gp" and size >= 1000 and rep >= 2:
                        continue  # seconds per trial: two samples are enough
                    t0, c0 = time.perf_counter(), time.process_time()
                    trial = s.ask()
                    value = fn(trial)
                    times[name].append(time.perf_counter() - t0)
                    cpu[name].append(time.process_time() - c0)
                    s.tell(trial, value)
            for name, ts in times.items():
                out = {
                    "problem": problem,
                    "size": size,
                    "sampler": name,
                    "optuna": optuna.__version__,
                    "ms": [round(1000 * t, 2) for t in ts],
                    "median_ms": round(1000 * statistics.median(ts), 2),
                    "median_cpu_ms": round(1000 * statistics.median(cpu[name]), 2),
                }
                print(json.dumps(out), flush=True)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(json.loads(sys.argv[2]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="100,1000")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--samplers", default="tpe,ours,gp")
    ap.add_argument("--problems", default="conditional,hartmann6")
    ap.add_argument("--out", default="sampler_time")
    args = ap.parse_args()
    spec = {
        "sizes": [int(x) for x in args.sizes.split(",")],
        "repeats": args.repeats,
        "problems": args.problems.split(","),
    }
    records: list[dict[str, Any]] = []
    runs = [(c.ours_python(), args.samplers.split(",")), (c.upstream_python(), ["upstream"])]
    for python, samplers in runs:
        proc = subprocess.run(
            [
                str(python),
                str(Path(__file__).resolve()),
                "--worker",
                json.dumps({**spec, "samplers": samplers}),
            ],
            capture_output=True,
            text=True,
            cwd=c.WORK,
            env=c.clean_env(),
        )
        if proc.returncode != 0:
            raise RuntimeError(f"sampler_time worker failed:\n{proc.stderr[-3000:]}")
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
                r = json.loads(line)
                records.append(r)
                print(
                    f"{r['problem']:12s} {r['size']:5d} trials  {r['sampler']:9s} "
                    f"{r['median_ms']:9.1f} ms/trial wall, {r['median_cpu_ms']:9.1f} ms CPU "
                    f"(optuna {r['optuna']})"
                )
    c.write_result(
        args.out,
        {
            "benchmark": "sampler time per trial (ask + suggestions), in-memory study",
            "command": " ".join(["python", "bench/sampler_time.py", *sys.argv[1:]]),
            "machine": c.machine(),
            "versions": {
                "ours": c.versions(c.ours_python()),
                "upstream": c.versions(c.upstream_python()),
            },
            "settings": vars(args),
            "records": records,
        },
    )


if __name__ == "__main__":
    main()
