"""The main job's wall time: ``python train.py -m`` with the old default vs the new one.

    python bench/main_job.py                   # 20 default trials each, once: ~8 min, 2 cores
    python bench/main_job.py --max-steps 100        # shorter trials (smoke run)

``before`` is the old default (Hydra's basic launcher: trials one after another in the sweeper's
process); ``after`` is today's default (``conf/config.yaml``: warm ``pool`` workers,
``hydra.sweeper.n_jobs`` = cores / ``num_threads``); the third is ``after`` with every trial
run to the end (``~hydra/sweeper/fidelity``, the main job before the trials paused by default).
Same trial (``num_threads=1``), same budget and sampler seed. Reported per run: wall seconds,
CPU seconds of the sweep's processes (user + system, children included) and CPU use = CPU
seconds / (wall x cores). Runs are interleaved (before, after, before, ...); the machine may
be shared, so the load average at start is printed next to the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

CONTENDERS = {
    "before (basic launcher, one at a time)": ["hydra/launcher=basic"],
    "after (default: pool, n_jobs = cores / num_threads)": [],
    # The trials' default schedule (fidelity=auto) pauses trials at rungs; this is the same
    # launcher with every trial run to the end, as the main job ran before that default.
    "pool, every trial full length (~hydra/sweeper/fidelity)": ["~hydra/sweeper/fidelity"],
}


def run(
    name: str, extra: list[str], trials: int, max_steps: int | None, k: int
) -> dict[str, object]:
    sweep = c.WORK / "main_job" / f"{k}-{list(CONTENDERS).index(name)}"
    shutil.rmtree(sweep, ignore_errors=True)
    args = [
        str(c.ours_python()),
        "train.py",
        "-m",
        f"hydra.sweep.dir={sweep}",
        f"hydra.sweeper.n_trials={trials}",
        "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.write_report=false",
        *extra,
    ]
    if max_steps is not None:
        args.append(f"max_steps={max_steps}")
    env = c.clean_env()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=c.ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cores = c.machine()["cpus"] or 1
    results = json.loads((sweep / "optimization_results.json").read_text())
    n_jobs = next(
        (
            ln.split(",")[-1].strip()
            for ln in (proc.stdout + proc.stderr).splitlines()
            if "in parallel" in ln
        ),
        "?",
    )
    row = {
        "contender": name,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "cpu_use": round(cpu / (wall * float(cores)), 3),
        "in_parallel": n_jobs,
        "best_val_loss": results.get("best", {}).get("value"),
        "loadavg_at_start": round(load, 2),
    }
    print(json.dumps(row))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--max-steps", type=int, default=None, help="default: the trial's own (400)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default="main_job", help="bench/results/<out>.json")
    a = ap.parse_args()
    rows = []
    for k in range(a.repeats):
        for name, extra in CONTENDERS.items():
            rows.append(run(name, extra, a.trials, a.max_steps, k))
    summary = {}
    for name in CONTENDERS:
        mine = [r for r in rows if r["contender"] == name]
        summary[name] = {
            "wall_s_median": c.median([float(r["wall_s"]) for r in mine]),  # type: ignore[arg-type]
            "cpu_use_median": c.median([float(r["cpu_use"]) for r in mine]),  # type: ignore[arg-type]
        }
    names = list(CONTENDERS)
    speedup = summary[names[0]]["wall_s_median"] / summary[names[1]]["wall_s_median"]
    print(f"wall time before / after: {speedup:.2f}x")
    full = summary[names[2]]["wall_s_median"] / summary[names[1]]["wall_s_median"]
    print(f"wall time every trial full / paused at rungs: {full:.2f}x")
    c.write_result(
        a.out,
        {
            "machine": c.machine(),
            "trials": a.trials,
            "max_steps": a.max_steps or 400,
            "runs": rows,
            "summary": summary,
            "speedup_wall": round(speedup, 2),
            "full_over_paused_wall": round(full, 2),
        },
    )


if __name__ == "__main__":
    main()
