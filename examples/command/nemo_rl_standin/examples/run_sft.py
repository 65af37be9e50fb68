"""Stand-in for NeMo RL's ``examples/run_sft.py``: the same command-line and file contract as the
GRPO stand-in (``run_grpo.py``, docs/command.md) around a small supervised model, so that the
``nemo_rl=sft`` preset runs here unchanged::

    python examples/run_sft.py --config examples/configs/sft.yaml sft.max_num_steps=20

Mirrors ``sft_train`` in ``nemo_rl/algorithms/sft.py`` (NVIDIA-NeMo/RL at 7ea279ab) where a sweep
depends on it: ``validation/val_loss`` every ``sft.val_period`` steps (and at step 0 with
``sft.val_at_start``), ``train/loss`` at every step, ``policy.scheduler`` as NeMo RL's list
(schedulers, then ``{milestones: [...]}`` for SequentialLR), checkpoints
``checkpointing.checkpoint_dir/step_N`` (``tmp_step_N`` renamed, ``training_info.json``) resumed
from the highest N, ``checkpoint_must_save_by`` with NeMo RL's ``TimeoutChecker``. The model is a
two-layer regressor on generated data, not an LLM.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # nrl_standin (NeMo RL's utils)

import nrl_standin  # noqa: E402


def main() -> int:
    config = nrl_standin.parse_args_and_config("sft.yaml")
    log_dir = nrl_standin.get_next_experiment_dir(str(config["logger"]["log_dir"]))
    print(f"📊 Using log directory: {log_dir}")
    nrl_standin.write_run_files(log_dir, config)

    import torch
    from torch import nn

    torch.set_num_threads(1)
    sft, ckpt, policy = config["sft"], config["checkpointing"], config["policy"]
    standin = dict(config.get("standin") or {})
    torch.manual_seed(int(sft["seed"]))
    g = torch.Generator().manual_seed(int(sft["seed"]))
    x = torch.randn(768, 8, generator=g)
    y = (x @ torch.linspace(-1, 1, 8)).unsqueeze(1) + 0.5 * torch.sin(2 * x[:, :1])
    (x_train, y_train), (x_val, y_val) = (x[:512], y[:512]), (x[512:], y[512:])
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
    module, _, name = str(policy["optimizer"]["name"]).rpartition(".")
    kwargs = dict(policy["optimizer"]["kwargs"])
    kwargs = {k: tuple(v) if k == "betas" else v for k, v in kwargs.items()}
    kwargs = {k: v for k, v in kwargs.items() if k not in ("foreach", "fused")}
    optimizer = getattr(__import__(module, fromlist=[name]), name)(model.parameters(), **kwargs)
    scheduler = _scheduler(optimizer, policy.get("scheduler") or [], torch)
    logger = nrl_standin.Logger({**config["logger"], "log_dir": log_dir})

    step = 0
    root = Path(ckpt["checkpoint_dir"])
    latest = _latest(root) if ckpt["enabled"] else None
    if latest is not None:
        state = torch.load(latest / "state.pt", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        step = int(json.loads((latest / "training_info.json").read_text())["total_steps"])
        print(f"Resuming from checkpoint {latest} at step {step}", flush=True)

    def val_loss() -> float:
        with torch.no_grad():
            return float(nn.functional.mse_loss(model(x_val), y_val))

    timeout = nrl_standin.TimeoutChecker(ckpt.get("checkpoint_must_save_by"), True)
    timeout.start_iterations()
    if sft.get("val_at_start") and step == 0:
        logger.log_metrics({"val_loss": val_loss()}, 0, prefix="validation")
    max_steps = int(sft["max_num_steps"])
    while step < max_steps:
        step += 1
        if standin.get("fail_at_step") is not None and step >= int(standin["fail_at_step"]):
            raise RuntimeError(f"loss became NaN at step {step} (standin.fail_at_step)")
        idx = torch.randint(0, len(x_train), (64,), generator=g)
        loss = nn.functional.mse_loss(model(x_train[idx]), y_train[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        val = None
        if int(sft["val_period"]) > 0 and step % int(sft["val_period"]) == 0:
            val = val_loss()
            logger.log_metrics({"val_loss": val}, step, prefix="validation")
        if float(standin.get("step_sleep_s") or 0) > 0:
            time.sleep(float(standin["step_sleep_s"]))
        timeout.mark_iteration()
        by_timeout = timeout.check_save()
        if ckpt["enabled"] and (
            step == max_steps or step % int(ckpt["save_period"]) == 0 or by_timeout
        ):
            print(f"Saving checkpoint for step {step}...", flush=True)
            tmp = root / f"tmp_step_{step}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                },
                tmp / "state.pt",
            )
            info = {"total_steps": step, **({"val:val_loss": val} if val is not None else {})}
            (tmp / "training_info.json").write_text(json.dumps(info))
            shutil.rmtree(root / f"step_{step}", ignore_errors=True)
            os.rename(tmp, root / f"step_{step}")
        logger.log_metrics({"loss": loss.item()}, step, prefix="train")
        if by_timeout:
            print(nrl_standin.TIMEOUT_MESSAGE, flush=True)
            logger.close()
            return 0
    logger.close()
    return 0


def _latest(root: Path) -> Path | None:
    found = [p for p in root.glob("step_*") if re.fullmatch(r"step_\d+", p.name)]
    return max(found, key=lambda p: int(p.name[5:]), default=None)


def _scheduler(optimizer: Any, spec: list[Any], torch: Any) -> Any:
    """NeMo RL's list: schedulers, then ``{milestones: [...]}`` for SequentialLR."""
    milestones, scheds = None, []
    for item in spec:
        if "milestones" in item:
            milestones = list(item["milestones"])
            continue
        cls = getattr(torch.optim.lr_scheduler, str(item["name"]).rsplit(".", 1)[-1])
        scheds.append(cls(optimizer, **dict(item.get("kwargs") or {})))
    if not scheds:
        return None
    if len(scheds) == 1:
        return scheds[0]
    return torch.optim.lr_scheduler.SequentialLR(optimizer, scheds, milestones=milestones or [1])


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
