"""A checkpointing Hydra app for multi-fidelity tests: it runs to ``trial.target_steps()`` and
resumes from its own checkpoint, as real trainers do (it saves one at the end of each job).

Its state after step ``s`` is a running value that depends on every earlier step, so a segment
that restarted from step 0, or skipped steps, would end with a different value. The steps a job
trained are appended to ``steps.log`` in its checkpoint dir when it saves (one line per step,
over all segments).
The curve: ``(x - 1)^2 + 1 / (1 + step · rate)``, so a larger ``rate`` starts worse or better
depending on ``slow``: trials with slow=1 start badly and end best (a late bloomer).
"""

from __future__ import annotations

import json
import os
import time

import hydra
from omegaconf import DictConfig

from nemo_rl_hpo import trial


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg: DictConfig) -> dict[str, float]:
    ckpt = trial.checkpoint_dir()
    ckpt.mkdir(parents=True, exist_ok=True)
    state_file = ckpt / "state.json"
    state = {"step": 0, "acc": 0.0}
    if state_file.is_file():
        state = json.loads(state_file.read_text())
    target = trial.target_steps()
    end = int(cfg.max_steps) if target is None else min(int(target), int(cfg.max_steps))
    value = float("nan")
    trained: list[int] = []
    while state["step"] < end:
        step = state["step"] + 1
        state["acc"] = 0.5 * state["acc"] + _point(cfg, step)  # depends on all earlier steps
        state["step"] = step
        trained.append(step)
        if cfg.step_sleep:
            time.sleep(float(cfg.step_sleep))
        if step % int(cfg.eval_interval) == 0 or step == end:
            value = state["acc"]
            trial.report(step, {"loss": value})
    with open(ckpt / "steps.log", "a") as f:  # with the checkpoint: a killed job leaves none
        f.write("".join(f"{s}\n" for s in trained))
    with open(ckpt / "segments.log", "a") as f:  # where each job started and ended
        f.write(f"{state['step'] - len(trained)} {state['step']}\n")
    tmp = state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, state_file)
    return {"loss": float(state["acc"]), "step": float(state["step"])}


def _point(cfg: DictConfig, step: int) -> float:
    x = float(cfg.x)
    late = 1.0 if float(cfg.slow) > 0.5 else 0.0
    # slow trials: high early, lowest late
    noise = 0.01 * int(cfg.seed)  # repeats: seeds differ a little
    return (x - 1.0) ** 2 + (3.0 * late) / (1.0 + 0.3 * step) + (1.0 - late) * 0.5 + noise


if __name__ == "__main__":
    main()
