"""How many complete trials do the report's importances need before their ranking can be trusted?

    python bench/importance_stability.py            # ~3 min on 2 shared cores

For n = 5 .. 120 complete trials, draw n trials many times and compute the report's two
estimators (``nemo_rl_hpo/report/importance.py``: PED-ANOVA, fANOVA with the report's forest) on
them; compare each ranking with a reference ranking by Spearman's rank correlation:

* **grpo**: the 270 trials of the nine recorded 30-trial GRPO sweeps (``results/rl_sweeps_samplers30
  *.json``: random, TPE and auto samplers, 3 seeds each, one search space,
  ``conf/search/grpo.yaml``). Reference: each estimator on all 270.
* **mixed**, **hartmann6**: synthetic problems of ``_problems.py`` under random search.
  Reference: each estimator on 2,000 random trials.

The two estimators answer different questions (fANOVA: variance of the objective over the
whole space; PED-ANOVA: what separates the top 10 % from the rest), so each is compared with
its own ranking on the whole pool.

Also recorded: the agreement of the two estimators with each other at each n (what the report
shows a user, who has no reference). The threshold the report uses (``RELIABLE_MIN_TRIALS``)
and the disagreement line (``DISAGREE_BELOW``) are read off these tables (bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import warnings
from pathlib import Path
from typing import Any

import optuna
from _common import RESULTS, machine, write_result
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, create_trial

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nemo_rl_hpo.report.importance import FANOVA_DEPTH, FANOVA_TREES, spearman  # noqa: E402
from nemo_rl_hpo.search.grammar import parse_params  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SIZES = (5, 10, 15, 20, 30, 50, 80, 120)


def grpo_trials() -> list[FrozenTrial]:
    """The recorded GRPO sweeps' complete trials, with the search space's distributions."""
    import yaml

    space = yaml.safe_load((ROOT / "conf/search/grpo.yaml").read_text())
    dists: dict[str, BaseDistribution] = {
        p.key: p.distribution for p in parse_params(space) if p.distribution is not None
    }
    out: list[FrozenTrial] = []
    for path in sorted(RESULTS.glob("rl_sweeps_samplers30*.json")):
        for run in json.loads(path.read_text())["runs"]:
            for t in run.get("trials", []):
                if t["state"] != "COMPLETE" or t["value"] is None:
                    continue
                params = dict(t["params"])
                out.append(
                    create_trial(
                        params=params,
                        distributions={k: dists[k] for k in params},
                        value=float(t["value"]),
                    )
                )
    return out


def synthetic_trials(name: str, n: int, seed: int) -> list[FrozenTrial]:
    from _problems import PROBLEMS

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    study.optimize(PROBLEMS[name], n_trials=n)
    return study.get_trials(deepcopy=False)


def importances(trials: list[FrozenTrial], direction: str, which: str) -> dict[str, float]:
    study = optuna.create_study(direction=direction)
    study.add_trials(trials)
    evaluator: optuna.importance.BaseImportanceEvaluator
    if which == "fanova":
        evaluator = optuna.importance.FanovaImportanceEvaluator(
            n_trees=FANOVA_TREES, max_depth=FANOVA_DEPTH, seed=0
        )
    else:
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            k: float(v)
            for k, v in optuna.importance.get_param_importances(study, evaluator=evaluator).items()
        }


def _top(imp: dict[str, float]) -> str:
    return max(imp, key=lambda k: imp[k])


def measure(
    pool: list[FrozenTrial], ref: dict[str, dict[str, float]], direction: str, draws: int, seed: int
) -> dict[str, Any]:
    """Each estimator's ranking on n trials against its own ranking on the whole pool."""
    rng = random.Random(seed)
    rows: dict[str, Any] = {}
    for n in SIZES:
        if n > len(pool) // 2:
            break
        fan, ped, agree, top_f, top_p = [], [], [], [], []
        for _ in range(draws):
            sample = rng.sample(pool, n)
            try:
                f = importances(sample, direction, "fanova")
                p = importances(sample, direction, "ped_anova")
            except Exception:  # degenerate sample (e.g. one value): counts as no ranking
                continue
            fan.append(spearman(f, ref["fanova"]))
            ped.append(spearman(p, ref["ped_anova"]))
            agree.append(spearman(f, p))
            top_f.append(_top(f) == _top(ref["fanova"]))
            top_p.append(_top(p) == _top(ref["ped_anova"]))
        rows[str(n)] = {
            "fanova_top_matches": sum(top_f) / max(1, len(top_f)),
            "ped_anova_top_matches": sum(top_p) / max(1, len(top_p)),
            "draws": len(fan),
            "fanova_vs_reference_median": statistics.median(fan) if fan else None,
            "ped_anova_vs_reference_median": statistics.median(ped) if ped else None,
            "fanova_vs_reference_p10": _quantile(fan, 0.1),
            "ped_anova_vs_reference_p10": _quantile(ped, 0.1),
            "estimators_agree_median": statistics.median(agree) if agree else None,
            "estimators_agree_p10": _quantile(agree, 0.1),
        }
        r = rows[str(n)]
        print(
            f"  n={n:4d}  fANOVA~ref {r['fanova_vs_reference_median']:.2f} "
            f"(p10 {r['fanova_vs_reference_p10']:.2f})  PED~ref "
            f"{r['ped_anova_vs_reference_median']:.2f} (p10 {r['ped_anova_vs_reference_p10']:.2f})"
            f"  fANOVA~PED {r['estimators_agree_median']:.2f} (p10 {r['estimators_agree_p10']:.2f})"
            f"  top1 {r['fanova_top_matches']:.2f}/{r['ped_anova_top_matches']:.2f}",
            flush=True,
        )
    return rows


def _quantile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=20, help="random subsets per trial count")
    ap.add_argument("--out", default="importance_stability")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    out: dict[str, Any] = {
        "machine": machine(),
        "command": " ".join(["bench/importance_stability.py", *sys.argv[1:]]),
        "sizes": list(SIZES),
        "problems": {},
    }
    pool = grpo_trials()
    print(f"grpo: {len(pool)} recorded trials", flush=True)
    ref = {e: importances(pool, "maximize", e) for e in ("fanova", "ped_anova")}
    print(f"  on all: fANOVA~PED {spearman(ref['fanova'], ref['ped_anova']):.2f}", flush=True)
    out["problems"]["grpo"] = {
        "pool": len(pool),
        "reference": ref,
        "estimators_agree_on_pool": spearman(ref["fanova"], ref["ped_anova"]),
        "rows": measure(pool, ref, "maximize", args.draws, 0),
    }
    for name in ("mixed", "hartmann6"):
        big = synthetic_trials(name, 2000, seed=123)
        ref = {e: importances(big, "minimize", e) for e in ("fanova", "ped_anova")}
        agree = spearman(ref["fanova"], ref["ped_anova"])
        print(f"{name}: {len(big)} random trials; on all: fANOVA~PED {agree:.2f}", flush=True)
        out["problems"][name] = {
            "pool": len(big),
            "reference": ref,
            "estimators_agree_on_pool": agree,
            "rows": measure(big, ref, "minimize", args.draws, 1),
        }
    write_result(args.out, out)


if __name__ == "__main__":
    main()
