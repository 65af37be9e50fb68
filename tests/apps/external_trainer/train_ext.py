"""A stand-in for NeMo RL's ``examples/run_sft.py``: a real training script that is NOT a Hydra app.

It takes ``--config <yaml>`` plus Hydra-syntax overrides applied in struct mode exactly like
``nemo_rl.utils.config.parse_hydra_overrides`` (Hydra's override parser on a struct OmegaConf
config: new keys need ``+``, list items by index), trains a small torch regressor, logs
``validation/loss`` and ``train/loss`` with ``torch.utils.tensorboard`` under
``<logger.log_dir>/exp_NNN/tensorboard`` (next free NNN, as NeMo RL's ``get_next_experiment_dir``),
appends the same values to ``<logger.log_dir>/metrics.jsonl``, and checkpoints to / resumes from
``checkpointing.checkpoint_dir``. Its pid goes to ``<logger.log_dir>/train_ext.pid``::

    python tests/apps/external_trainer/train_ext.py \
        --config tests/apps/external_trainer/config.yaml policy.optimizer.kwargs.lr=0.3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.tensorboard import SummaryWriter


def parse_hydra_overrides(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """NeMo RL's semantics: struct mode, Hydra's parser, Hydra's own way of applying."""
    OmegaConf.set_struct(cfg, True)
    parsed = OverridesParser.create().parse_overrides(overrides=overrides)
    ConfigLoaderImpl._apply_overrides_to_config(overrides=parsed, cfg=cfg)
    return cfg


def next_experiment_dir(log_dir: Path) -> Path:
    log_dir.mkdir(parents=True, exist_ok=True)
    taken = [
        int(m.group(1)) for p in log_dir.iterdir() if (m := re.fullmatch(r"exp_(\d+)", p.name))
    ]
    path = log_dir / f"exp_{max(taken, default=0) + 1:03d}"
    path.mkdir()
    return path


def make_data(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    w = torch.linspace(-1.0, 1.0, 8)
    y = (
        (x @ w).unsqueeze(1)
        + 0.5 * torch.sin(2.0 * x[:, :1])
        + 0.05 * torch.randn(n, 1, generator=g)
    )
    return x, y


def build_scheduler(opt: torch.optim.Optimizer, spec: list[Any]) -> Any:
    """NeMo RL's list form: schedulers, then ``{milestones: [...]}`` for SequentialLR."""
    milestones = None
    scheds = []
    for item in spec:
        if "milestones" in item:
            milestones = list(item["milestones"])
            continue
        cls = getattr(torch.optim.lr_scheduler, str(item["name"]).rsplit(".", 1)[-1])
        scheds.append(cls(opt, **dict(item.get("kwargs", {}))))
    if not scheds:
        return None
    if len(scheds) == 1:
        return scheds[0]
    return torch.optim.lr_scheduler.SequentialLR(opt, scheds, milestones=milestones or [1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML config")
    args, overrides = parser.parse_known_args()
    cfg = OmegaConf.load(args.config)
    assert isinstance(cfg, DictConfig)
    cfg = parse_hydra_overrides(cfg, overrides)
    torch.set_num_threads(1)

    log_dir = Path(cfg.logger.log_dir)
    exp_dir = next_experiment_dir(log_dir)
    (log_dir / "train_ext.pid").write_text(f"{os.getpid()}\n")
    OmegaConf.save(cfg, exp_dir / "config.yaml")  # the config this run really used
    print(f"config:\n{OmegaConf.to_yaml(cfg)}", flush=True)

    t = cfg.train
    torch.manual_seed(int(t.seed))
    x_train, y_train = make_data(int(t.seed), 512)
    x_val, y_val = make_data(int(t.seed) + 1, 256)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
    opt_cls = getattr(torch.optim, str(cfg.policy.optimizer.name).rsplit(".", 1)[-1])
    opt = opt_cls(model.parameters(), **OmegaConf.to_container(cfg.policy.optimizer.kwargs))
    sched = build_scheduler(opt, OmegaConf.to_container(cfg.policy.scheduler))  # type: ignore[arg-type]

    ckpt_dir = Path(cfg.checkpointing.checkpoint_dir)
    ckpt_file = ckpt_dir / "latest.pt"
    start = 0
    if cfg.checkpointing.enabled and ckpt_file.exists():
        state = torch.load(ckpt_file, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if sched is not None and state.get("scheduler") is not None:
            sched.load_state_dict(state["scheduler"])
        start = int(state["step"])
        print(f"resumed from {ckpt_file} at step {start}", flush=True)

    writer = SummaryWriter(log_dir=str(exp_dir / "tensorboard"))
    loss_fn = nn.MSELoss()
    max_steps = int(t.max_num_steps)
    for step in range(start + 1, max_steps + 1):  # one step = one epoch of minibatches
        if t.fail_at_step is not None and step >= int(t.fail_at_step):
            print(f"step {step}: diverged", file=sys.stderr, flush=True)
            raise RuntimeError(f"loss became NaN at step {step} (train.fail_at_step)")
        model.train()
        perm = torch.randperm(len(x_train))
        total = 0.0
        for i in range(0, len(x_train), int(t.batch_size)):
            idx = perm[i : i + int(t.batch_size)]
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        if sched is not None:
            sched.step()
        train_loss = total / len(x_train)
        writer.add_scalar("train/loss", train_loss, step)
        row: dict[str, float] = {"step": step, "train_loss": train_loss}
        if step % int(t.val_period) == 0 or step == max_steps:
            model.eval()
            with torch.no_grad():
                val_loss = float(loss_fn(model(x_val), y_val))
            writer.add_scalar("validation/loss", val_loss, step)
            row["val_loss"] = val_loss
        writer.flush()
        with open(log_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        if cfg.checkpointing.enabled and (
            step % int(cfg.checkpointing.save_period) == 0 or step == max_steps
        ):
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            tmp = ckpt_file.with_suffix(".tmp")
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict() if sched is not None else None,
                    "step": step,
                },
                tmp,
            )
            os.replace(tmp, ckpt_file)
        if float(t.step_sleep_s) > 0:
            time.sleep(float(t.step_sleep_s))
    writer.close()
    print(f"done at step {max_steps}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
