"""Time ``nemo-rl-hpo report`` on a 5,000-trial SQLite study (target: <= 30 s on 2 shared cores).

    python bench/bench_report.py                 # writes bench/results/report.json
    python bench/bench_report.py --trials 500    # a quicker look

The study is built with ``study.add_trials`` (no sampling), shaped like one our sweeper writes:
a conditional space (``optimizer.momentum`` only with sgd), the ``nemo_rl_hpo:*`` study attributes,
per-trial overrides, metrics and learning curves, and a mix of complete, pruned and failed trials.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

HERE = Path(__file__).resolve().parent


def build_study(url: str, n_trials: int, *, seed: int = 0, steps: int = 10) -> optuna.Study:
    """A study of ``n_trials`` finished trials with the attributes our sweeper records."""
    rng = random.Random(seed)
    study = optuna.create_study(storage=url, study_name="bench", direction="minimize")
    study.set_user_attr("nemo_rl_hpo:command", ["python", "train.py"])
    study.set_user_attr("nemo_rl_hpo:base_overrides", ["trainer.max_steps=200"])
    study.set_user_attr("nemo_rl_hpo:objectives", ["val_loss"])
    study.set_user_attr("nemo_rl_hpo:sampler", "TPESampler")
    study.set_user_attr("nemo_rl_hpo:kind", "optuna")
    dists = {
        "learning_rate": FloatDistribution(1e-6, 1e-3, log=True),
        "batch_size": IntDistribution(1, 16),
        "weight_decay": FloatDistribution(1e-5, 1e-2, log=True),
        "dropout": FloatDistribution(0.0, 0.5),
        "optimizer": CategoricalDistribution(["adam", "adamw", "sgd"]),
        "optimizer.momentum": FloatDistribution(0.8, 0.99),
    }
    trials = []
    for number in range(n_trials):
        params = {
            "learning_rate": math.exp(rng.uniform(math.log(1e-6), math.log(1e-3))),
            "batch_size": rng.randint(1, 16),
            "weight_decay": math.exp(rng.uniform(math.log(1e-5), math.log(1e-2))),
            "dropout": rng.uniform(0.0, 0.5),
            "optimizer": rng.choice(["adam", "adamw", "sgd"]),
        }
        if params["optimizer"] == "sgd":
            params["optimizer.momentum"] = rng.uniform(0.8, 0.99)
        final = (
            abs(math.log10(params["learning_rate"]) + 4.0)
            + params["dropout"]
            + 0.01 * params["batch_size"]
            + rng.gauss(0, 0.05)
        )
        roll = rng.random()
        state = (
            TrialState.COMPLETE
            if roll < 0.8
            else TrialState.PRUNED
            if roll < 0.95
            else TrialState.FAIL
        )
        last = steps if state == TrialState.COMPLETE else rng.randint(1, steps - 1)
        curve = {s: final + 2.0 / (s + 1) for s in range(last)}
        attrs: dict[str, object] = {
            "overrides": [f"{k}={v}" for k, v in params.items()],
            "job_dir": f"/tmp/multirun/bench/{number}",
            "slurm_job_id": str(100000 + number),
            "curves": {"val_loss": {str(s): v for s, v in curve.items()}},
            "last_step": last - 1,
        }
        if state == TrialState.COMPLETE:
            attrs["metric:val_loss"] = final
            attrs["metric:train_time_s"] = 10.0 + rng.random()
        elif state == TrialState.PRUNED:
            attrs["pruned_at_step"] = last - 1
        else:
            attrs["fail_reason"] = "CUDA out of memory"
        trials.append(
            create_trial(
                state=state,
                value=final if state == TrialState.COMPLETE else None,
                params=params,
                distributions={k: dists[k] for k in params},
                user_attrs=attrs,
                intermediate_values=curve if state != TrialState.FAIL else None,
            )
        )
    study.add_trials(trials)
    return study


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "report.json")
    parser.add_argument(
        "--keep",
        type=Path,
        help="build the study in this dir, or reuse the one already there (building takes minutes)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sweep = args.keep if args.keep is not None else Path(tmp) / "sweep"
        sweep.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{sweep / 'optuna.db'}"
        t0 = time.perf_counter()
        reused = (sweep / "optuna.db").exists()
        if not reused:
            build_study(url, args.trials)
        build_s = time.perf_counter() - t0
        (sweep / "sweep.json").write_text(json.dumps({"study_name": "bench", "storage": url}))
        cli = [sys.executable, "-m", "nemo_rl_hpo.cli", "report", str(sweep)]
        t0 = time.perf_counter()
        proc = subprocess.run(cli, capture_output=True, text=True, check=False)
        report_s = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, file=sys.stderr)
            return 1
        report_dir = sweep / "report"
        sizes = {p.name: p.stat().st_size for p in sorted(report_dir.iterdir())}
        timings_path = report_dir / "timings.json"
        timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    result = {
        "benchmark": "nemo-rl-hpo report",
        "trials": args.trials,
        "build_study_s": None if reused else round(build_s, 2),
        "report_wall_s": round(report_s, 2),
        "target_s": 30.0,
        "stage_s": timings,
        "report_bytes": sizes,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "optuna": optuna.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("trials", "build_study_s", "report_wall_s")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
