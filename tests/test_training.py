"""The default trial: reproducible, resumes exactly, clear on bad input, quiet outside a sweep."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from omegaconf import DictConfig

from nemo_rl_hpo import trial
from nemo_rl_hpo.training import ConfigError, train
from nemo_rl_hpo.training.loop import CHECKPOINT_NAME
from tests.conftest import REPO, TINY

SHORT = [*TINY, "max_steps=12", "eval_interval=4", "checkpoint_interval=5"]


def _train_in(path: Path, cfg: DictConfig, monkeypatch: pytest.MonkeyPatch) -> dict[str, float]:
    path.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(path)
    return train(cfg)


def _sweep_context(monkeypatch: pytest.MonkeyPatch, **context: object) -> None:
    """Tell the job what a sweeper would (the JSON context of ``nemo_rl_hpo.trial``)."""
    monkeypatch.setenv(trial.ENV_TRIAL, json.dumps(context))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    saved = torch.load(path / CHECKPOINT_NAME, weights_only=True)
    return dict(saved["model"])


def test_same_seed_same_metrics_other_seed_differs(
    compose_trial: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = compose_trial(*SHORT, "dropout=0.1")
    first = _train_in(tmp_path / "a", cfg, monkeypatch)
    again = _train_in(tmp_path / "b", cfg, monkeypatch)
    other = _train_in(tmp_path / "c", compose_trial(*SHORT, "dropout=0.1", "seed=1"), monkeypatch)
    deterministic = {k: v for k, v in first.items() if k != "train_time_s"}
    assert deterministic == {k: v for k, v in again.items() if k != "train_time_s"}
    assert other["val_loss"] != first["val_loss"]


def test_stopped_run_resumes_exactly(
    compose_trial: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Dropout and a step between checkpoints and evaluations: RNG, batch order and the
    # running train loss must all come back from the checkpoint.
    cfg = compose_trial(*SHORT, "dropout=0.1", "scheduler=plateau")
    whole = _train_in(tmp_path / "whole", cfg, monkeypatch)
    _sweep_context(monkeypatch, steps=7)
    part = _train_in(tmp_path / "parts", cfg, monkeypatch)
    assert part["step"] == 7
    monkeypatch.delenv(trial.ENV_TRIAL)
    resumed = _train_in(tmp_path / "parts", cfg, monkeypatch)
    for key in ("val_loss", "val_accuracy", "train_loss", "test_loss", "step"):
        assert resumed[key] == whole[key], key
    for name, tensor in _weights(tmp_path / "whole").items():
        assert torch.equal(tensor, _weights(tmp_path / "parts")[name]), name


def test_resume_from_applies_this_runs_hyperparameters(
    compose_trial: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PBT exploit: start from another member's checkpoint, continue with explored values.
    parent = compose_trial(*SHORT, "optimizer=sgd", "learning_rate=0.01", "scheduler=step")
    _sweep_context(monkeypatch, steps=6)
    _train_in(tmp_path / "parent", parent, monkeypatch)
    child = compose_trial(
        *SHORT, "optimizer=sgd", "learning_rate=0.04", "scheduler=step", "optimizer.momentum=0.5"
    )
    _sweep_context(monkeypatch, steps=8, resume_from=str(tmp_path / "parent" / CHECKPOINT_NAME))
    metrics = _train_in(tmp_path / "child", child, monkeypatch)
    assert metrics["step"] == 8  # continued from the parent's step 6
    groups = torch.load(tmp_path / "child" / CHECKPOINT_NAME, weights_only=True)["optimizer"]
    for group in groups["param_groups"]:
        assert group["initial_lr"] == pytest.approx(0.04)
        assert group["lr"] == pytest.approx(0.04)  # warm-up over, first StepLR decay at 200
        assert group["momentum"] == 0.5
    assert groups["param_groups"][1]["weight_decay"] == 0.0  # biases and norms stay undecayed


@pytest.mark.parametrize(
    ("warmup", "lr_at_step_6"),
    [
        (["warmup_steps=null", "warmup_ratio=0.5"], 1.0),
        (["warmup_steps=null", "warmup_ratio=0.75"], 0.7),
        (["warmup_steps=6", "warmup_ratio=0.75"], 1.0),  # steps given: they win over the ratio
    ],
)
def test_warmup_ratio_is_a_fraction_of_this_runs_steps(
    compose_trial: Callable[..., DictConfig],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    warmup: list[str],
    lr_at_step_6: float,
) -> None:
    # max_steps=12: ratio 0.5 is a 6-step warm-up (peak rate reached at step 6), ratio 0.75 a
    # 9-step one (LinearLR from 1/10 of the peak: 1/10 + 6 * (9/10) / 9 = 0.7 at step 6).
    cfg = compose_trial(*SHORT, "learning_rate=0.01", *warmup)
    _sweep_context(monkeypatch, steps=6)
    _train_in(tmp_path, cfg, monkeypatch)
    groups = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["optimizer"]
    for group in groups["param_groups"]:
        assert group["lr"] == pytest.approx(0.01 * lr_at_step_6)


def test_pruned_trial_stops_at_the_first_evaluation(
    compose_trial: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = compose_trial(*SHORT)
    storage = f"journal://{tmp_path / 'journal.log'}"
    from nemo_rl_hpo.sweep.storage import open_storage

    study = optuna.create_study(storage=open_storage(storage), study_name="s")
    number = study.ask().number
    # The sweeper's pruner, as it hands it to the job: this one prunes any loss above -1.
    pruner = {"_target_": "optuna.pruners.ThresholdPruner", "upper": -1.0}
    _sweep_context(monkeypatch, storage=storage, study="s", number=number, pruner=pruner)
    metrics = _train_in(tmp_path / "run", cfg, monkeypatch)
    assert metrics["step"] == cfg.eval_interval
    reported = study.trials[number].intermediate_values
    assert reported == {cfg.eval_interval: pytest.approx(metrics["val_loss"])}


def test_bad_values_name_the_key(compose_trial: Callable[..., DictConfig]) -> None:
    for override, key in [
        ("learning_rate=-1", "learning_rate"),
        ("batch_size=0", "batch_size"),
        ("dropout=1.5", "dropout"),
        ("warmup_steps=700", "warmup_steps"),
        ("warmup_ratio=1.5", "warmup_ratio"),
        ("model.num_heads=5", "model.num_heads"),
        ("+optimizer.momentum=2", "optimizer.momentum"),
    ]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            train(compose_trial(override))


def test_trial_api_is_a_no_op_outside_a_sweep(compose_trial: Callable[..., DictConfig]) -> None:
    compose_trial()  # clears the sweeper's environment variables
    assert trial.info() is None
    assert trial.report(1, {"val_loss": 1.0}) is None
    assert trial.should_prune() is False
    assert trial.resume_from() is None and trial.target_steps() is None
    assert trial.checkpoint_dir() == Path.cwd()


def _train_py(*args: str, cwd: Path, wait: bool = True) -> Any:
    """``python train.py ARGS`` as a user runs it: finished (``wait``) or still running."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEMO_RL_HPO_")}
    command = [sys.executable, str(REPO / "train.py"), *args]
    if wait:
        return subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300
        )
    out = subprocess.DEVNULL
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=out)


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("learning_rate=-1", "learning_rate"),
        ("batch_size=0", "batch_size"),
        ("precision=fp8", "precision"),
        ("model=nope", "model"),
    ],
)
def test_bad_command_line_is_one_line_not_a_traceback(
    override: str, key: str, tmp_path: Path
) -> None:
    proc = _train_py(override, f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert any(key in line for line in proc.stderr.splitlines()), proc.stderr


@pytest.mark.e2e
def test_killed_run_resumes_to_the_same_result(tmp_path: Path) -> None:
    args = [*SHORT, "max_steps=300", "checkpoint_interval=20", "eval_interval=50", "dropout=0.1"]
    whole = _train_py(*args, f"hydra.run.dir={tmp_path / 'whole'}", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr

    run_dir = tmp_path / "killed"
    proc = _train_py(*args, f"hydra.run.dir={run_dir}", cwd=tmp_path, wait=False)
    while not (run_dir / CHECKPOINT_NAME).exists():
        assert proc.poll() is None, "the run ended before its first checkpoint"
        time.sleep(0.005)
    time.sleep(random.uniform(0.0, 0.3))  # somewhere after the first checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped_at = torch.load(run_dir / CHECKPOINT_NAME, weights_only=True)["step"]
    assert proc.returncode == -signal.SIGKILL and stopped_at < 300, "the run was not interrupted"

    resumed = _train_py(*args, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    final = torch.load(run_dir / CHECKPOINT_NAME, weights_only=True)
    expected = torch.load(tmp_path / "whole" / CHECKPOINT_NAME, weights_only=True)
    assert final["step"] == expected["step"] == 300
    assert final["metrics"]["val_loss"] == expected["metrics"]["val_loss"]
    for name, tensor in expected["model"].items():
        assert torch.equal(final["model"][name], tensor), name
