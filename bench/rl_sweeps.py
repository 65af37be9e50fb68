"""Sweeps of the GRPO trial (issue 16): samplers, pruners and PBT, through ``python train.py -m``.

    python bench/rl_sweeps.py                                    # 3 seeds, 30 trials, 150 steps
    python bench/rl_sweeps.py --seeds 1 --trials 4 --steps 20    # smoke run (~3 min)

Every sweep is ``python train.py -m trial=grpo search=grpo`` (the user's command) with the GRPO
trial shortened to ``--steps`` GRPO steps (validation every ``steps // 6``), ``--prompts``
prompts per step and ``--val-size`` held-out prompts, on the ``pool`` launcher with
``--n-jobs`` warm workers. Per seed, interleaved:

* **default**: the trial's default config, one run (what a user gets without searching);
* **random / tpe / auto**: ``--trials`` trials with ``hydra/sweeper/sampler=<name>``;
* **median / hyperband**: ``auto`` again with ``hydra/sweeper/pruner=<name>``, the same seed —
  total GRPO steps spent and the final best against the unpruned ``auto`` sweep;
* **pbt** vs **optuna** at equal total steps: ``hydra/sweeper=pbt search=grpo_pbt``, 4 members x
  3 rounds of ``steps // 3``, against 4 ``auto`` trials of ``steps`` over the same keys.

The objective is the validation reward (greedy, maximized). Reported: best value per sweep,
GRPO steps spent (pruned trials count the steps they trained), wall time; medians over seeds.
Results: ``bench/results/rl_sweeps.json`` (rewritten after every sweep, so a cut run keeps what
it finished).
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

WORKDIR = c.WORK / "rl_sweeps"


def trial_args(steps: int, prompts: int, val_size: int) -> list[str]:
    """The shortened GRPO trial every contender runs."""
    every = max(1, steps // 6)
    return [
        "trial=grpo",
        f"grpo.max_num_steps={steps}",
        f"grpo.val_period={every}",
        f"grpo.num_prompts_per_step={prompts}",
        f"task.validation_size={val_size}",
        f"checkpointing.save_period={steps}",
    ]


def contenders(steps: int, trials: int) -> dict[str, list[str]]:
    every = max(1, steps // 6)
    return {
        "random": ["hydra/sweeper/sampler=random", f"hydra.sweeper.n_trials={trials}"],
        "tpe": ["hydra/sweeper/sampler=tpe", f"hydra.sweeper.n_trials={trials}"],
        "auto": ["hydra/sweeper/sampler=auto", f"hydra.sweeper.n_trials={trials}"],
        "median": [
            "hydra/sweeper/sampler=auto",
            f"hydra.sweeper.n_trials={trials}",
            "hydra/sweeper/pruner=median",
            "hydra.sweeper.pruner.n_startup_trials=3",
            f"hydra.sweeper.pruner.n_warmup_steps={every}",
        ],
        "hyperband": [
            "hydra/sweeper/sampler=auto",
            f"hydra.sweeper.n_trials={trials}",
            "hydra/sweeper/pruner=hyperband",
            f"hydra.sweeper.pruner.min_resource={every}",
            f"hydra.sweeper.pruner.max_resource={steps}",
            "hydra.sweeper.pruner.reduction_factor=3",
        ],
        "optuna4": [
            "search=grpo_pbt",
            "hydra/sweeper/sampler=auto",
            "hydra.sweeper.n_trials=4",
        ],
        "pbt": [
            "hydra/sweeper=pbt",
            "search=grpo_pbt",
            "hydra.sweeper.population_size=4",
            "hydra.sweeper.num_rounds=3",
            f"hydra.sweeper.perturbation_interval={steps // 3}",
            "hydra.sweeper.quantile_fraction=0.5",
        ],
    }


def run_sweep(
    name: str, args: list[str], seed: int, trial: list[str], n_jobs: int
) -> dict[str, Any]:
    run = WORKDIR / f"{name}-{seed}"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    seed_arg = "hydra.sweeper.seed" if name == "pbt" else "hydra.sweeper.sampler.seed"
    argv = [
        str(c.ours_python()),
        str(c.ROOT / "train.py"),
        "-m",
        *trial,
        f"hydra.sweep.dir={run / 'sweep'}",
        f"hydra.sweeper.n_jobs={n_jobs}",
        "hydra.sweeper.write_report=false",
        f"{seed_arg}={seed}",
        *args,
    ]
    t0 = time.perf_counter()
    with open(run / "sweep.log", "w") as log:
        proc = subprocess.run(argv, cwd=c.ROOT, env=c.clean_env(), stdout=log, stderr=log)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{name} seed {seed} failed:\n{(run / 'sweep.log').read_text()[-3000:]}")
    trials = read_trials(run / "sweep" / "optuna.db")
    done = [t for t in trials if t["value"] is not None]
    if name == "pbt":  # the population's result: its members' values after the last round
        last = max(t["round"] for t in trials)
        done = [t for t in done if t["round"] == last]
    return {
        "contender": name,
        "seed": seed,
        "wall_s": round(wall, 1),
        "best": max((t["value"] for t in done if t["state"] == "COMPLETE"), default=None),
        "steps": sum(t["steps"] for t in trials),
        "states": {s: sum(t["state"] == s for t in trials) for s in {t["state"] for t in trials}},
        "trials": trials,
    }


def run_default(seed: int, trial: list[str]) -> dict[str, Any]:
    """The default config, one plain run (``grpo.seed`` varied per bench seed)."""
    run = WORKDIR / f"default-{seed}"
    shutil.rmtree(run, ignore_errors=True)
    argv = [
        str(c.ours_python()),
        str(c.ROOT / "train.py"),
        *trial,
        f"grpo.seed={42 + seed}",
        f"hydra.run.dir={run}",
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=c.ROOT, env=c.clean_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"default seed {seed} failed:\n{proc.stderr[-3000:]}")
    import torch

    from nemo_rl_hpo.training.grpo import latest_checkpoint

    ckpt = latest_checkpoint(run)
    assert ckpt is not None
    state = torch.load(ckpt / "policy_and_state.pt", map_location="cpu", weights_only=True)
    return {
        "contender": "default",
        "seed": seed,
        "wall_s": round(time.perf_counter() - t0, 1),
        "best": state["state"]["metrics"]["val_reward"],
        "start": state["state"]["val_reward_start"],
        "steps": state["state"]["step"],
    }


def read_trials(db: Path) -> list[dict[str, Any]]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    summaries = optuna.get_all_study_summaries(storage=f"sqlite:///{db}")
    study = optuna.load_study(study_name=summaries[0].study_name, storage=f"sqlite:///{db}")
    out = []
    for t in sorted(study.trials, key=lambda t: t.number):
        # GRPO steps the trial trained (the 10 warm-start steps of every fresh run not counted):
        # where it stopped (a pruned trial reports its last validation), minus where a PBT
        # round started (round x interval).
        end = t.user_attrs.get("metric:step") or max(t.intermediate_values, default=0)
        rnd = t.user_attrs.get("pbt:round")
        steps = end - rnd * (end // (rnd + 1)) if rnd is not None else end
        out.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "steps": int(steps),
                "params": t.params,
                "round": rnd,
            }
        )
    return out


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    names = sorted({r["contender"] for r in runs})
    out: dict[str, Any] = {}
    for n in names:
        rs = [r for r in runs if r["contender"] == n and r["best"] is not None]
        out[n] = {
            "seeds": len(rs),
            "best_median": c.median([r["best"] for r in rs]) if rs else None,
            "best_per_seed": [round(r["best"], 4) for r in rs],
            "steps_median": c.median([r["steps"] for r in rs]) if rs else None,
            "wall_s_median": c.median([r["wall_s"] for r in rs]) if rs else None,
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. +seeds-1")
    ap.add_argument("--out", default="rl_sweeps", help="bench/results/<out>.json")
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--val-size", type=int, default=256)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--contenders", default="default,random,tpe,auto,median,hyperband,optuna4,pbt")
    args = ap.parse_args()
    trial = trial_args(args.steps, args.prompts, args.val_size)
    table = contenders(args.steps, args.trials)
    chosen = args.contenders.split(",")
    payload: dict[str, Any] = {
        "machine": c.machine(),
        "command": " ".join(sys.argv),
        "args": vars(args),
        "runs": [],
    }
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for name in chosen:
            print(f"seed {seed}: {name} ...", flush=True)
            if name == "default":
                result = run_default(seed, trial)
            else:
                result = run_sweep(name, table[name], seed, trial, args.n_jobs)
            print(
                f"  best {result['best']}, steps {result['steps']}, {result['wall_s']} s",
                flush=True,
            )
            payload["runs"].append(result)
            payload["summary"] = summary(payload["runs"])
            c.write_result(args.out, payload)
    for name, s in payload["summary"].items():
        print(name, s)


if __name__ == "__main__":
    main()
