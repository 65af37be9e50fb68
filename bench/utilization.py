"""Parallel utilization: 24 trials of skewed length on 4 slots, ours vs hydra-optuna-sweeper.

    python bench/utilization.py                  # full run: results/utilization.json
    python bench/utilization.py --repeats 1 --trials 8 --median 1   # smoke run (~1 min)

Trial k sleeps ``durations[k]`` (lognormal, median ``--median`` s, sigma ``--sigma``, fixed seed).
Utilization = sum of durations / (n_jobs x wall), with wall from the first trial's start to the
last trial's end (stamped inside the trials; ``process`` uses the sweeper process's whole life).
The reference is the ideal list schedule of the same durations in the same order on ``n_jobs``
slots with zero overhead. Contenders: ours (asynchronous) with the warm worker pool
(``hydra/launcher=pool``) and with ``submitit_local`` through our fast-polling launcher (a new
process per trial), upstream's batches with ``submitit_local`` and with ``joblib``;
interleaved, median over repeats. The utilization span starts at the first trial's start, so
the pool's one-off worker start-up is outside it (``util_process`` includes it).
"""

from __future__ import annotations

import argparse
import heapq
import random
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

APP = c.BENCH / "apps" / "sleep" / "app.py"


def durations(n: int, median: float, sigma: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [round(median * rng.lognormvariate(0.0, sigma), 3) for _ in range(n)]


def list_schedule(ds: list[float], slots: int) -> float:
    """Makespan of starting each trial, in order, on the first free slot (zero overhead)."""
    free = [0.0] * slots
    heapq.heapify(free)
    end = 0.0
    for d in ds:
        start = heapq.heappop(free)
        heapq.heappush(free, start + d)
        end = max(end, start + d)
    return end


def batch_schedule(ds: list[float], slots: int) -> float:
    """Makespan of synchronous batches of ``slots`` trials (what upstream does), zero overhead."""
    return sum(max(ds[i : i + slots]) for i in range(0, len(ds), slots))


def argv(kind: str, run: Path, ds: list[float], n_jobs: int) -> list[str]:
    common = [
        str(APP),
        "-m",
        f"hydra.sweep.dir={run / 'sweep'}",
        f"hydra.sweeper.n_trials={len(ds)}",
        f"hydra.sweeper.n_jobs={n_jobs}",
        "durations=[" + ",".join(str(d) for d in ds) + "]",
    ]
    if kind == "ours submitit_local":
        return [
            str(c.ours_python()),
            *common,
            "hydra.sweeper.write_report=false",
            "hydra/launcher=submitit_local",
            "hydra.launcher._target_=hydra_plugins.nemo_rl_hpo.launchers.LocalLauncher",
        ]
    if kind == "ours pool":
        return [
            str(c.ours_python()),
            *common,
            "hydra.sweeper.write_report=false",
            "hydra/launcher=pool",
        ]
    up = str(c.upstream_python())
    if kind == "upstream submitit_local":
        return [up, *common, "hydra/launcher=submitit_local"]
    if kind == "upstream joblib":
        return [up, *common, "hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}"]
    raise ValueError(f"unknown contender {kind!r}")


def run_one(kind: str, ds: list[float], n_jobs: int, rep: int) -> dict[str, object]:
    run = c.WORK / "utilization" / f"{kind.replace(' ', '_')}-{rep}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    stamps = run / "stamps.txt"
    env = c.clean_env()
    env["BENCH_STAMPS"] = str(stamps)
    t0 = time.time()
    proc = subprocess.run(
        argv(kind, run, ds, n_jobs), cwd=run, env=env, capture_output=True, text=True
    )
    wall = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{proc.stderr[-3000:]}")
    rows = [line.split() for line in stamps.read_text().splitlines() if line.strip()]
    if len(rows) != len(ds):
        raise RuntimeError(f"{kind}: {len(rows)} trials ran, expected {len(ds)}")
    starts = [float(r[1]) for r in rows]
    ends = [float(r[2]) for r in rows]
    busy = sum(e - s for s, e in zip(starts, ends, strict=True))
    span = max(ends) - min(starts)
    gaps = (
        _gaps(proc.stdout + proc.stderr, rows, run / "sweep")
        if kind == "ours submitit_local"
        else {}
    )
    shutil.rmtree(run, ignore_errors=True)
    return {
        "contender": kind,
        "repeat": rep,
        "span_s": round(span, 2),
        "process_wall_s": round(wall, 2),
        "util_span": round(busy / (n_jobs * span), 3),
        "util_process": round(busy / (n_jobs * wall), 3),
        **gaps,
    }


_STAMP = r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]\[HYDRA\]"


def _ts(text: str, fmt: str = "%Y-%m-%d %H:%M:%S,%f") -> float:
    return datetime.strptime(text, fmt).timestamp()


def _gaps(log: str, rows: list[list[str]], sweep: Path) -> dict[str, float]:
    """Where a trial's slot time goes besides its body (medians, seconds).

    From our sweeper's log (``#k :`` when trial k is handed to the launcher, ``[i/N] trial k
    COMPLETE`` when collected) and each submitit job's log (pickle loaded, job completed,
    exiting), matched to the trial whose body ran inside that job.
    """
    jobs: list[tuple[float, float, float]] = []
    sub = re.compile(r"submitit INFO \((\S+ \S+)\) - (Loading pickle|Job completed|Exiting)")
    for out in sweep.glob(".submitit/**/*_log.out"):
        marks: dict[str, float] = {}
        for line in out.read_text(errors="replace").splitlines():
            if (m := sub.match(line)) is not None:
                marks.setdefault(m.group(2), _ts(m.group(1)))
        if len(marks) == 3:
            jobs.append((marks["Loading pickle"], marks["Job completed"], marks["Exiting"]))
    launched: dict[int, float] = {}
    noticed: dict[int, float] = {}
    for line in log.splitlines():
        m = re.match(_STAMP, line)
        if not m:
            continue
        t = _ts(m.group(1))
        if (hit := re.search(r"\t#(\d+) : ", line)) is not None:
            launched.setdefault(int(hit.group(1)), t)
        elif (hit := re.search(r"\] trial (\d+) [A-Z]+ value=", line)) is not None:
            noticed[int(hit.group(1))] = t
    to_start = [float(r[1]) - launched[int(r[0])] for r in rows if int(r[0]) in launched]
    to_notice = [noticed[int(r[0])] - float(r[2]) for r in rows if int(r[0]) in noticed]
    phases: dict[str, list[float]] = {
        "spawn_s (launch -> job loads its pickle)": [],
        "job_setup_s (pickle -> trial body)": [],
        "job_teardown_s (body end -> job completed)": [],
        "exit_collect_s (job exiting -> sweeper collected)": [],
    }
    names = list(phases)
    for r in rows:
        k, start, end = int(r[0]), float(r[1]), float(r[2])
        job = next((j for j in jobs if j[0] <= start <= j[1]), None)
        if job is None or k not in launched or k not in noticed:
            continue
        phases[names[0]].append(job[0] - launched[k])
        phases[names[1]].append(start - job[0])
        phases[names[2]].append(job[1] - end)
        phases[names[3]].append(noticed[k] - job[2])
    return {
        "launch_to_body_s": round(c.median(to_start), 2),
        "body_end_to_collected_s": round(c.median(to_notice), 2),
        **{name: round(c.median(xs), 2) for name, xs in phases.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--n-jobs", type=int, default=4)
    ap.add_argument("--median", type=float, default=2.0, help="median trial length, seconds")
    ap.add_argument("--sigma", type=float, default=0.8, help="lognormal sigma (skew)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="utilization")
    args = ap.parse_args()

    ds = durations(args.trials, args.median, args.sigma, args.seed)
    total = sum(ds)
    ideal_span = list_schedule(ds, args.n_jobs)
    ideal = total / (args.n_jobs * ideal_span)
    batch = total / (args.n_jobs * batch_schedule(ds, args.n_jobs))
    print(f"durations sum {total:.1f} s; ideal list schedule {ideal_span:.1f} s -> {ideal:.3f}")
    kinds = ["ours pool", "ours submitit_local", "upstream submitit_local", "upstream joblib"]
    runs: list[dict[str, object]] = []
    for rep in range(args.repeats):
        for kind in kinds:
            r = run_one(kind, ds, args.n_jobs, rep)
            runs.append(r)
            extra = ""
            if "launch_to_body_s" in r:
                extra = (
                    f"  launch->body {r['launch_to_body_s']} s,"
                    f" end->collected {r['body_end_to_collected_s']} s"
                )
            print(
                f"  [{rep}] {kind:25s} span {r['span_s']:6.1f} s  util {r['util_span']:.3f}{extra}"
            )
    summary: dict[str, dict[str, float]] = {}
    for kind in kinds:
        us = [float(str(r["util_span"])) for r in runs if r["contender"] == kind]
        up = [float(str(r["util_process"])) for r in runs if r["contender"] == kind]
        summary[kind] = {
            "util_span_median": round(c.median(us), 3),
            "util_process_median": round(c.median(up), 3),
            "of_ideal": round(c.median(us) / ideal, 3),
        }
    c.write_result(
        args.out,
        {
            "benchmark": f"utilization, {args.trials} skewed trials on {args.n_jobs} slots",
            "command": " ".join(["python", "bench/utilization.py", *sys.argv[1:]]),
            "machine": c.machine(),
            "versions": {
                "ours": c.versions(c.ours_python()),
                "upstream": c.versions(c.upstream_python()),
            },
            "settings": vars(args),
            "durations": ds,
            "ideal": {"list_schedule_s": round(ideal_span, 2), "utilization": round(ideal, 3)},
            "zero_overhead_batches": {"utilization": round(batch, 3)},
            "runs": runs,
            "summary": summary,
        },
    )
    print(f"\nideal list schedule: {ideal:.3f}   zero-overhead batches: {batch:.3f}")
    for kind, s in summary.items():
        print(
            f"{kind:25s} util {s['util_span_median']:.3f} (process {s['util_process_median']:.3f})"
            f"  = {s['of_ideal']:.2f} of ideal"
        )


if __name__ == "__main__":
    main()
