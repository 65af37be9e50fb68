"""``python train.py -m ...`` on the default trial, as a user runs it: Optuna, pruning, PBT."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

from tests.sweeplib import REPO, load, run_app, states

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TRAIN = REPO / "train.py"
# A shorter default trial keeps CI time sane; the code path is the user's.
SHORT = [
    "max_steps=120",
    "eval_interval=20",
    "checkpoint_interval=60",
    "scheduler.step_size=range(20, 100, 20)",
    # bf16 is emulated, ~5x slower, on CPUs without AVX-512 (as CI may be); not what these check
    "precision=fp32",
]


def test_default_space_conditional_keys_follow_options(tmp_path: Path) -> None:
    run_app(
        TRAIN,
        f"hydra.sweep.dir={tmp_path}",
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.sampler.seed=4",
        "hydra.sweeper.objectives=[val_loss]",
        *SHORT,
        cwd=REPO,
        timeout=900,
    )
    study = load(tmp_path, "train")
    # The trial's default schedule (fidelity=auto): trials pause at rungs 20 and 60, the best
    # go on to 120, the rest end PRUNED where they were not promoted; none fails.
    counts = states(study)
    assert set(counts) <= {"COMPLETE", "PRUNED"} and sum(counts.values()) == 8, counts
    assert counts.get("PRUNED", 0) >= 1, counts
    owners = {
        "optimizer.momentum": ("optimizer", {"sgd"}),
        "optimizer.nesterov": ("optimizer", {"sgd"}),
        "scheduler.step_size": ("scheduler", {"step"}),
        "scheduler.gamma": ("scheduler", {"step"}),
        "loss.alpha": ("loss", {"focal"}),
        "loss.gamma": ("loss", {"focal"}),
        "loss.label_smoothing": ("loss", {"label_smoothing"}),
    }
    for t in study.trials:
        for key, (group, options) in owners.items():
            # Rule: a conditional key is in the trial exactly when its owning option is chosen.
            assert (key in t.params) == (t.params[group] in options), (t.number, key, t.params)
        if t.state != TrialState.COMPLETE:
            continue
        assert max(t.intermediate_values) == 120  # a complete trial trained the full run
        # Rule: every numeric metric of the returned mapping is kept on the trial.
        for metric in ("metric:val_loss", "metric:val_accuracy", "metric:train_time_s"):
            assert metric in t.user_attrs
        assert t.value == pytest.approx(t.user_attrs["metric:val_loss"])
    results = json.loads((tmp_path / "optimization_results.json").read_text())
    assert results["best"]["value"] == pytest.approx(study.best_value)
    assert results["best"]["command"].startswith("python train.py")
    assert results["cwd"] == str(REPO)  # where `python train.py` is to be run from

    # Rule: `nemo-rl-hpo best` prints a command that reproduces the best trial's value.
    best = subprocess.run(
        [sys.executable, "-m", "nemo_rl_hpo.cli", "best", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.strip()
    argv = shlex.split(best)
    assert argv[:2] == ["python", "train.py"]
    rerun = tmp_path / "rerun"
    subprocess.run(
        [sys.executable, *argv[1:], f"hydra.run.dir={rerun}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    saved = torch.load(rerun / "last.pt", weights_only=True)
    assert saved["metrics"]["val_loss"] == pytest.approx(study.best_value, rel=1e-6)


def test_median_pruning_with_subprocess_trials(tmp_path: Path) -> None:
    run_app(
        TRAIN,
        f"hydra.sweep.dir={tmp_path}",
        "hydra/launcher=submitit_local",
        "hydra.launcher._target_=hydra_plugins.nemo_rl_hpo.launchers.LocalLauncher",
        "hydra.launcher.timeout_min=10",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=3",
        "hydra.sweeper.pruner.n_warmup_steps=20",
        "hydra.sweeper.n_trials=12",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.objectives=[val_loss]",
        # A wide learning-rate range makes bad trials obvious early.
        "learning_rate=tag(log, interval(1e-5, 3e-2))",
        *SHORT,
        cwd=REPO,
        timeout=1200,
    )
    study = load(tmp_path, "train")
    counts = states(study)
    assert counts.get("FAIL", 0) == 0, counts
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    # Rule: median pruning stops at least one trial, and pruned trials trained fewer steps.
    assert len(pruned) >= 1, counts
    full = max(max(t.intermediate_values) for t in complete)
    for t in pruned:
        assert max(t.intermediate_values) < full
        assert t.user_attrs["pruned_at_step"] < full
        # Rule: a pruned trial is recorded with its last reported value.
        assert t.value == pytest.approx(t.intermediate_values[max(t.intermediate_values)])
    # Rule: intermediate values are exported for learning curves.
    results = json.loads((tmp_path / "optimization_results.json").read_text())
    exported = {t["number"]: t for t in results["trials"]}
    for t in pruned:
        assert exported[t.number]["intermediate_values"]


def test_pbt_population_rounds_exploit_and_resume_by_step(tmp_path: Path) -> None:
    run_app(
        TRAIN,
        "hydra/sweeper=pbt",
        "search=pbt",
        f"hydra.sweep.dir={tmp_path}",
        "hydra/launcher=submitit_local",
        "hydra.launcher._target_=hydra_plugins.nemo_rl_hpo.launchers.LocalLauncher",
        "hydra.launcher.timeout_min=10",
        "hydra.sweeper.population_size=4",
        "hydra.sweeper.num_rounds=3",
        "hydra.sweeper.perturbation_interval=40",
        "hydra.sweeper.quantile_fraction=0.5",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.seed=0",
        "hydra.sweeper.objectives=[val_loss]",
        "max_steps=120",
        "eval_interval=20",
        cwd=REPO,
        timeout=1200,
    )
    study = load(tmp_path, "train")
    trials = [t for t in study.trials if t.state == TrialState.COMPLETE]
    # Rule: population x rounds member rounds are recorded.
    assert len(trials) == 12
    rounds = {(t.user_attrs["pbt:member"], t.user_attrs["pbt:round"]) for t in trials}
    assert rounds == {(m, r) for m in range(4) for r in range(3)}
    for t in trials:
        # Rule: each round trains to its own end step (the step counter proves the resume).
        assert t.user_attrs["metric:step"] == 40 * (t.user_attrs["pbt:round"] + 1)
    exploits = [t for t in trials if t.user_attrs.get("pbt:parent") is not None]
    # Rule: at least one member exploited another and started from the parent's checkpoint.
    assert exploits
    for t in exploits:
        parent = t.user_attrs["pbt:parent"]
        start = t.user_attrs["pbt:start_checkpoint"]
        assert f"member_{parent:03d}" in start
        assert (Path(start) / "last.pt").exists() or Path(start).exists()
    results = json.loads((tmp_path / "optimization_results.json").read_text())["pbt"]
    last = [t for t in trials if t.user_attrs["pbt:round"] == 2]
    best = min(last, key=lambda t: t.value)
    # Rule: the results name the best member's final value and its schedule, round by round,
    # followed back through exploits.
    assert results["best_member"] == best.user_attrs["pbt:member"]
    assert results["final_value"] == pytest.approx(best.value)
    schedule = results["schedule"]
    assert [s["round"] for s in schedule] == [0, 1, 2]
    assert schedule[-1]["member"] == best.user_attrs["pbt:member"]
    for step in schedule:
        assert set(step["params"]) == {"learning_rate", "weight_decay"}


def test_results_yaml_is_upstream_compatible(tmp_path: Path) -> None:
    run_app(
        TRAIN,
        f"hydra.sweep.dir={tmp_path}",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.objectives=[val_loss]",
        *SHORT,
        cwd=REPO,
        timeout=600,
    )
    data = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert set(data) == {"name", "best_params", "best_value"}
    study = optuna.load_study(study_name="train", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert data["best_value"] == pytest.approx(study.best_value)
