"""Search quality on the default trial itself, through ``python train.py -m`` as a user runs it.

    python bench/default_trial.py                                # 3 samplers x 3 seeds x 20 trials
    python bench/default_trial.py --seeds 1 --trials 8 --samplers ours,random   # smoke run

Each sweep is shortened (``max_steps``, the warm-up range scaled to it) so a trial takes
seconds; the basic launcher runs trials one after another. hydra-optuna-sweeper cannot run
this trial (its venv has no torch); ``tpe_indep`` (independent TPE, the model of its default
sampler, on Optuna 5) stands in for it. Reported: best ``val_loss`` after the budget, median
and IQR over seeds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402

SAMPLERS = {
    "ours": [],  # the sweeper's default: TPE multivariate+group
    "tpe": ["hydra.sweeper.sampler.group=false"],  # Optuna 5's default TPE (multivariate)
    "tpe_indep": [
        "hydra.sweeper.sampler.multivariate=false",
        "hydra.sweeper.sampler.group=false",
        "hydra.sweeper.sampler.constant_liar=false",
    ],
    "random": ["hydra/sweeper/sampler=random"],
    "gp": ["hydra/sweeper/sampler=gp"],
}


def run_sweep(sampler: str, seed: int, trials: int, steps: int) -> dict[str, object]:
    run = c.WORK / "default_trial" / f"{sampler}-{seed}"
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
        f"eval_interval={max(1, steps // 4)}",
        *SAMPLERS[sampler],
        f"hydra.sweeper.sampler.seed={seed}",
    ]
    proc = subprocess.run(argv, cwd=run, env=c.clean_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{sampler} seed {seed} failed:\n{proc.stderr[-3000:]}")
    import optuna

    study = optuna.load_study(
        study_name="train", storage=f"sqlite:///{run / 'sweep' / 'optuna.db'}"
    )
    values = [t.value for t in study.trials if t.value is not None]
    return {
        "sampler": sampler,
        "seed": seed,
        "best_val_loss": min(values),
        "completed": len(values),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--steps", type=int, default=160, help="max_steps of each trial")
    ap.add_argument("--samplers", default="ours,tpe_indep,random")
    ap.add_argument("--out", default="default_trial")
    args = ap.parse_args()
    samplers = args.samplers.split(",")
    runs = []
    for seed in range(args.seeds):
        for s in samplers:  # interleaved: machine load hits every sampler alike
            r = run_sweep(s, seed, args.trials, args.steps)
            runs.append(r)
            print(f"  seed {seed} {s:10s} best val_loss {r['best_val_loss']:.4f}", flush=True)
    summary = {}
    for s in samplers:
        xs = [float(str(r["best_val_loss"])) for r in runs if r["sampler"] == s]
        summary[s] = {"median": round(c.median(xs), 4), "iqr": c.iqr(xs), "values": xs}
        print(f"{s:10s} median best val_loss {summary[s]['median']:.4f}  IQR {summary[s]['iqr']}")
    c.write_result(
        args.out,
        {
            "benchmark": f"default trial, best val_loss after {args.trials} trials",
            "command": " ".join(["python", "bench/default_trial.py", *sys.argv[1:]]),
            "machine": c.machine(),
            "versions": {"ours": c.versions(c.ours_python())},
            "settings": vars(args),
            "runs": runs,
            "summary": summary,
        },
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
