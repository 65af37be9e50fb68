"""Training steps saved by pruning on the default trial (issue 4's benchmark).

    python bench/pruning.py                       # 3 seeds x (none, median, hyperband), 30 trials
    python bench/pruning.py --seeds 1 --trials 6     # smoke run

Each seed runs an unpruned sweep, a median-pruned and a hyperband-pruned one with the same
sampler seed (the default sampler), interleaved, through ``python train.py -m`` with the basic
launcher (trials one after another). Trials are shortened (``max_steps``, evaluation every
``max_steps // 10`` steps) so a sweep takes about a minute.

Metric: training steps spent (sum of ``user_attrs["metric:step"]`` over trials in trial order,
pruned trials counting the steps they trained) until the sweep first reaches the unpruned
``--trials``-trial sweep's best val_loss with a COMPLETE trial. The pruned sweeps may run up to
``--budget`` times as many trials (the point of pruning: the same compute buys more trials); a
pruned sweep that never reaches the target counts its total steps and is marked not reached.
Ratio = unpruned steps / pruned steps (target >= 2x).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

WORKDIR = c.WORK / "pruning"  # sweeps of the last run; bench/pruning_replay.py reads them


def pruner_args(steps: int) -> dict[str, list[str]]:
    """The contenders: the pruner overrides for a trial of ``steps`` steps."""
    every = max(1, steps // 10)
    return {
        "none": [],
        "median": [
            "hydra/sweeper/pruner=median",
            "hydra.sweeper.pruner.n_startup_trials=5",
            f"hydra.sweeper.pruner.n_warmup_steps={2 * every}",
        ],
        "hyperband": [
            "hydra/sweeper/pruner=hyperband",
            # the first evaluation (warm-up still running) says little: first rung at the second
            f"hydra.sweeper.pruner.min_resource={2 * every}",
            f"hydra.sweeper.pruner.max_resource={steps}",
            "hydra.sweeper.pruner.reduction_factor=3",
        ],
        # hyperband's most aggressive bracket alone (Optuna's asynchronous successive halving)
        "successive_halving": [
            "hydra/sweeper/pruner=successive_halving",
            f"hydra.sweeper.pruner.min_resource={2 * every}",
            "hydra.sweeper.pruner.reduction_factor=3",
        ],
    }


def run_sweep(
    pruner: str,
    seed: int,
    trials: int,
    steps: int,
    warmup_frac: float,
    decided: Callable[[list[dict[str, Any]]], bool] | None = None,
) -> dict[str, Any]:
    """One ``python train.py -m`` sweep; with ``decided``, stopped once it returns True.

    ``decided`` sees the finished trials so far (in trial order): a pruned sweep that already
    reached the target, or already spent more steps than the unpruned sweep needed, has its
    answer, and the rest of its budget would only burn CPU time.
    """
    run = WORKDIR / f"{pruner}-{seed}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    argv = [
        str(c.ours_python()),
        str(c.ROOT / "train.py"),
        "-m",
        f"hydra.sweep.dir={run / 'sweep'}",
        f"hydra.sweeper.n_trials={trials}",
        "hydra.sweeper.n_jobs=1",
        "hydra.sweeper.write_report=false",
        f"max_steps={steps}",
        f"eval_interval={max(1, steps // 10)}",
        f"checkpoint_interval={steps}",
        # grammar strings for the sweeper: warm-up and step sizes scaled to this max_steps
        f"warmup_ratio=interval(0,{warmup_frac})",
        f"scheduler.step_size=range({steps // 5},{steps},{steps // 5})",
        *pruner_args(steps)[pruner],
        f"hydra.sweeper.sampler.seed={seed}",
    ]
    t0 = time.perf_counter()
    db = run / "sweep" / "optuna.db"
    stopped_early = False
    with open(run / "sweep.log", "w") as log:
        proc = subprocess.Popen(argv, cwd=run, env=c.clean_env(), stdout=log, stderr=log)
        while proc.poll() is None:
            time.sleep(5)
            if decided is not None and db.exists():
                done = [t for t in read_trials(db) if t["state"] in ("COMPLETE", "PRUNED")]
                if decided(done):
                    proc.terminate()
                    proc.wait()
                    stopped_early = True
    wall = time.perf_counter() - t0
    if proc.returncode != 0 and not stopped_early:
        tail = (run / "sweep.log").read_text()[-3000:]
        raise RuntimeError(f"{pruner} seed {seed} failed:\n{tail}")
    trials_out = read_trials(db)
    if stopped_early:  # the trial cut off mid-run is no result
        trials_out = [t for t in trials_out if t["state"] in ("COMPLETE", "PRUNED")]
    return {
        "pruner": pruner,
        "seed": seed,
        "wall_s": round(wall, 1),
        "stopped_early": stopped_early,
        "trials": trials_out,
    }


def read_trials(db: Path) -> list[dict[str, Any]]:
    """Every trial of a sweep's study, in trial order, with the steps it trained."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="train", storage=f"sqlite:///{db}")
    trials_out = []
    for t in sorted(study.trials, key=lambda t: t.number):
        inter = t.intermediate_values
        # a pruned trial's value is its last reported val_loss; a sweep "reaches" a target
        # only through a trial's final value, as a user would pick it
        trials_out.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "steps": int(t.user_attrs.get("metric:step", max(inter, default=0))),
                "pruned_at_step": t.user_attrs.get("pruned_at_step"),
            }
        )
    return trials_out


def _reuse_unpruned(seed: int, steps: int) -> dict[str, Any]:
    """The unpruned sweep an earlier ``bench/pruning.py`` left for ``seed``."""
    db = WORKDIR / f"none-{seed}" / "sweep" / "optuna.db"
    if not db.exists():
        raise SystemExit(f"{db} is missing: run without --reuse-unpruned first")
    trials = read_trials(db)
    if max(t["steps"] for t in trials) != steps:
        raise SystemExit(f"{db} holds trials of another --steps than {steps}")
    return {"pruner": "none", "seed": seed, "wall_s": None, "reused": True, "trials": trials}


def best_complete(run: dict[str, Any]) -> float:
    """Best val_loss among COMPLETE trials (a pruned trial's partial value is no result)."""
    return float(min(t["value"] for t in run["trials"] if t["state"] == "COMPLETE"))


def steps_to_reach(run: dict[str, Any], target: float) -> tuple[int, bool]:
    """Steps spent, in trial order, until a COMPLETE trial reaches ``target`` (or the total)."""
    spent = 0
    for t in run["trials"]:
        spent += t["steps"]
        if t["state"] == "COMPLETE" and t["value"] is not None and t["value"] <= target:
            return spent, True
    return spent, False


def _trials_to_reach(run: dict[str, Any], target: float) -> int:
    """Trials run until the target was first reached (all of them if never)."""
    for i, t in enumerate(run["trials"]):
        if t["state"] == "COMPLETE" and t["value"] is not None and t["value"] <= target:
            return i + 1
    return len(run["trials"])


def main() -> None:
    global WORKDIR
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--trials", type=int, default=30, help="trials of the unpruned sweep")
    ap.add_argument(
        "--budget", type=float, default=3.0, help="pruned sweeps run up to budget x trials"
    )
    ap.add_argument("--steps", type=int, default=100, help="max_steps of each trial")
    ap.add_argument(
        "--warmup-frac",
        type=float,
        default=0.1,
        help="searched warm-up range as a fraction of max_steps (a pruner compares trials at the "
        "same step; during a warm-up of 40%% of the run they are not comparable yet)",
    )
    ap.add_argument("--pruners", default="none,median,hyperband")
    ap.add_argument(
        "--reuse-unpruned",
        action="store_true",
        help="take the unpruned sweeps from an earlier run's bench/_work/pruning/none-<seed>",
    )
    ap.add_argument(
        "--stop-when-decided",
        action="store_true",
        help="stop a pruned sweep once it reached the target or spent the unpruned sweep's "
        "steps to it (its ratio is then known); its 'best val_loss' is the best so far",
    )
    ap.add_argument("--parallel", type=int, default=1, help="pruned sweeps run at once")
    ap.add_argument("--out", default="pruning")
    ap.add_argument("--workdir", type=Path, default=WORKDIR, help="where the sweeps run")
    args = ap.parse_args()
    WORKDIR = args.workdir
    pruners = args.pruners.split(",")
    if pruners[0] != "none":
        raise SystemExit("--pruners must start with 'none': it sets the target val_loss.")
    seeds = list(range(args.seeds))
    unpruned: dict[int, dict[str, Any]] = {}
    for seed in seeds:
        if args.reuse_unpruned:
            r = _reuse_unpruned(seed, args.steps)
        else:
            r = run_sweep("none", seed, args.trials, args.steps, args.warmup_frac)
        unpruned[seed] = r
        print(f"  seed {seed} none       best {best_complete(r):.4f} ({r['wall_s']} s)", flush=True)

    def pruned_sweep(seed: int, p: str) -> dict[str, Any]:
        target = best_complete(unpruned[seed])
        base_steps, _ = steps_to_reach(unpruned[seed], target)

        def decided(done: list[dict[str, Any]]) -> bool:
            spent, reached = steps_to_reach({"trials": done}, target)
            return reached or spent >= base_steps

        n = int(args.trials * args.budget)
        stop = decided if args.stop_when_decided else None
        r = run_sweep(p, seed, n, args.steps, args.warmup_frac, stop)
        print(f"  seed {seed} {p:10s} best {best_complete(r):.4f} ({r['wall_s']} s)", flush=True)
        return r

    jobs = [(seed, p) for seed in seeds for p in pruners[1:]]
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        done = list(pool.map(lambda sp: pruned_sweep(*sp), jobs))
    pruned_runs = {(r["seed"], r["pruner"]): r for r in done}
    runs: list[dict[str, Any]] = []
    per_seed: list[dict[str, Any]] = []
    for seed in seeds:
        by = {"none": unpruned[seed]}
        by.update({p: pruned_runs[(seed, p)] for p in pruners[1:]})
        runs.extend(by.values())
        target = best_complete(by["none"])
        row: dict[str, Any] = {"seed": seed, "target": round(target, 5)}
        base_steps, _ = steps_to_reach(by["none"], target)
        for p in pruners:
            steps, reached = steps_to_reach(by[p], target)
            row[p] = {
                "steps_to_target": steps,
                "reached": reached,
                "total_steps": sum(t["steps"] for t in by[p]["trials"]),
                "trials_to_target": _trials_to_reach(by[p], target),
                "pruned": sum(t["state"] == "PRUNED" for t in by[p]["trials"]),
                "best_val_loss": round(best_complete(by[p]), 5),
                "ratio": round(base_steps / steps, 3),
                "wall_s": by[p]["wall_s"],
            }
        per_seed.append(row)
        print(f"  seed {seed}: {json.dumps(row)}", flush=True)
    summary: dict[str, dict[str, Any]] = {}
    for p in pruners:
        rs = [row[p] for row in per_seed]
        summary[p] = {
            key: round(c.median([float(r[key]) for r in rs]), 4)
            for key in (
                "steps_to_target",
                "trials_to_target",
                "total_steps",
                "pruned",
                "best_val_loss",
                "ratio",
            )
        }
        summary[p]["reached"] = f"{sum(r['reached'] for r in rs)}/{len(rs)}"
        print(f"{p:10s} {summary[p]}")
    c.write_result(
        args.out,
        {
            "benchmark": "training steps to reach the unpruned sweep's best val_loss",
            "command": " ".join(["python", "bench/pruning.py", *sys.argv[1:]]),
            "machine": c.machine(),
            "versions": {"ours": c.versions(c.ours_python())},
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "runs": runs,
            "per_seed": per_seed,
            "summary": summary,
        },
    )


if __name__ == "__main__":
    main()
