"""Replay an unpruned sweep's learning curves through a pruner: the pruner alone, no sampler.

    python bench/pruning.py ...          # first: leaves bench/_work/pruning/none-<seed>/sweep
    python bench/pruning_replay.py       # results/pruning_replay.json
    python bench/pruning_replay.py --grid --out pruning_replay_grid   # settings sweep
    python bench/pruning_replay.py --grid --best-so-far --after-warmup --out ...  # loop variants

``bench/pruning.py`` compares whole sweeps, where a pruned sweep's sampler also proposes other
trials than the unpruned one, so a miss can come from the pruner or from the search diverging.
Here the unpruned sweep's trials are fed, in their order and with their recorded val_loss at
every evaluation, to a fresh study with the pruner: same trials, only the stopping differs.
Reported per seed: the steps spent until the unpruned best trial completes (or ``never`` when
the pruner stops it), the steps the whole replay spends, and the ratio to the unpruned sweep.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402


def pruners(steps: int, every: int) -> dict[str, Any]:
    import optuna

    return {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2 * every),
        "median_warmup40": lambda: optuna.pruners.MedianPruner(
            n_startup_trials=5, n_warmup_steps=int(0.4 * steps)
        ),
        "percentile75": lambda: optuna.pruners.PercentilePruner(
            75.0, n_startup_trials=5, n_warmup_steps=2 * every
        ),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(
            min_resource=2 * every, max_resource=steps, reduction_factor=3
        ),
        # hyperband's most aggressive bracket alone (asynchronous successive halving)
        "successive_halving": lambda: optuna.pruners.SuccessiveHalvingPruner(
            min_resource=2 * every, reduction_factor=3
        ),
    }


def grid(steps: int, every: int) -> dict[str, Any]:
    """Settings sweep of the median and hyperband pruners (and hyperband's first bracket alone).

    Asks whether *any* setting reaches the 2x target on every seed, not only the defaults the
    whole-sweep benchmark uses: first rung / warm-up at 1, 2 and 3 evaluations, and
    ``n_startup_trials`` / ``reduction_factor`` from mild to aggressive.
    """
    import optuna

    p = optuna.pruners
    out: dict[str, Any] = {}
    for n_startup in (3, 5, 10):
        for evals in (1, 2, 3):
            out[f"median n_startup_trials={n_startup} n_warmup_steps={evals * every}"] = (
                lambda n=n_startup, w=evals * every: p.MedianPruner(
                    n_startup_trials=n, n_warmup_steps=w
                )
            )
    rungs = {
        "hyperband": lambda m, r: p.HyperbandPruner(
            min_resource=m, max_resource=steps, reduction_factor=r
        ),
        "successive_halving": lambda m, r: p.SuccessiveHalvingPruner(
            min_resource=m, reduction_factor=r
        ),
    }
    for name, make in rungs.items():
        for evals in (1, 2, 3):
            for rf in (2, 3, 4):
                key = f"{name} min_resource={evals * every} reduction_factor={rf}"
                out[key] = lambda f=make, m=evals * every, r=rf: f(m, r)
    return out


def replay(
    curves: list[dict[int, float]],
    make_pruner: Any,
    best_so_far: bool = False,
    warmups: list[int] | None = None,
) -> list[tuple[str, int]]:
    """(state, steps trained) of every trial when ``make_pruner()`` decides.

    Two variants a training loop could adopt, to test whether they keep the winners: report
    the running minimum instead of the spiky val_loss (``best_so_far``), and ask the pruner
    only once the trial's own LR warm-up is over (``warmups``: each trial's warm-up steps).
    """
    import optuna

    # a fixed name: Hyperband assigns a trial to a bracket by hashing study name and trial number
    study = optuna.create_study(study_name="replay", pruner=make_pruner())
    out: list[tuple[str, int]] = []
    for i, curve in enumerate(curves):
        t = study.ask()
        last = 0
        pruned = False
        running = float("inf")
        for step in sorted(curve):
            running = min(running, curve[step])
            t.report(running if best_so_far else curve[step], step)
            last = step
            if (warmups is None or step >= warmups[i]) and t.should_prune():
                pruned = True
                break
        if pruned:
            study.tell(t, state=optuna.trial.TrialState.PRUNED)
            out.append(("PRUNED", last))
        else:
            study.tell(t, curve[max(curve)])
            out.append(("COMPLETE", last))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default="pruning_replay")
    ap.add_argument("--grid", action="store_true", help="a settings sweep instead of 5 contenders")
    ap.add_argument(
        "--best-so-far", action="store_true", help="report each trial's running minimum val_loss"
    )
    ap.add_argument(
        "--after-warmup",
        action="store_true",
        help="ask the pruner only after each trial's own warm-up (warmup_steps or warmup_ratio)",
    )
    ap.add_argument(
        "--workdir", type=Path, default=c.WORK / "pruning", help="where bench/pruning.py ran"
    )
    args = ap.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    per_seed: list[dict[str, Any]] = []
    for seed in range(args.seeds):
        db = args.workdir / f"none-{seed}" / "sweep" / "optuna.db"
        if not db.exists():
            raise SystemExit(f"{db} is missing: run bench/pruning.py first")
        study = optuna.load_study(study_name="train", storage=f"sqlite:///{db}")
        trials = sorted(
            (t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.number
        )
        curves = [dict(t.intermediate_values) for t in trials]
        steps = max(max(cv) for cv in curves)
        warmups = [
            int(t.params["warmup_ratio"] * steps)
            if "warmup_ratio" in t.params
            else int(t.params.get("warmup_steps", 0))
            for t in trials
        ]
        finals = [t.value for t in trials]
        every = min(cv_steps[1] - cv_steps[0] for cv_steps in (sorted(cv) for cv in curves))
        best = min(range(len(trials)), key=lambda i: float(finals[i] or 0.0))
        base = sum(max(cv) for cv in curves[: best + 1])
        row: dict[str, Any] = {
            "seed": seed,
            "trials": len(trials),
            "best_trial": trials[best].number,
            "best_val_loss": round(float(finals[best] or 0.0), 5),
            "unpruned_steps_to_best": base,
        }
        contenders = grid(steps, every) if args.grid else pruners(steps, every)
        for name, make in contenders.items():
            res = replay(curves, make, args.best_so_far, warmups if args.after_warmup else None)
            reached = res[best][0] == "COMPLETE"
            to_best = sum(s for _, s in res[: best + 1])
            row[name] = {
                "best_survives": reached,
                "steps_to_best": to_best if reached else None,
                "ratio_to_best": round(base / to_best, 2) if reached else None,
                "total_steps": sum(s for _, s in res),
                "total_ratio": round(sum(max(cv) for cv in curves) / sum(s for _, s in res), 2),
                "pruned": sum(st == "PRUNED" for st, _ in res),
            }
        per_seed.append(row)
        print(row, flush=True)
    c.write_result(
        args.out,
        {
            "benchmark": "pruners replayed on the unpruned sweeps' recorded learning curves",
            "command": " ".join(["python", "bench/pruning_replay.py", *sys.argv[1:]]),
            "machine": c.machine(),
            "per_seed": per_seed,
            "grid": args.grid,
            "best_so_far": args.best_so_far,
            "after_warmup": args.after_warmup,
        },
    )


if __name__ == "__main__":
    main()
