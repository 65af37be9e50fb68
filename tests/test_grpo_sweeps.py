"""``python train.py -m trial=grpo ...`` as a user runs it: Optuna with pruning, and PBT."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from tests.sweeplib import REPO, load, run_app, states

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TRAIN = REPO / "train.py"
# A shorter GRPO trial (30 steps after the warm start) keeps CI time sane; the path is the user's.
SHORT = [
    "grpo.max_num_steps=30",
    "grpo.val_period=5",
    "grpo.num_prompts_per_step=8",
    "task.validation_size=64",
    "checkpointing.save_period=10",
]


def test_grpo_sweep_prunes_and_keeps_conditional_keys_with_their_options(tmp_path: Path) -> None:
    run_app(
        TRAIN,
        "trial=grpo",
        "search=grpo",
        f"hydra.sweep.dir={tmp_path}",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=2",
        "hydra.sweeper.pruner.n_warmup_steps=5",
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.sampler.seed=0",
        *SHORT,
        cwd=REPO,
        timeout=1200,
    )
    study = load(tmp_path, "train")
    counts = states(study)
    assert counts.get("FAIL", 0) == 0, counts
    # Rule: the preset maximizes the validation reward without any flag on the command line.
    assert [d.name for d in study.directions] == ["MAXIMIZE"]
    for t in study.trials:
        job = yaml.safe_load((Path(t.user_attrs["job_dir"]) / ".hydra" / "config.yaml").read_text())
        dual = t.params["loss_fn"] == "dual_clip"
        # Rule: a conditional key is sampled, and exists in the trial's config, exactly with the
        # option that owns it.
        assert ("loss_fn.ratio_clip_c" in t.params) is dual, (t.number, t.params)
        assert ("ratio_clip_c" in job["loss_fn"]) is dual, (t.number, job["loss_fn"])
        if dual:
            assert job["loss_fn"]["ratio_clip_c"] == pytest.approx(t.params["loss_fn.ratio_clip_c"])
        loo = t.params["baseline"] == "leave_one_out"
        assert job["grpo"]["use_leave_one_out_baseline"] is loo
        # No supervised key reaches a GRPO job.
        assert "learning_rate" not in job and "optimizer" not in job
        # Rule: every metric the trial returns is kept: reward, tokens, wall time.
        if t.state == TrialState.COMPLETE:
            for metric in ("val_reward", "generated_tokens", "train_time_s", "val_reward_start"):
                assert f"metric:{metric}" in t.user_attrs, (t.number, metric)
            assert t.value == pytest.approx(t.user_attrs["metric:val_reward"])
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    # Rule: median pruning prunes trials, at a reported step (the last one, 30, included: the
    # pruner is asked at every validation), and stops at least one of them before the end.
    assert pruned, counts
    for t in pruned:
        assert t.user_attrs["pruned_at_step"] == max(t.intermediate_values)
    assert min(t.user_attrs["pruned_at_step"] for t in pruned) < 30, counts
    # Rule: reward curves (every validation) are in the results JSON and plotted in the report.
    results = json.loads((tmp_path / "optimization_results.json").read_text())
    for record in results["trials"]:
        curve = record["curves"]["val_reward"]
        assert curve and all(0.0 <= v <= 1.0 for v in curve.values()), record["number"]
        assert record["intermediate_values"]
    assert results["best"]["value"] == pytest.approx(study.best_value)
    report = tmp_path / "report"
    assert (report / "index.html").is_file()
    assert any(p.name.startswith("intermediate_values") for p in report.iterdir())
    # Rule: `nemo-rl-hpo best` prints the GRPO command of the best trial, NeMo RL key names.
    best = subprocess.run(
        [sys.executable, "-m", "nemo_rl_hpo.cli", "best", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.strip()
    argv = shlex.split(next(line for line in best.splitlines() if line.startswith("python")))
    assert "trial=grpo" in argv
    lr = study.best_trial.params["policy.optimizer.kwargs.lr"]
    assert any(a.startswith("policy.optimizer.kwargs.lr=") for a in argv), argv
    assert any(str(lr)[:6] in a for a in argv if a.startswith("policy.optimizer")), (lr, argv)


def test_grpo_pbt_exploits_restore_the_parent_checkpoint(tmp_path: Path) -> None:
    run_app(
        TRAIN,
        "trial=grpo",
        "hydra/sweeper=pbt",
        "search=grpo_pbt",
        f"hydra.sweep.dir={tmp_path}",
        "hydra.sweeper.population_size=4",
        "hydra.sweeper.num_rounds=3",
        "hydra.sweeper.perturbation_interval=10",
        "hydra.sweeper.quantile_fraction=0.5",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.seed=0",
        *SHORT,
        cwd=REPO,
        timeout=1200,
    )
    study = load(tmp_path, "train")
    trials = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(trials) == 12, states(study)
    for t in trials:
        # Rule: each round trains to its own end step (the step counter proves the resume).
        assert t.user_attrs["metric:step"] == 10 * (t.user_attrs["pbt:round"] + 1)
        # PBT ranks members by the validation reward, maximized.
        assert t.value == pytest.approx(t.user_attrs["metric:val_reward"])
    exploits = [t for t in trials if t.user_attrs.get("pbt:parent") is not None]
    # Rule: at least one member exploited another, starting from the parent's GRPO checkpoint
    # (policy, reference policy, optimizer, sampling RNG: one step_N dir).
    assert exploits
    for t in exploits:
        parent = t.user_attrs["pbt:parent"]
        start = Path(t.user_attrs["pbt:start_checkpoint"])
        assert f"member_{parent:03d}" in str(start)
        assert (start / f"step_{10 * t.user_attrs['pbt:round']}" / "policy_and_state.pt").is_file()
    results = json.loads((tmp_path / "optimization_results.json").read_text())["pbt"]
    last = [t for t in trials if t.user_attrs["pbt:round"] == 2]
    best = max(last, key=lambda t: t.value)
    assert results["best_member"] == best.user_attrs["pbt:member"]
    for step in results["schedule"]:
        assert set(step["params"]) == {
            "policy.optimizer.kwargs.lr",
            "loss_fn.reference_policy_kl_penalty",
            "policy.generation.temperature",
        }
