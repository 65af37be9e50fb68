"""PBT vs the Optuna sweeper at the same total training steps on the default trial (issue 7).

    python bench/pbt_vs_optuna.py                    # 3 seeds, population 4 x 4 rounds x 25 steps
    python bench/pbt_vs_optuna.py --seeds 1 --interval 5   # smoke run

Both search ``search=pbt`` (learning_rate, weight_decay; the rest of the default trial fixed,
``warmup_steps`` shortened to 10 so it fits the 100-step run) through ``python train.py -m`` with
the basic launcher:

* **pbt**: ``hydra/sweeper=pbt``, ``population_size`` members, ``num_rounds`` rounds of
  ``perturbation_interval`` steps each (``max_steps`` = rounds x interval per member).
* **pbt_sync**: the same with ``synchronous=true`` (all members decide together after each
  round). With the basic launcher (one trial at a time) asynchronous PBT ranks the member that
  finishes a round first among itself only, so that member never exploits; synchronous does not
  have this gap.
* **optuna**: the Optuna sweeper's default sampler, ``population_size`` trials of
  ``max_steps`` = rounds x interval each.

Same total steps (population x rounds x interval). Reported: the best final val_loss of each
(PBT: the best member's value at its last round; Optuna: the best trial), per seed and median.
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


def run_sweep(kind: str, seed: int, pop: int, rounds: int, interval: int) -> dict[str, Any]:
    run = c.WORK / "pbt_vs_optuna" / f"{kind}-{seed}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    steps = rounds * interval
    common = [
        "search=pbt",
        f"max_steps={steps}",
        f"eval_interval={interval}",
        f"checkpoint_interval={interval}",
        f"warmup_steps={min(10, steps // 4)}",
        "hydra.sweeper.write_report=false",
    ]
    if kind.startswith("pbt"):
        extra = [
            f"hydra.sweeper.synchronous={str(kind == 'pbt_sync').lower()}",
            "hydra/sweeper=pbt",
            f"hydra.sweeper.population_size={pop}",
            f"hydra.sweeper.num_rounds={rounds}",
            f"hydra.sweeper.perturbation_interval={interval}",
            f"hydra.sweeper.seed={seed}",
            "hydra.sweeper.n_jobs=1",
        ]
    else:
        extra = [
            f"hydra.sweeper.n_trials={pop}",
            "hydra.sweeper.n_jobs=1",
            f"hydra.sweeper.sampler.seed={seed}",
        ]
    argv = [
        str(c.ours_python()),
        str(c.ROOT / "train.py"),
        "-m",
        f"hydra.sweep.dir={run / 'sweep'}",
        *common,
        *extra,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=run, env=c.clean_env(), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} seed {seed} failed:\n{proc.stderr[-3000:]}")
    import optuna

    storage = f"sqlite:///{run / 'sweep' / 'optuna.db'}"
    (name,) = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    done = [t for t in study.trials if t.state.name == "COMPLETE" and t.value is not None]
    if kind.startswith("pbt"):
        last = max(int(t.user_attrs["pbt:round"]) for t in done)
        finals = [t for t in done if int(t.user_attrs["pbt:round"]) == last]
    else:
        finals = done
    best = min(finals, key=lambda t: float(t.value or 0.0))
    # metric:step is the trial's step counter; PBT members resume, so their last round's
    # counter is the member's total (proof that rounds continue, not restart)
    last_step = max(int(t.user_attrs.get("metric:step", 0)) for t in done)
    return {
        "kind": kind,
        "seed": seed,
        "best_final_val_loss": round(float(best.value or 0.0), 5),
        "best_params": best.params,
        "records": len(done),
        "exploits": sum(t.user_attrs.get("pbt:parent") is not None for t in done),
        "finals": len(finals),
        "trained_steps": len(done) * interval if kind.startswith("pbt") else len(done) * steps,
        "max_step_counter": last_step,
        "wall_s": round(wall, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--population", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--interval", type=int, default=25, help="training steps per PBT round")
    ap.add_argument(
        "--kinds",
        default="pbt,pbt_sync,optuna",
        help="pbt: asynchronous (default); pbt_sync: synchronous rounds; optuna: the sweeper",
    )
    ap.add_argument("--out", default="pbt_vs_optuna")
    args = ap.parse_args()
    kinds = args.kinds.split(",")
    runs = []
    for seed in range(args.seeds):
        for kind in kinds:  # interleaved
            r = run_sweep(kind, seed, args.population, args.rounds, args.interval)
            runs.append(r)
            print(f"  seed {seed} {kind:6s} {r}", flush=True)
    summary = {}
    for kind in kinds:
        xs = [float(r["best_final_val_loss"]) for r in runs if r["kind"] == kind]
        summary[kind] = {"median": round(c.median(xs), 4), "iqr": c.iqr(xs), "values": xs}
        print(f"{kind:6s} median best final val_loss {summary[kind]['median']:.4f} {xs}")
    ratios: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        if kind == "optuna" or "optuna" not in kinds:
            continue
        pairs = [
            float(a["best_final_val_loss"]) / float(b["best_final_val_loss"])
            for a in runs
            for b in runs
            if a["kind"] == kind and b["kind"] == "optuna" and a["seed"] == b["seed"]
        ]
        ratios[kind] = {
            "per_seed": [round(x, 3) for x in pairs],
            "median": round(c.median(pairs), 3),
        }
    c.write_result(
        args.out,
        {
            "benchmark": "PBT vs Optuna sweeper, best final val_loss at equal total steps",
            "command": " ".join(["python", "bench/pbt_vs_optuna.py", *sys.argv[1:]]),
            "machine": c.machine(),
            "versions": {"ours": c.versions(c.ours_python())},
            "settings": vars(args),
            "total_steps": args.population * args.rounds * args.interval,
            "runs": runs,
            "summary": summary,
            "over_optuna": ratios,
        },
    )


if __name__ == "__main__":
    main()
