"""What a sweep over ``policy.generation.temperature`` compares, greedy vs NeMo RL's validation.

    python bench/grpo_val_temperature.py              # temperatures 0.5 1.0 1.5, seeds 42 43
    python bench/grpo_val_temperature.py --temperatures 0.7 1.2 --seeds 42

For each (seed, training temperature) one default GRPO run (``run_grpo``, the embedded trial's
defaults otherwise) trains; its final policy is then validated twice on the same 256 held-out
prompts: greedily (the embedded trial's default objective, the same decoding for every trial)
and by sampling at the training temperature (what NeMo RL's ``validation/accuracy`` measures:
``val_temperature: ${.temperature}``, ``greedy=False``). Training is identical in both: the
validation draws from its own generator. The gap between the two columns is how much of a
temperature sweep's NeMo-RL-style objective comes from the evaluation decoding, not training.
Writes ``bench/results/grpo_val_temperature.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def one_run(seed: int, temperature: float) -> dict[str, Any]:
    import torch
    from omegaconf import OmegaConf

    from nemo_rl_hpo.training.grpo import default_config, latest_checkpoint, run_grpo
    from nemo_rl_hpo.training.grpo.checkpoint import STATE_FILE
    from nemo_rl_hpo.training.grpo.rollout import validate_policy
    from nemo_rl_hpo.training.grpo.run import _policy, _precision, _task

    cfg = OmegaConf.merge(
        default_config(),
        {"grpo": {"seed": seed}, "policy": {"generation": {"temperature": temperature}}},
        {"device": "cpu"},
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as ckpt:
        result = run_grpo(cfg, checkpoint_dir=ckpt)
        saved = latest_checkpoint(ckpt)
        assert saved is not None
        state = torch.load(saved / STATE_FILE, weights_only=True)
    task = _task(cfg)
    policy = _policy(cfg, task)
    policy.load_state_dict(state["policy"])
    precision, device = _precision(cfg), torch.device("cpu")
    greedy = validate_policy(policy, task, device, precision)
    sampled = validate_policy(policy, task, device, precision, temperature, seed + 3)
    assert abs(greedy["validation/reward"] - result.metrics["val_reward"]) < 1e-9
    return {
        "seed": seed,
        "temperature": temperature,
        "val_reward_greedy": greedy["validation/reward"],
        "val_reward_sampled": sampled["validation/reward"],
        "val_accuracy_greedy": greedy["validation/accuracy"],
        "val_accuracy_sampled": sampled["validation/accuracy"],
        "val_reward_start": result.metrics["val_reward_start"],
        "wall_s": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.5, 1.0, 1.5])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43])
    parser.add_argument("--out", default=str(ROOT / "bench/results/grpo_val_temperature.json"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    rows = []
    for seed in args.seeds:
        for t in args.temperatures:
            row = one_run(seed, t)
            rows.append(row)
            print(json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps({"command": sys.argv, "runs": rows}, indent=1) + "\n")
    print(f"{'T':>4} {'seed':>4} {'greedy':>7} {'sampled':>7}")
    for r in rows:
        print(
            f"{r['temperature']:4.1f} {r['seed']:4d} {r['val_reward_greedy']:7.3f} "
            f"{r['val_reward_sampled']:7.3f}"
        )


if __name__ == "__main__":
    main()
