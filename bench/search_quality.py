"""Search quality: best value after 20/50/100 trials on synthetic problems, several samplers.

    python bench/search_quality.py                       # full run (5 seeds, ~15 min)
    python bench/search_quality.py --seeds 2 --trials 30 --samplers ours,upstream,random  # smoke

Samplers are driven directly with ask/tell (``bench/_quality_worker.py``) on define-by-run
problems (``bench/_problems.py``: continuous multimodal, mixed categorical+continuous,
conditional like ``conf/search/default.yaml``, log-scale learning rate), which isolates the
sampler from the sweeper. Contenders: ``ours`` (hydra/sweeper=optuna default: TPE
multivariate+group), ``tpe`` (Optuna 5 default TPE), ``gp`` (GPSampler), ``random``, and
``upstream`` (hydra-optuna-sweeper's default: Optuna 2.10's TPESampler, in its own venv);
optionally ``tpe_indep`` (independent TPE on Optuna 5) and ``cmaes``.
Reported: regret (best value - known minimum), median and IQR over seeds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as c  # noqa: E402
from _problems import OPTIMA, PROBLEMS  # noqa: E402

WORKER = c.BENCH / "_quality_worker.py"


def run_worker(python: Path, jobs: list[list[Any]], trials: int) -> list[dict[str, Any]]:
    if not jobs:
        return []
    spec = json.dumps({"jobs": jobs, "trials": trials})
    c.WORK.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [str(python), str(WORKER), spec],
        capture_output=True,
        text=True,
        cwd=c.WORK,
        env=c.clean_env(),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"quality worker failed:\n{proc.stderr[-3000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--budgets", default="20,50,100")
    ap.add_argument("--samplers", default="ours,tpe,gp,random,upstream")
    ap.add_argument("--problems", default=",".join(PROBLEMS))
    ap.add_argument(
        "--workers", type=int, default=2, help="worker processes (results do not change)"
    )
    ap.add_argument("--out", default="search_quality")
    args = ap.parse_args()

    samplers = args.samplers.split(",")
    problems = args.problems.split(",")
    budgets = [b for b in (int(x) for x in args.budgets.split(",")) if b <= args.trials]
    ours_jobs = [
        [p, s, seed]
        for seed in range(args.seeds)
        for p in problems
        for s in samplers
        if s != "upstream"
    ]
    up_jobs = [[p, "upstream", seed] for seed in range(args.seeds) for p in problems]
    if "upstream" not in samplers:
        up_jobs = []
    # Split the Optuna 5 jobs over workers (GP dominates the time); results are seeded.
    shards: list[tuple[Path, list[list[Any]]]] = [
        (c.ours_python(), ours_jobs[i :: max(1, args.workers)]) for i in range(max(1, args.workers))
    ]
    if up_jobs:
        shards.append((c.upstream_python(), up_jobs))
    with ThreadPoolExecutor(max_workers=len(shards)) as pool:
        parts = list(pool.map(lambda sh: run_worker(sh[0], sh[1], args.trials), shards))
    records = [r for part in parts for r in part]

    table: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for p in problems:
        table[p] = {}
        for s in samplers:
            recs = [r for r in records if r["problem"] == p and r["sampler"] == s]
            table[p][s] = {}
            for b in budgets:
                regrets = [r["best_curve"][b - 1] - OPTIMA[p] for r in recs]
                q = c.iqr(regrets)
                table[p][s][str(b)] = {
                    "median": round(c.median(regrets), 4),
                    "iqr": [round(q[0], 4), round(q[1], 4)],
                    "n": len(regrets),
                }
            asks = [x for r in recs for x in r["ask_s"]]
            table[p][s]["mean_ask_ms"] = {"all": round(1000 * sum(asks) / max(1, len(asks)), 2)}
    verdict: dict[str, Any] = {}
    for b in budgets:
        ranks: dict[str, list[float]] = {s: [] for s in samplers}
        for p in problems:
            meds = {s: table[p][s][str(b)]["median"] for s in samplers}
            for s in samplers:  # ties share the average of their ranks
                below = sum(1 for o in samplers if meds[o] < meds[s])
                equal = sum(1 for o in samplers if meds[o] == meds[s])
                ranks[s].append(below + (equal + 1) / 2)
        verdict[f"mean_rank@{b}"] = {s: round(sum(v) / len(v), 2) for s, v in ranks.items()}
    if "ours" in samplers and "upstream" in samplers and "50" in table[problems[0]]["ours"]:

        def med(p: str, s: str) -> float:
            return float(table[p][s]["50"]["median"])

        verdict["ours_better_than_upstream@50"] = [
            p for p in problems if med(p, "ours") < med(p, "upstream")
        ]
        if "random" in samplers:
            verdict["ours_worse_than_random@50"] = [
                p for p in problems if med(p, "ours") > med(p, "random")
            ]
    c.write_result(
        args.out,
        {
            "benchmark": "search quality (regret = best value - known minimum; lower is better)",
            "command": " ".join(["python", "bench/search_quality.py", *sys.argv[1:]]),
            "machine": c.machine(),
            "versions": {
                "ours": c.versions(c.ours_python()),
                "upstream": c.versions(c.upstream_python()),
            },
            "settings": vars(args),
            "optima": OPTIMA,
            "table": table,
            "verdict": verdict,
            # per run: the best value at each budget (whole curves would be ~0.5 MB)
            "records": [
                {
                    **{k: v for k, v in r.items() if k not in ("ask_s", "best_curve")},
                    "best_at": {str(b): r["best_curve"][b - 1] for b in budgets},
                }
                for r in records
            ],
        },
    )
    for p in problems:
        print(f"\n{p} (regret median [IQR] over {args.seeds} seeds)")
        for s in samplers:
            cells = "  ".join(
                f"@{b}: {table[p][s][str(b)]['median']:.4f} "
                f"[{table[p][s][str(b)]['iqr'][0]:.3f}, {table[p][s][str(b)]['iqr'][1]:.3f}]"
                for b in budgets
            )
            print(f"  {s:10s} {cells}")
    print()
    for k, v in verdict.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
