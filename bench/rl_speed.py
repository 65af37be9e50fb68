"""One default GRPO run on this machine: wall time, CPU time, reward before and after GRPO.

    python bench/rl_speed.py                 # python train.py trial=grpo num_threads=2, 3 seeds
    python bench/rl_speed.py --repeats 1     # one run
    python bench/rl_speed.py --out rl_speed_b grpo.num_prompts_per_step=32   # another setting

Runs the user's command (``python train.py trial=grpo``) in a subprocess per ``grpo.seed`` and
reads its last checkpoint: ``val_reward_start`` is the warm-started policy's greedy validation
reward (before any GRPO step), ``val_reward`` the reward after the run. Wall time is the whole
process (Python and torch start-up included); ``train_time_s`` the run's own clock; CPU time the
child's user + system seconds (what the run costs whatever the machine's load).
Target (issue 16): <= 30 s on 2 cores, reward clearly above the start (e.g. <= 0.3 -> >= 0.8).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402


def one_run(seed: int, threads: int, extra: list[str]) -> dict[str, Any]:
    import torch

    from nemo_rl_hpo.training.grpo import latest_checkpoint

    run = c.WORK / "rl_speed" / f"seed{seed}"
    shutil.rmtree(run, ignore_errors=True)
    argv = [
        str(c.ours_python()),
        str(c.ROOT / "train.py"),
        "trial=grpo",
        f"num_threads={threads}",
        f"grpo.seed={42 + seed}",
        f"hydra.run.dir={run}",
        *extra,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=c.ROOT, env=c.clean_env(), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    ckpt = latest_checkpoint(run)
    assert ckpt is not None
    state = torch.load(ckpt / "policy_and_state.pt", map_location="cpu", weights_only=True)
    s = state["state"]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "seed": seed,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "train_time_s": round(s["time_s"], 1),
        "val_reward_start": round(s["val_reward_start"], 3),
        "val_reward": round(s["metrics"]["val_reward"], 3),
        "val_accuracy": round(s["metrics"]["val_accuracy"], 3),
        "curve": {int(k): round(v, 3) for k, v in sorted(s["curve"].items())},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="runs, grpo.seed 42, 43, ...")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="rl_speed", help="bench/results/<out>.json")
    ap.add_argument("overrides", nargs="*", help="extra overrides for train.py")
    args = ap.parse_args()
    payload: dict[str, Any] = {"machine": c.machine(), "command": " ".join(sys.argv), "runs": []}
    for seed in range(args.repeats):
        r = one_run(seed, args.threads, args.overrides)
        print(r, flush=True)
        payload["runs"].append(r)
    runs = payload["runs"]
    payload["summary"] = {
        k: c.median([r[k] for r in runs])
        for k in ("wall_s", "cpu_s", "train_time_s", "val_reward_start", "val_reward")
    }
    print(payload["summary"])
    c.write_result(args.out, payload)


if __name__ == "__main__":
    main()
