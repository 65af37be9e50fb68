"""The block a sweep prints when it ends (and writes as ``summary.txt`` in the sweep dir).

What a user asks first: the best value and which trial, its configuration as overrides, the one
command that reproduces it, and how many trials ended how. Multi-objective: the Pareto front's
size and, per objective, the front member best on it. PBT: the best member's final round. With
a confirmation stage (``nemo_rl_hpo/sweep/confirm.py``) the confirmed pick and its test mean
come first, since that is the configuration the sweep recommends.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial

from nemo_rl_hpo.report import files
from nemo_rl_hpo.report.trials import (
    SweepInfo,
    best_trial,
    counts_by_state,
    pareto_trials,
    pbt_summary,
    reproduce_command,
    trial_overrides,
)
from nemo_rl_hpo.sweep import cost, records

SUMMARY_NAME = "summary.txt"
RULE = "=" * 72


def _g(v: float | None) -> str:
    return "-" if v is None else f"{v:.6g}"


def _configuration(info: SweepInfo, t: FrozenTrial) -> str:
    ovs = [o for o in trial_overrides(t) if o not in info.base_overrides]
    return " ".join(ovs) or "(the app's defaults)"


def summary_lines(
    study: optuna.Study, trials: Sequence[FrozenTrial] | None = None, sweep_dir: str | None = None
) -> list[str]:
    """The summary block as lines (no trailing newline)."""
    info = SweepInfo.from_study(study)
    trials = list(study.get_trials(deepcopy=False) if trials is None else trials)
    counts = records.counts_line(counts_by_state(trials)) or "no trials"
    where = sweep_dir or info.sweep_dir
    lines = [RULE, f"Sweep summary: study {info.study_name!r}  ({counts})"]
    confirmed = _confirmed_lines(study, info, trials)
    lines += confirmed
    if info.kind == records.KIND_PBT:
        lines += _pbt_lines(study, info, trials)
    elif not info.multi_objective:
        best = best_trial(trials, study.directions)
        if best is None:
            lines.append("best: no complete trial yet")
        elif confirmed and f"trial {best.number}," in confirmed[0]:
            lines.append(f"best by tuning value: the same trial ({_g(best.value)})")
        else:
            label = "best by tuning value" if confirmed else "best"
            lines += [
                f"{label}: {info.objectives[0]}={_g(best.value)} ({info.directions[0]}), "
                f"trial {best.number}",
                f"  configuration: {_configuration(info, best)}",
                f"  reproduce: {reproduce_command(info, best)}",
            ]
    else:
        front = pareto_trials(trials, study.directions)
        lines.append(
            f"Pareto front: {len(front)} trial(s) over "
            + ", ".join(f"{o} ({d})" for o, d in zip(info.objectives, info.directions, strict=True))
        )
        for i, name in enumerate(info.objectives):
            t = best_trial(front, study.directions, i)
            if t is None:
                continue
            values = ", ".join(
                f"{o}={_g(v)}" for o, v in zip(info.objectives, t.values, strict=True)
            )
            lines += [
                f"  best {name}: trial {t.number} ({values})",
                f"    configuration: {_configuration(info, t)}",
                f"    reproduce: {reproduce_command(info, t)}",
            ]
    lines += _cost_lines(study)
    if where:
        report = Path(where) / "report" / "index.html"
        plots = f"; plots: {report}" if report.exists() else ""
        lines.append(f"every trial: {Path(where) / 'optimization_results.json'}{plots}")
    lines.append(RULE)
    return lines


def _cost_lines(study: optuna.Study) -> list[str]:
    """What the sweep cost (sweep/cost.py), and what is left of its budget; none before cost
    records existed."""
    attrs = study._storage.get_study_system_attrs(study._study_id)
    t = cost.study_totals(attrs)
    if not t.jobs and not t.running_jobs:
        return []
    text = f"cost: {t.gpu_hours:.4g} GPU-hours, {t.cpu_hours:.4g} CPU-hours over {t.jobs} job(s)"
    if t.local_jobs:
        text += f" ({t.local_jobs} measured locally: `nemo-rl-hpo status --refresh-cost`)"
    limits = study.user_attrs.get(records.STUDY_BUDGET) or {}
    for kind, key in (("GPU", "gpu_hours"), ("CPU", "cpu_hours")):
        if limits.get(key) is not None:
            text += f"; {kind}-hour budget {limits[key]:g}"
    return [text]


def _pbt_lines(study: optuna.Study, info: SweepInfo, trials: Sequence[FrozenTrial]) -> list[str]:
    summary = pbt_summary(trials, study.directions[0])
    if summary is None:
        return ["best: no finished round yet"]
    final = next(t for t in trials if t.number == summary["final_trial"])
    return [
        f"best member: {summary['best_member']}, {info.objectives[0]}="
        f"{_g(summary['final_value'])} at round {summary['final_round']}, trial "
        f"{summary['final_trial']}",
        f"  final configuration: {_configuration(info, final)}",
        f"  reproduce its last round: {reproduce_command(info, final)}",
        f"  its schedule ({len(summary['schedule'])} rounds): optimization_results.json "
        "(pbt.schedule)",
    ]


def _confirmed_lines(
    study: optuna.Study, info: SweepInfo, trials: Sequence[FrozenTrial]
) -> list[str]:
    """The confirmed pick (best test mean), when the sweep ran its confirmation stage."""
    from nemo_rl_hpo.sweep import confirm

    result = confirm.read_confirmation(study, trials)
    if result is None or result.pick is None:
        return []
    pick = result.pick
    t = pick.trial
    lines = [
        f"confirmed pick: trial {t.number}, test {info.objectives[0]}={pick.mean_text()} "
        f"(mean ± 95 % interval over {pick.n} test seed(s); tuning value "
        f"{_g(pick.tuning_value)}, rank {pick.rank_before} -> {pick.rank_after})",
        f"  configuration: {_configuration(info, t)}",
        f"  reproduce: {reproduce_command(info, t)}",
    ]
    if result.optimism is not None:
        lines.append(f"  optimism (tuning value - test mean): {_g(result.optimism)}")
    if result.note:
        lines.append(f"  note: {result.note}")
    if result.missing:
        lines.append(f"  {result.missing} test job(s) without a result: nemo-rl-hpo confirm DIR")
    return lines


def write_summary(study: optuna.Study, sweep_dir: str | Path) -> list[str]:
    """Write ``summary.txt`` in ``sweep_dir`` (atomically); return its lines."""
    lines = summary_lines(study, sweep_dir=str(sweep_dir))
    files.write_text(Path(sweep_dir) / SUMMARY_NAME, "\n".join(lines) + "\n")
    return lines
