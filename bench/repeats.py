"""Seed repeats on the GRPO trial: does ``repeats=3`` pick better configurations than ``repeats=1``
at an equal budget of jobs?

    python bench/repeats.py                              # 3 sweep seeds x 12 jobs, short runs
    python bench/repeats.py --sweep-seeds 1 --jobs 6 --steps 20 --eval-seeds 2   # smoke run

For each sweep seed (the sampler's seed), two sweeps of ``python train.py -m trial=grpo`` with the
same number of jobs: ``repeats=1`` (``--jobs`` configurations, one run each, the trial's own
``grpo.seed``) and ``repeats=3`` (``--jobs``/3 configurations, each the mean of
``grpo.seed=0,1,2``). Each sweep's chosen configuration (its best trial) is then re-run on
``--eval-seeds`` fresh seeds (``grpo.seed=1000..``), none used by either sweep, and scored by the
mean of their final ``val_reward`` (higher is better). Reported per sweep seed and as the mean
over sweep seeds, with how many times each variant's pick was better. The GRPO runs are
shortened (``--steps`` GRPO steps after a 5-step warm start) so the whole benchmark fits a
shared 2-core machine; the numbers describe that shortened trial, not the default 150-step run.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

FINAL = re.compile(r"step \d+: val_reward (-?[0-9.]+)")


def short(steps: int) -> list[str]:
    return [
        "trial=grpo",
        f"grpo.max_num_steps={steps}",
        f"grpo.val_period={max(1, steps // 4)}",
        "sft.max_num_steps=5",
        "checkpointing.enabled=false",
        "precision=fp32",
    ]


def sweep(seed: int, repeats: int, jobs: int, steps: int) -> dict[str, object]:
    run = c.WORK / "repeats" / f"s{seed}-r{repeats}"
    shutil.rmtree(run, ignore_errors=True)
    args = [
        str(c.ours_python()),
        "train.py",
        "-m",
        *short(steps),
        f"hydra.sweep.dir={run}",
        f"hydra.sweeper.n_trials={jobs // repeats}",
        f"hydra.sweeper.sampler.seed={seed}",
        "hydra.sweeper.write_report=false",
        "hydra.sweeper.max_failure_rate=1.0",
    ]
    if repeats > 1:
        args += [f"hydra.sweeper.repeats={repeats}", "hydra.sweeper.seed_key=grpo.seed"]
    t0 = time.time()
    proc = subprocess.run(args, cwd=c.ROOT, env=c.clean_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    results = json.loads((run / "optimization_results.json").read_text())
    best = results["best"]
    # The reproduce command: [cd DIR &&] python train.py <the sweep's fixed overrides> <params>
    argv = shlex.split(best["command"].split("train.py", 1)[1])
    fixed = {o.split("=")[0] for o in short(steps)} | {"grpo.seed"}
    overrides = [o for o in argv if o.split("=")[0] not in fixed]
    return {
        "sweep_seed": seed,
        "repeats": repeats,
        "configurations": len(results["trials"]),
        "sweep_value": best["value"],
        "overrides": [o for o in overrides if not o.startswith("hydra.")],
        "wall_s": round(time.time() - t0, 1),
    }


def evaluate(overrides: list[str], seeds: list[int], steps: int, tag: str) -> list[float]:
    """Final val_reward of the configuration re-run on fresh seeds (two runs at a time)."""

    def one(s: int) -> float:
        out = c.WORK / "repeats" / "eval" / f"{tag}-{s}"
        shutil.rmtree(out, ignore_errors=True)
        args = [
            str(c.ours_python()),
            "train.py",
            *short(steps),
            *overrides,
            f"grpo.seed={s}",
            f"hydra.run.dir={out}",
        ]
        proc = subprocess.run(args, cwd=c.ROOT, env=c.clean_env(), capture_output=True, text=True)
        found = FINAL.findall(proc.stdout + proc.stderr)
        if proc.returncode != 0 or not found:
            raise SystemExit(f"evaluation failed:\n{proc.stderr[-3000:]}")
        return float(found[-1])

    with ThreadPoolExecutor(max_workers=max(1, c.machine()["cpus"] or 1)) as ex:
        return list(ex.map(one, seeds))


def _optimism(rows: list[dict[str, object]], reps: int) -> float:
    gaps = [
        float(str(r["sweep_value"])) - float(str(r["eval_mean"]))
        for r in rows
        if r["repeats"] == reps
    ]
    return round(statistics.fmean(gaps), 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sweep-seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=12, help="jobs per sweep (both variants)")
    ap.add_argument("--steps", type=int, default=40, help="GRPO steps per run")
    ap.add_argument("--eval-seeds", type=int, default=5)
    a = ap.parse_args()
    fresh = list(range(1000, 1000 + a.eval_seeds))
    rows = []
    for seed in range(a.sweep_seeds):
        for reps in (1, 3):  # interleaved
            r = sweep(seed, reps, a.jobs, a.steps)
            scores = evaluate(r["overrides"], fresh, a.steps, f"s{seed}-r{reps}")  # type: ignore[arg-type]
            r["eval_val_reward"] = scores
            r["eval_mean"] = round(statistics.fmean(scores), 4)
            rows.append(r)
            print(
                f"sweep seed {seed} repeats={reps}: {r['configurations']} configurations, "
                f"sweep value {float(str(r['sweep_value'])):.3f} -> fresh seeds mean "
                f"{r['eval_mean']:.3f} ({r['wall_s']} s)"
            )
    by = {
        reps: [float(str(r["eval_mean"])) for r in rows if r["repeats"] == reps] for reps in (1, 3)
    }
    wins3 = sum(b > a_ for a_, b in zip(by[1], by[3], strict=True))
    summary = {
        "repeats=1 mean of fresh-seed means": round(statistics.fmean(by[1]), 4),
        "repeats=3 mean of fresh-seed means": round(statistics.fmean(by[3]), 4),
        "sweep seeds where repeats=3 picked better": f"{wins3} of {len(by[1])}",
        # How optimistic the sweep's own number was (the winner's curse repeats should shrink).
        "optimism repeats=1": _optimism(rows, 1),
        "optimism repeats=3": _optimism(rows, 3),
    }
    c.write_result(
        "repeats",
        {
            "benchmark": "GRPO trial: repeats=3 vs repeats=1 at an equal budget of jobs",
            "command": " ".join(["python", "bench/repeats.py", *sys.argv[1:]]),
            "machine": c.machine(),
            "settings": vars(a),
            "runs": rows,
            "summary": summary,
        },
    )
    for k, v in summary.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
