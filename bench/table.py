"""Print the Markdown tables of ``bench/README.md`` from the JSON results in ``bench/results/``.

python bench/table.py            # paste the output into bench/README.md (and the top README)
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
README = RESULTS.parent / "README.md"
BEGIN, END = "<!-- tables:begin -->", "<!-- tables:end -->"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _header(d: dict[str, Any]) -> str:
    m = d["machine"]
    return (
        f"*{m['date']}, {m['cpus']} shared cores (load {m['loadavg_at_start'][0]} at start), "
        f"git {m.get('git', '?')}; `{d['command']}`*"
    )


def overhead(d: dict[str, Any]) -> list[str]:
    out = [
        f"### Overhead per trial (trivial objective, n_jobs=1) — {d.get('repeats_done', '?')} "
        "interleaved repeats",
        "",
        _header(d),
        "",
        "| launcher | contender | ms/trial (median) | IQR |",
        "|---|---|---:|---|",
    ]
    for key, s in d["summary"].items():
        launcher, name = key.split(" | ")
        launcher = "none (plain study.optimize)" if launcher == "none" else launcher
        lo, hi = s["iqr_ms"]
        out.append(f"| {launcher} | {name} | {s['median_ms']:.1f} | {lo:.0f}–{hi:.0f} |")
    out += ["", "| ratio (per-repeat pairs, median) | |", "|---|---:|"]
    for key, v in d["ratios"].items():
        out.append(f"| {key} | {v:.2f}× |")
    return out


def utilization(d: dict[str, Any]) -> list[str]:
    s = d["settings"]
    out = [
        f"### Parallel utilization ({s['trials']} trials, lognormal median {s['median']} s, "
        f"sigma {s['sigma']}, n_jobs={s['n_jobs']})",
        "",
        _header(d),
        "",
        "| schedule | utilization (span) | utilization (whole process) | of ideal |",
        "|---|---:|---:|---:|",
        f"| ideal list schedule (computed) | {d['ideal']['utilization']:.3f} | | 1.00 |",
        f"| batches of n_jobs, zero overhead (computed) | "
        f"{d['zero_overhead_batches']['utilization']:.3f} | | "
        f"{d['zero_overhead_batches']['utilization'] / d['ideal']['utilization']:.2f} |",
    ]
    for kind, r in d["summary"].items():
        out.append(
            f"| {kind} | {r['util_span_median']:.3f} | {r['util_process_median']:.3f} | "
            f"{r['of_ideal']:.2f} |"
        )
    ours = [r for r in d["runs"] if r["contender"] == "ours submitit_local"]
    phases = [k for k in ours[0] if k.endswith(")") and "_s (" in k] if ours else []
    if phases:
        out += [
            "",
            "Where our slot time goes besides the trial body (median seconds, per run):",
            "",
        ]
        out.append("| " + " | ".join(phases) + " |")
        out.append("|" + "---:|" * len(phases))
        for r in ours:
            out.append("| " + " | ".join(str(r[p]) for p in phases) + " |")
    return out


def quality(d: dict[str, Any]) -> list[str]:
    table = d["table"]
    problems = list(table)
    samplers = list(table[problems[0]])
    budgets = [b for b in table[problems[0]][samplers[0]] if b.isdigit()]
    out = [
        f"### Search quality: regret (best − known minimum), median [IQR] over "
        f"{d['settings']['seeds']} seeds",
        "",
        _header(d),
        "",
        "| problem | sampler | " + " | ".join(f"@{b}" for b in budgets) + " |",
        "|---|---|" + "---:|" * len(budgets),
    ]
    for p in problems:
        best = {b: min(table[p][s][b]["median"] for s in samplers) for b in budgets}
        for s in samplers:
            cells = []
            for b in budgets:
                cell = table[p][s][b]
                text = f"{cell['median']:.4f} [{cell['iqr'][0]:.3f}, {cell['iqr'][1]:.3f}]"
                cells.append(f"**{text}**" if cell["median"] == best[b] else text)
            out.append(f"| {p} | {s} | " + " | ".join(cells) + " |")
    out += ["", "| verdict | |", "|---|---|"]
    for k, v in d["verdict"].items():
        out.append(f"| {k} | {v} |")
    return out


def sampler_time(d: dict[str, Any]) -> list[str]:
    out = [
        "### Sampler time per trial (ask + suggestions, in-memory study)",
        "",
        _header(d),
        "",
        "| problem | finished trials | sampler | wall ms (median) | CPU ms (median) |",
        "|---|---:|---|---:|---:|",
    ]
    for r in d["records"]:
        label = r["sampler"] + (" (Optuna 2.10)" if r["optuna"].startswith("2.") else "")
        out.append(
            f"| {r['problem']} | {r['size']} | {label} | {r['median_ms']:.1f} | "
            f"{r.get('median_cpu_ms', float('nan')):.1f} |"
        )
    return out


def default_trial(d: dict[str, Any]) -> list[str]:
    out = [
        f"### Default trial: best val_loss after {d['settings']['trials']} trials "
        f"(max_steps={d['settings']['steps']}), median [IQR] over {d['settings']['seeds']} seeds",
        "",
        _header(d),
        "",
        "| sampler | best val_loss | IQR |",
        "|---|---:|---|",
    ]
    for s, r in d["summary"].items():
        out.append(f"| {s} | {r['median']:.4f} | {r['iqr'][0]:.4f}–{r['iqr'][1]:.4f} |")
    return out


def pruning(d: dict[str, Any]) -> list[str]:
    st = d["settings"]
    budget = st.get("budget", 1.0)
    warm = st.get("warmup_frac", 0.4)
    out = [
        f"### Pruning: training steps to reach the unpruned sweep's best val_loss "
        f"({st['trials']} unpruned trials of max_steps={st['steps']}, pruned sweeps up to "
        f"{budget:g}x as many trials, warm-up searched up to {warm:.0%} of the run), "
        f"median over {st['seeds']} seeds",
        "",
        _header(d),
        "",
        "| pruner | steps to target | reached | trials to target | pruned trials | best val_loss "
        "| unpruned / pruned steps to target | same, seeds that reached it |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p, s in d["summary"].items():
        reached = sorted(row[p]["ratio"] for row in d["per_seed"] if row[p]["reached"])
        reached_cell = "–"
        if reached:
            mid = len(reached) // 2
            r = reached[mid] if len(reached) % 2 else (reached[mid - 1] + reached[mid]) / 2
            reached_cell = f"{r:.2f}× (n={len(reached)})"
        out.append(
            f"| {p} | {s['steps_to_target']:.0f} | {s['reached']} | "
            f"{s.get('trials_to_target', float('nan')):.0f} | "
            f"{s['pruned']:.0f} | {s['best_val_loss']:.4f} | {s['ratio']:.2f}× | "
            f"{reached_cell} |"
        )
    out += [
        "",
        "| seed | target | " + " | ".join(d["summary"]) + " |",
        "|---:|---:|" + "---|" * len(d["summary"]),
    ]
    for row in d["per_seed"]:
        cells = [
            f"{row[p]['steps_to_target']} steps{'' if row[p]['reached'] else ' (never)'}, "
            f"best {row[p]['best_val_loss']:.4f}, {row[p]['ratio']:.2f}×"
            for p in d["summary"]
        ]
        out.append(f"| {row['seed']} | {row['target']:.4f} | " + " | ".join(cells) + " |")
    return out


def pbt_vs_optuna(d: dict[str, Any]) -> list[str]:
    st = d["settings"]
    out = [
        f"### PBT vs Optuna at {d['total_steps']} training steps (population {st['population']}, "
        f"{st['rounds']} rounds x {st['interval']} steps vs {st['population']} trials x "
        f"{st['rounds'] * st['interval']} steps), best final val_loss",
        "",
        _header(d),
        "",
        "| sweeper | median | " + " | ".join(f"seed {i}" for i in range(st["seeds"])) + " |",
        "|---|---:|" + "---:|" * st["seeds"],
    ]
    for kind, s in d["summary"].items():
        out.append(
            f"| {kind} | {s['median']:.4f} | " + " | ".join(f"{v:.4f}" for v in s["values"]) + " |"
        )
    for kind, r in d.get("over_optuna", {}).items():
        out.append("")
        out.append(
            f"{kind} / optuna best val_loss per seed: {r['per_seed']} (median {r['median']})."
        )
    exploits: dict[str, list[int]] = {}
    for r in d["runs"]:
        if "exploits" in r:
            exploits.setdefault(r["kind"], []).append(r["exploits"])
    for kind, xs in exploits.items():
        out.append(f"Exploits per sweep, {kind}: {xs}.")
    return out


def slurm_latency(d: dict[str, Any]) -> list[str]:
    s = d["summary"]
    r = s["raw"]
    st = d["settings"]
    out = [
        f"### SLURM latency per trial: raw sbatch vs the sweeper ({st['repeats']} interleaved "
        f"repeats of {st['jobs']} raw jobs and a {st['trials']}-trial sweep, n_jobs=1)",
        "",
        _header(d) + f" {d.get('slurm', '')}",
        "",
        "| what | seconds (median) |",
        "|---|---:|",
        f"| raw: `sbatch` call returns | {r['sbatch_call_s']:.3f} |",
        f"| raw: submit → job starts | {r['submit_to_start_s']:.3f} |",
        f"| raw: job leaves the queue → seen by polling | {r['end_to_observed_s']:.3f} |",
        f"| raw: round trip (submit → seen done) | {r['round_trip_s']:.3f} |",
        f"| sweeper: per-trial wall (sweep wall / trials) | {s['sweep_per_trial_wall_s']:.3f} |",
        f"| sweeper: steady cycle (trial body → next trial body) | {s['sweep_cycle_s']:.3f} |",
        f"| **added by the sweeper per trial (wall − raw round trip)** | "
        f"{s['added_per_trial_wall_s']:.3f} |",
        f"| added per trial, steady cycle − raw round trip | {s['added_per_trial_cycle_s']:.3f} |",
    ]
    return out


def pruning_replay(d: dict[str, Any]) -> list[str]:
    rows = d["per_seed"]
    names = [k for k in rows[0] if isinstance(rows[0][k], dict)]
    out = [
        "### Pruners replayed on the unpruned sweeps' learning curves (same trials, same order)",
        "",
        f"*{d['machine']['date']}, git {d['machine'].get('git', '?')}; `{d['command']}`*",
        "",
        "| seed | best trial | unpruned steps to it | "
        + " | ".join(f"{n}: steps to best (ratio) / total ratio / pruned" for n in names)
        + " |",
        "|---:|---:|---:|" + "---|" * len(names),
    ]
    for r in rows:
        cells = []
        for n in names:
            x = r[n]
            to_best = (
                f"{x['steps_to_best']} ({x['ratio_to_best']:.2f}×)"
                if x["best_survives"]
                else "**pruned the best**"
            )
            cells.append(f"{to_best} / {x['total_ratio']:.2f}× / {x['pruned']}")
        out.append(
            f"| {r['seed']} | #{r['best_trial']} ({r['best_val_loss']:.4f}) | "
            f"{r['unpruned_steps_to_best']} | " + " | ".join(cells) + " |"
        )
    cells = []
    for n in names:
        # a seed whose best trial was pruned never reaches the target: ratio 0 in the median
        ratios = [r[n]["ratio_to_best"] or 0.0 for r in rows]
        totals = [r[n]["total_ratio"] for r in rows]
        kept = sum(bool(r[n]["best_survives"]) for r in rows)
        cells.append(
            f"median {statistics.median(ratios):.2f}× (best kept {kept}/{len(rows)}) / "
            f"{statistics.median(totals):.2f}× /"
        )
    out.append("| **median** | | | " + " | ".join(cells) + " |")
    return out


def pruning_grid(d: dict[str, Any]) -> list[str]:
    rows = d["per_seed"]
    names = [k for k in rows[0] if isinstance(rows[0][k], dict)]
    out = [
        "### Pruner settings replayed on the unpruned sweeps' learning curves: steps to the best "
        "trial, ratio to unpruned (total-steps ratio)",
        "",
        f"*{d['machine']['date']}, git {d['machine'].get('git', '?')}; `{d['command']}`*",
        "",
        "| pruner and settings | "
        + " | ".join(f"seed {r['seed']} (best #{r['best_trial']})" for r in rows)
        + " | ≥ 2× on every seed |",
        "|---|" + "---:|" * len(rows) + ":---:|",
    ]
    for n in names:
        cells = [
            f"{r[n]['ratio_to_best']:.2f}× ({r[n]['total_ratio']:.2f}×)"
            if r[n]["best_survives"]
            else f"pruned the best ({r[n]['total_ratio']:.2f}×)"
            for r in rows
        ]
        ok = all(r[n]["best_survives"] and r[n]["ratio_to_best"] >= 2.0 for r in rows)
        out.append(f"| {n} | " + " | ".join(cells) + f" | {'yes' if ok else 'no'} |")
    return out


def main() -> None:
    sections = [
        ("overhead", overhead),
        ("utilization", utilization),
        ("search_quality", quality),
        ("search_quality_15seeds", quality),
        ("sampler_time", sampler_time),
        ("default_trial", default_trial),
        ("pruning", pruning),
        ("pruning_400", pruning),
        ("pruning_replay", pruning_replay),
        ("pruning_replay_400", pruning_replay),
        ("pruning_replay_grid", pruning_grid),
        ("pruning_replay_avx2", pruning_replay),
        ("pruning_replay_grid_avx2", pruning_grid),
        ("pruning_replay_grid_avx2_variants", pruning_grid),
        ("pruning_warmup40", pruning),
        ("pbt_vs_optuna", pbt_vs_optuna),
        ("slurm_latency", slurm_latency),
    ]
    lines: list[str] = []
    for name, render in sections:
        d = _load(name)
        if d is None:
            continue
        lines += [*render(d), ""]
    text = "\n".join(lines)
    if "--write" not in sys.argv[1:]:
        sys.stdout.write(text)
        return
    readme = README.read_text()
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"{README} has no {BEGIN} ... {END} markers; add them where tables go.")
    head, rest = readme.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
    print(f"updated {README}")


if __name__ == "__main__":
    main()
