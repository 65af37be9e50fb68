"""The sweeper's added latency per SLURM trial over raw ``sbatch`` (issue 5's benchmark).

    . /tmp/nemo-rl-hpo-slurm/env.sh     # the local cluster (bash slurm/start.sh --gpus 2)
    python bench/slurm_latency.py                   # 2 interleaved repeats of 10 + 10
    python bench/slurm_latency.py --repeats 1 --jobs 3 --trials 3   # smoke run

Raw: ``sbatch --parsable --wrap`` of a job that stamps its start and end time; submit is the
client clock before ``sbatch``, start/end the job's stamps, and "observed done" the first poll
(every 0.1 s, ``squeue -h -j ID`` empty) after it left the queue — the round trip a client sees.
Jobs one at a time.

Sweeper: ``bench/apps/trivial`` with ``hydra/launcher=slurm`` (partition debug, CPU only, 1 CPU,
1 GB), ``n_jobs=1``, storage a journal file in the sweep dir (the SLURM default), one trial at a
time. Each trial stamps its body's time (``$BENCH_STAMPS``; the body itself takes ~0 ms).
Per-trial wall = sweep wall / trials (includes the driver's start-up) and the steady cycle =
median gap between consecutive trial bodies. Added latency = per-trial wall (or cycle) minus the
raw round trip. Raw jobs and sweeps alternate (raw, sweep, raw, sweep).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

OUT = c.WORK / "slurm_latency"


def slurm_env() -> dict[str, str]:
    env = c.clean_env()
    if "SLURM_CONF" not in env and Path("/tmp/nemo-rl-hpo-slurm/slurm.conf").exists():
        env["SLURM_CONF"] = "/tmp/nemo-rl-hpo-slurm/slurm.conf"
    return env


def raw_job(i: int, env: dict[str, str]) -> dict[str, float]:
    stamp = OUT / f"raw-{i}.txt"
    stamp.unlink(missing_ok=True)
    wrap = f"date +%s.%N > {stamp}; true; date +%s.%N >> {stamp}"
    t0 = time.time()
    job = (
        subprocess.run(
            [
                "sbatch",
                "--parsable",
                "-p",
                "debug",
                "-c",
                "1",
                "--mem=100M",
                f"--output={OUT / 'raw-%j.out'}",
                "--wrap",
                wrap,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .split(";")[0]
    )
    t_sub = time.time()
    while True:
        q = subprocess.run(["squeue", "-h", "-j", job], env=env, capture_output=True, text=True)
        if not q.stdout.strip():
            break
        time.sleep(0.1)
    t_done = time.time()
    start, end = (float(x) for x in stamp.read_text().split())
    return {
        "job": float(job),
        "sbatch_call_s": round(t_sub - t0, 3),
        "submit_to_start_s": round(start - t0, 3),
        "start_to_end_s": round(end - start, 3),
        "end_to_observed_s": round(t_done - end, 3),
        "round_trip_s": round(t_done - t0, 3),
    }


def sweep(rep: int, trials: int, env: dict[str, str]) -> dict[str, Any]:
    run = OUT / f"sweep-{rep}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    stamps = run / "stamps.txt"
    env = dict(env, BENCH_STAMPS=str(stamps))
    argv = [
        str(c.ours_python()),
        str(c.BENCH / "apps" / "trivial" / "app.py"),
        "-m",
        f"hydra.sweep.dir={run / 'sweep'}",
        f"hydra.sweeper.n_trials={trials}",
        "hydra.sweeper.n_jobs=1",
        "hydra.sweeper.sampler.seed=0",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=debug",
        "hydra.launcher.gpus_per_node=null",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        "hydra.launcher.timeout_min=10",
        "hydra.sweeper.write_report=false",
    ]
    t0 = time.time()
    proc = subprocess.run(argv, cwd=run, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"slurm sweep failed:\n{proc.stderr[-3000:]}")
    if not (run / "sweep" / "optuna.journal").exists():
        raise RuntimeError(f"no journal storage in {run / 'sweep'}: the SLURM default changed?")
    ts = [float(x) for x in stamps.read_text().split()]
    gaps = [b - a for a, b in zip(ts, ts[1:], strict=False)]
    return {
        "rep": rep,
        "trials": len(ts),
        "wall_s": round(wall, 2),
        "per_trial_wall_s": round(wall / len(ts), 3),
        "first_body_after_s": round(ts[0] - t0, 3),
        "last_body_to_exit_s": round(t0 + wall - ts[-1], 3),
        "cycle_median_s": round(c.median(gaps), 3),
        "cycles_s": [round(g, 3) for g in gaps],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=10, help="raw sbatch jobs per repeat")
    ap.add_argument("--trials", type=int, default=10, help="sweep trials per repeat")
    ap.add_argument("--out", default="slurm_latency")
    args = ap.parse_args()
    env = slurm_env()
    if (
        shutil.which("sbatch", path=env.get("PATH")) is None
        or subprocess.run(["sinfo", "-h"], env=env, capture_output=True).returncode
    ):
        raise SystemExit(
            "No Slurm here: `bash slurm/start.sh --gpus 2`, then "
            "`. /tmp/nemo-rl-hpo-slurm/env.sh`, then rerun."
        )
    OUT.mkdir(parents=True, exist_ok=True)
    raw: list[dict[str, float]] = []
    sweeps: list[dict[str, Any]] = []
    for rep in range(args.repeats):
        for i in range(args.jobs):
            raw.append(raw_job(rep * args.jobs + i, env))
        print(f"  raw rep {rep}: round trips {[r['round_trip_s'] for r in raw[-args.jobs :]]}")
        sweeps.append(sweep(rep, args.trials, env))
        print(f"  sweep rep {rep}: {sweeps[-1]}", flush=True)
    keys = [
        "sbatch_call_s",
        "submit_to_start_s",
        "start_to_end_s",
        "end_to_observed_s",
        "round_trip_s",
    ]
    raw_summary: dict[str, Any] = {k: round(c.median([r[k] for r in raw]), 3) for k in keys}
    raw_summary["round_trip_iqr_s"] = c.iqr([r["round_trip_s"] for r in raw])
    per_trial = c.median([s["per_trial_wall_s"] for s in sweeps])
    cycle = c.median([s["cycle_median_s"] for s in sweeps])
    summary = {
        "raw": raw_summary,
        "sweep_per_trial_wall_s": round(per_trial, 3),
        "sweep_cycle_s": round(cycle, 3),
        "added_per_trial_wall_s": round(per_trial - raw_summary["round_trip_s"], 3),
        "added_per_trial_cycle_s": round(cycle - raw_summary["round_trip_s"], 3),
    }
    print(summary)
    c.write_result(
        args.out,
        {
            "benchmark": "sweeper latency per SLURM trial vs raw sbatch",
            "command": " ".join(["python", "bench/slurm_latency.py", *sys.argv[1:]]),
            "machine": c.machine(),
            "versions": {"ours": c.versions(c.ours_python())},
            "settings": vars(args),
            "slurm": subprocess.run(
                ["sinfo", "-V"], env=env, capture_output=True, text=True
            ).stdout.strip(),
            "raw": raw,
            "sweeps": sweeps,
            "summary": summary,
        },
    )


if __name__ == "__main__":
    main()
