"""This checkout against another commit, interleaved: sweeper overhead per trial and pool use.

    git worktree add --detach ../base <commit> && (cd ../base && python -m venv .venv &&
        .venv/bin/pip install -e ".[dev]")
    python bench/against.py --base-python ../base/.venv/bin/python        # results/against.json
    python bench/against.py --base-python ... --trials 40 --repeats 1      # smoke run (~2 min)

A refactor of the sweeper must not cost time. Two figures, each from the same app run by both
checkouts' installs (each venv imports its own code), alternated A, B, A, B, ... so machine
load hits both alike; medians over repeats and the median of the per-repeat ratios:

- **overhead per trial** (``bench/overhead.py``'s measure): ``bench/apps/trivial``, the basic
  launcher, SQLite, TPE, one trial at a time; steady-state cycle = (last stamp - first stamp)
  / (trials - 1), so start-up and the outputs at the end are excluded.
- **pool utilization** (``bench/utilization.py``'s measure): ``bench/apps/sleep``, skewed trial
  lengths on ``--n-jobs`` warm-pool slots; busy time / (slots x span from the first trial's
  start to the last one's end).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402
from utilization import durations  # noqa: E402

TRIVIAL = c.BENCH / "apps" / "trivial" / "app.py"
SLEEP = c.BENCH / "apps" / "sleep" / "app.py"


def _run(argv: list[str], run: Path) -> tuple[list[list[str]], float]:
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    env = c.clean_env()
    env["BENCH_STAMPS"] = str(run / "stamps.txt")
    t0 = time.time()
    proc = subprocess.run(argv, cwd=run, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed:\n{proc.stderr[-3000:]}")
    rows = [ln.split() for ln in (run / "stamps.txt").read_text().splitlines() if ln.strip()]
    shutil.rmtree(run, ignore_errors=True)
    return rows, wall


def overhead_ms(python: str, trials: int, run: Path) -> float:
    rows, _ = _run(
        [
            python,
            str(TRIVIAL),
            "-m",
            f"hydra.sweep.dir={run / 'sweep'}",
            f"hydra.sweeper.n_trials={trials}",
            "hydra.sweeper.n_jobs=1",
            "hydra.sweeper.write_report=false",
            "hydra/sweeper/sampler=tpe",
        ],
        run,
    )
    times = sorted(float(r[0]) for r in rows)
    if len(times) != trials:
        raise RuntimeError(f"{python}: {len(times)} trials ran, expected {trials}")
    return (times[-1] - times[0]) / (len(times) - 1) * 1000


def utilization(python: str, ds: list[float], n_jobs: int, run: Path) -> float:
    rows, _ = _run(
        [
            python,
            str(SLEEP),
            "-m",
            f"hydra.sweep.dir={run / 'sweep'}",
            f"hydra.sweeper.n_trials={len(ds)}",
            f"hydra.sweeper.n_jobs={n_jobs}",
            "durations=[" + ",".join(str(d) for d in ds) + "]",
            "hydra.sweeper.write_report=false",
            "hydra/launcher=pool",
        ],
        run,
    )
    if len(rows) != len(ds):
        raise RuntimeError(f"{python}: {len(rows)} trials ran, expected {len(ds)}")
    starts = [float(r[1]) for r in rows]
    ends = [float(r[2]) for r in rows]
    busy = sum(e - s for s, e in zip(starts, ends, strict=True))
    return busy / (n_jobs * (max(ends) - min(starts)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--base-python", required=True, help="python of the other checkout's venv")
    ap.add_argument("--base-label", default="base", help="what the other checkout is (a commit)")
    ap.add_argument("--trials", type=int, default=100, help="trials per overhead run")
    ap.add_argument("--util-trials", type=int, default=16, help="trials per utilization run")
    ap.add_argument("--n-jobs", type=int, default=4)
    ap.add_argument("--median", type=float, default=1.0, help="median trial length, seconds")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="against")
    args = ap.parse_args()
    pythons = {"this": str(c.ours_python()), args.base_label: args.base_python}
    ds = durations(args.util_trials, args.median, 0.8, 0)
    runs: list[dict[str, object]] = []
    payload: dict[str, object] = {
        "command": " ".join(sys.argv),
        "machine": c.machine(),
        "settings": vars(args),
        "runs": runs,
    }
    for rep in range(args.repeats):
        for label, py in pythons.items():  # alternated: load hits both alike
            run = c.WORK / "against" / f"{label}-{rep}"
            ms = overhead_ms(py, args.trials, run / "o")
            util = utilization(py, ds, args.n_jobs, run / "u")
            runs.append(
                {
                    "checkout": label,
                    "repeat": rep,
                    "overhead_ms": round(ms, 2),
                    "util_span": round(util, 3),
                }
            )
            print(
                f"rep {rep} {label}: overhead {ms:.1f} ms/trial, utilization {util:.3f}", flush=True
            )
        c.write_result(args.out, payload)
    base = args.base_label
    summary: dict[str, object] = {}
    for metric in ("overhead_ms", "util_span"):
        this = [float(r[metric]) for r in runs if r["checkout"] == "this"]  # type: ignore[arg-type]
        other = [float(r[metric]) for r in runs if r["checkout"] == base]  # type: ignore[arg-type]
        ratio = c.median([a / b for a, b in zip(this, other, strict=True)])
        summary[metric] = {
            "this_median": round(c.median(this), 3),
            f"{base}_median": round(c.median(other), 3),
            "ratio_this_over_base": round(ratio, 3),
        }
        print(
            f"{metric}: this {c.median(this):.3f}, {base} {c.median(other):.3f}, ratio {ratio:.3f}"
        )
    payload["summary"] = summary
    c.write_result(args.out, payload)


if __name__ == "__main__":
    main()
