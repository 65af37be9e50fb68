"""The default trial's training loop: ``train(cfg) -> metrics``.

Run it through the entry point at the repository root::

    python train.py                              # one run of the default trial
    python train.py model=bert optimizer=sgd     # another point of the search space

It reads top to bottom: build everything from the config, resume from a checkpoint if there is
one, train with autocast, clipping and the LR schedule, evaluate every ``eval_interval`` steps
(reporting to the sweeper, stopping early when it prunes), checkpoint every
``checkpoint_interval`` steps and at the end. The validation loss is always plain cross-entropy,
whatever the training loss, so trials with different ``loss`` options compare fairly.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from nemo_rl_hpo import trial
from nemo_rl_hpo.training.config import ConfigError, resolve_warmup, validate
from nemo_rl_hpo.training.data import Split, Task
from nemo_rl_hpo.training.precision import Precision
from nemo_rl_hpo.training.schedules import Schedule, set_learning_rate

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"  # the latest checkpoint in a trial's checkpoint dir
EVAL_BATCH = 1024


def train(cfg: DictConfig) -> dict[str, float]:
    """Train the default trial described by ``cfg`` and return its final metrics."""
    validate(cfg)
    resolve_warmup(cfg)
    torch.set_num_threads(int(cfg.num_threads))
    device = resolve_device(str(cfg.device))
    precision: Precision = _build(cfg, "precision")
    precision.check(device)

    # --- build: data, model, optimizer, schedule, loss ---------------------------------------
    torch.manual_seed(int(cfg.seed))
    task: Task = _build(cfg, "task")
    train_x, train_y = task.train.tokens.to(device), task.train.labels.to(device)
    model: nn.Module = _build(cfg, "model").to(device)
    optimizer: torch.optim.Optimizer = _build(cfg, "optimizer", param_groups(model))
    schedule: Schedule = _build(cfg, "scheduler", optimizer)
    loss_fn: nn.Module = _build(cfg, "loss")
    scaler = precision.scaler(device)
    batches = torch.Generator().manual_seed(int(cfg.seed))  # batch order, checkpointed

    # --- resume: our own latest checkpoint (requeue, rerun), else the sweeper's (PBT exploit) --
    ckpt_dir = trial.checkpoint_dir()
    state: dict[str, Any] = {
        "step": 0,
        "best_val_loss": math.inf,
        "metrics": {},  # those of the latest evaluation
        "train_loss_sum": 0.0,  # training loss since that evaluation
        "train_loss_count": 0,
        "time_s": 0.0,  # training time of the run so far, over all its resumptions
    }
    source = latest_checkpoint(ckpt_dir)
    explored = source is None and trial.resume_from() is not None
    if explored:
        source = latest_checkpoint(trial.resume_from())  # type: ignore[arg-type]
        if source is None:
            raise FileNotFoundError(f"no checkpoint to resume from at {trial.resume_from()}")
    if source is not None:
        saved = torch.load(source, map_location=device, weights_only=True)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        scaler.load_state_dict(saved["scaler"])
        torch.set_rng_state(saved["rng"]["torch"])
        if device.type == "cuda" and saved["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(saved["rng"]["cuda"], device)
        batches.set_state(saved["rng"]["batches"])
        state = {k: saved[k] for k in state}
        if explored:  # PBT: this job's (explored) hyperparameters replace the parent's
            apply_hyperparameters(optimizer, schedule, cfg)
        log.info("resumed from %s at step %d", source, state["step"])

    max_steps = int(cfg.max_steps)
    target = trial.target_steps()
    end = max_steps if target is None else min(int(target), max_steps)
    step = int(state["step"])
    if step >= end:  # nothing left to train: the checkpoint already holds the answer
        return dict(state["metrics"])

    # --- train ----------------------------------------------------------------------------
    started = time.perf_counter()
    metrics: dict[str, float] = dict(state["metrics"])
    while step < end:
        model.train()
        idx = torch.randint(0, len(task.train), (int(cfg.batch_size),), generator=batches)
        x, y = train_x[idx.to(device)], train_y[idx.to(device)]
        with precision.autocast(device):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        scaler.scale(loss).backward()
        if cfg.max_grad_norm is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), float(cfg.max_grad_norm))
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        step += 1
        diverged = not math.isfinite(loss.item())
        state["train_loss_sum"] += loss.item()
        state["train_loss_count"] += 1

        pruned = False
        if diverged or step % int(cfg.eval_interval) == 0 or step == end:
            val_loss, val_accuracy = evaluate(model, task.validation, precision, device)
            metrics = {
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
                "train_loss": state["train_loss_sum"] / state["train_loss_count"],
                "step": float(step),
            }
            state.update(train_loss_sum=0.0, train_loss_count=0)
            state["best_val_loss"] = min(state["best_val_loss"], val_loss)
            schedule.step_eval(val_loss)
            trial.report(step, {"val_loss": val_loss, "val_accuracy": val_accuracy})
            pruned = trial.should_prune()
            log.debug("step %d: val_loss %.4f val_accuracy %.3f", step, val_loss, val_accuracy)
        if diverged:
            log.warning("training loss is %s at step %d: stopping this run", loss.item(), step)
        stop = pruned or diverged or step == end
        interval = int(cfg.checkpoint_interval)
        if stop or (interval and step % interval == 0):
            state.update(step=step, metrics=metrics)
            state["time_s"] += time.perf_counter() - started
            started = time.perf_counter()
            save_checkpoint(
                ckpt_dir / CHECKPOINT_NAME,
                model=model.state_dict(),
                optimizer=optimizer.state_dict(),
                schedule=schedule.state_dict(),
                scaler=scaler.state_dict(),
                rng=rng_state(device, batches),
                config=OmegaConf.to_container(cfg, resolve=True),
                **state,
            )
        if stop:
            break

    test_loss, test_accuracy = evaluate(model, task.test, precision, device)
    return {
        **metrics,
        "best_val_loss": float(state["best_val_loss"]),
        "test_loss": test_loss,
        "test_accuracy": test_accuracy,
        "train_time_s": float(state["time_s"]),
    }


@torch.no_grad()
def evaluate(
    model: nn.Module, split: Split, precision: Precision, device: torch.device
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``split``."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(split), EVAL_BATCH):
        x = split.tokens[i : i + EVAL_BATCH].to(device)
        y = split.labels[i : i + EVAL_BATCH].to(device)
        with precision.autocast(device):
            logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(dim=-1) == y).sum())
    return loss_sum / len(split), correct / len(split)


def param_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Weight decay on matrices only (nanoGPT's rule): biases and norm weights are not decayed."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "name": "decay"},
        {"params": [p for p in params if p.dim() < 2], "name": "no_decay", "weight_decay": 0.0},
    ]


def apply_hyperparameters(
    optimizer: torch.optim.Optimizer, schedule: Schedule, cfg: DictConfig
) -> None:
    """Make this config's optimizer settings take effect on a resumed optimizer (PBT explore).

    Every key of the optimizer option that the param groups hold is set (``momentum``,
    ``betas``, ...), ``weight_decay`` only on the decayed group, and ``lr`` through the schedule
    so a warm-up or decay in progress continues at the new base rate.
    """
    options = cast(dict[str, Any], OmegaConf.to_container(cfg.optimizer, resolve=True))
    for key, value in options.items():
        if str(key).startswith("_") or key == "lr":
            continue
        for group in optimizer.param_groups:
            if key not in group or (key == "weight_decay" and group.get("name") == "no_decay"):
                continue
            group[key] = tuple(value) if isinstance(group[key], tuple) else value
    set_learning_rate(optimizer, schedule, float(options["lr"]))


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when there is a GPU, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA GPU is visible; use device=cpu or auto.")
    return torch.device(name)


def rng_state(device: torch.device, batches: torch.Generator) -> dict[str, Any]:
    """Every random state the rest of the run depends on (dropout, batch order)."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return {"torch": torch.get_rng_state(), "cuda": cuda, "batches": batches.get_state()}


def latest_checkpoint(path: Path | str | None) -> Path | None:
    """The checkpoint at ``path``: the file itself, or the latest one in a directory."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    return path if path.is_file() else None


def save_checkpoint(path: Path, **state: Any) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _build(cfg: DictConfig, group: str, *args: Any) -> Any:
    """Instantiate ``cfg[group]``; a bad value becomes a ConfigError naming the group."""
    try:
        obj = instantiate(cfg[group])
        return obj(*args) if args else obj
    except ConfigError:
        raise
    except Exception as e:  # Hydra wraps the constructor's error; keep its sentence
        cause = e.__cause__ or e
        raise ConfigError(f"{group}={_choice(cfg, group)}: {cause}") from e


def _choice(cfg: DictConfig, group: str) -> str:
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return str(HydraConfig.get().runtime.choices.get(group, group))
    except ImportError:  # pragma: no cover - hydra is a dependency
        pass
    return str(OmegaConf.select(cfg, f"{group}._target_", default=group))
