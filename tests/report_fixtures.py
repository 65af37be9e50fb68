"""Studies shaped like the ones our sweeper writes, for the report and CLI tests.

Built with ``study.add_trials`` (no training), carrying exactly the attributes of the sweeper
contract: ``nemo_rl_hpo:*`` study attributes, per-trial ``overrides``, ``metric:*``, ``curves``,
job ids, pruning and PBT lineage attributes.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from nemo_rl_hpo.sweep import cost

COMMAND = ["python", "train.py"]
BASE = ["trainer.max_steps=50", "hydra.sweeper.storage=null"]

DISTS = {
    "optimizer": CategoricalDistribution(["adam", "sgd"]),
    "optimizer.momentum": FloatDistribution(0.8, 0.99),
    "learning_rate": FloatDistribution(1e-6, 1e-3, log=True),
    "batch_size": IntDistribution(1, 16),
}


def _attrs(study: optuna.Study, sweep_dir: Path, objectives: list[str], kind: str) -> None:
    study.set_user_attr("nemo_rl_hpo:command", COMMAND)
    study.set_user_attr("nemo_rl_hpo:base_overrides", BASE)
    study.set_user_attr("nemo_rl_hpo:objectives", objectives)
    study.set_user_attr("nemo_rl_hpo:sweep_dir", str(sweep_dir))
    study.set_user_attr("nemo_rl_hpo:sampler", "TPESampler" if kind == "optuna" else "PBT")
    study.set_user_attr("nemo_rl_hpo:kind", kind)
    study.set_user_attr("nemo_rl_hpo:storage", f"sqlite:///{sweep_dir / 'optuna.db'}")


def _params(rng: random.Random) -> dict[str, object]:
    p: dict[str, object] = {"optimizer": rng.choice(["adam", "sgd"])}
    if p["optimizer"] == "sgd":
        p["optimizer.momentum"] = round(rng.uniform(0.8, 0.99), 4)
    p["learning_rate"] = float(f"{math.exp(rng.uniform(math.log(1e-6), math.log(1e-3))):.3g}")
    p["batch_size"] = rng.randint(1, 16)
    return p


def _loss(p: dict[str, object]) -> float:
    lr = float(p["learning_rate"])  # type: ignore[arg-type]
    return abs(math.log10(lr) + 4.0) + 0.02 * int(p["batch_size"])  # type: ignore[call-overload]


def write_marker(sweep_dir: Path, name: str) -> None:
    import json

    (sweep_dir / "sweep.json").write_text(
        json.dumps({"study_name": name, "storage": f"sqlite:///{sweep_dir / 'optuna.db'}"})
    )


def single_objective(
    sweep_dir: Path, n: int = 24, *, name: str = "so", seed: int = 0
) -> optuna.Study:
    """Complete, pruned (with curves), failed and one running trial; minimize val_loss."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    study = optuna.create_study(
        storage=f"sqlite:///{sweep_dir / 'optuna.db'}", study_name=name, direction="minimize"
    )
    _attrs(study, sweep_dir, ["val_loss"], "optuna")
    trials = []
    for i in range(n):
        p = _params(rng)
        final = _loss(p)
        state = TrialState.COMPLETE
        if i == n - 2:
            state = TrialState.FAIL
        elif i == n - 1:
            state = TrialState.RUNNING
        elif i % 6 == 5:
            state = TrialState.PRUNED
        steps = 8 if state == TrialState.COMPLETE else 3
        curve = {s: final + 1.0 / (s + 1) for s in range(steps)}
        attrs: dict[str, object] = {
            # as the sweeper records them: sampled values, then the fixed (non-hydra) overrides
            "overrides": [f"{k}={v}" for k, v in p.items()] + BASE[:1],
            "job_dir": str(sweep_dir / str(i)),
            "slurm_job_id": str(4000 + i),
            "curves": {"val_loss": {str(s): v for s, v in curve.items()}},
            "last_step": steps - 1,
        }
        if state == TrialState.COMPLETE:
            attrs["metric:val_loss"] = final
            attrs["metric:train_time_s"] = 3.0 + i / 10
        if state == TrialState.PRUNED:
            attrs["pruned_at_step"] = steps - 1
        if state == TrialState.FAIL:
            attrs["fail_reason"] = "loss became NaN at step 2"
        trials.append(
            create_trial(
                state=state,
                value=final if state == TrialState.COMPLETE else None,
                params=p,
                distributions={k: DISTS[k] for k in p},
                user_attrs=attrs,
                intermediate_values=curve if state != TrialState.FAIL else None,
            )
        )
    study.add_trials(trials)
    for t in study.trials:  # what each job cost, as the jobs and sacct record it
        ended = t.state != TrialState.RUNNING
        wall = 60.0 + 10 * t.number if ended else 0.0
        job = cost.JobCost(
            gpus=2,
            wall_s=wall,
            queue_s=5.0,
            gpu_s=2 * wall,
            source="sacct" if ended else "local",
            started=time.time() - 30,
            ended=ended,
            job_id=str(4000 + t.number),
        )
        cost.write(study._storage, study._study_id, t.number, str(4000 + t.number), job)
    write_marker(sweep_dir, name)
    return study


def multi_objective(sweep_dir: Path, n: int = 20, *, name: str = "mo") -> optuna.Study:
    """Two objectives (val_loss, train_time_s) in tension: a real Pareto front."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    study = optuna.create_study(
        storage=f"sqlite:///{sweep_dir / 'optuna.db'}",
        study_name=name,
        directions=["minimize", "minimize"],
    )
    _attrs(study, sweep_dir, ["val_loss", "train_time_s"], "optuna")
    trials = []
    for i in range(n):
        p = _params(rng)
        loss = _loss(p)
        tt = 100.0 / (1.0 + loss) + 20.0 * rng.random()
        trials.append(
            create_trial(
                values=[loss, tt],
                params=p,
                distributions={k: DISTS[k] for k in p},
                user_attrs={
                    "overrides": [f"{k}={v}" for k, v in p.items()],
                    "metric:val_loss": loss,
                    "metric:train_time_s": tt,
                    "job_dir": str(sweep_dir / str(i)),
                },
            )
        )
    study.add_trials(trials)
    write_marker(sweep_dir, name)
    return study


def pbt(sweep_dir: Path, members: int = 4, rounds: int = 3, *, name: str = "pbt") -> optuna.Study:
    """One trial per member and round; the worst member exploits the best one each round."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(2)
    study = optuna.create_study(
        storage=f"sqlite:///{sweep_dir / 'optuna.db'}", study_name=name, direction="minimize"
    )
    _attrs(study, sweep_dir, ["val_loss"], "pbt")
    lr = {m: 10 ** rng.uniform(-5, -3) for m in range(members)}
    loss = {m: 3.0 + rng.random() for m in range(members)}
    trials = []
    for r in range(rounds):
        parents: dict[int, int | None] = dict.fromkeys(range(members))
        if r > 0:
            ranked = sorted(loss, key=loss.__getitem__)
            best, worst = ranked[0], ranked[-1]
            parents[worst] = best
            lr[worst] = lr[best] * 1.2
            loss[worst] = loss[best]
        for m in range(members):
            loss[m] = loss[m] * 0.7 + abs(math.log10(lr[m]) + 4.0) * 0.1
            params = {"learning_rate": float(f"{lr[m]:.4g}")}
            trials.append(
                create_trial(
                    value=loss[m],
                    params=params,
                    distributions={"learning_rate": DISTS["learning_rate"]},
                    user_attrs={
                        "overrides": [f"learning_rate={params['learning_rate']}"],
                        "pbt:member": m,
                        "pbt:round": r,
                        "pbt:parent": parents[m],
                        "pbt:params": params,
                        "pbt:checkpoint": str(sweep_dir / f"m{m}" / f"r{r}.pt"),
                        "metric:val_loss": loss[m],
                        "curves": {
                            "val_loss": {str(r * 10 + s): loss[m] + 0.1 / (s + 1) for s in range(3)}
                        },
                    },
                    intermediate_values={r * 10 + s: loss[m] + 0.1 / (s + 1) for s in range(3)},
                )
            )
    study.add_trials(trials)
    write_marker(sweep_dir, name)
    return study


def plain(sweep_dir: Path, n: int = 6, *, name: str = "plain") -> optuna.Study:
    """A plain Optuna study, no nemo_rl_hpo attributes, no marker file (only optuna.db)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        storage=f"sqlite:///{sweep_dir / 'optuna.db'}",
        study_name=name,
        sampler=optuna.samplers.RandomSampler(seed=0),
    )
    study.optimize(lambda t: (t.suggest_float("x", -3, 3) - 1) ** 2 + t.suggest_int("y", 0, 3), n)
    return study
