"""What ``nemo-rl-hpo status`` shows: a study's sweep, best, confirmation, cost and running
trials, as one rich renderable (the command refreshes it with ``--watch``)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from nemo_rl_hpo.fidelity import history
from nemo_rl_hpo.sweep import confirm, cost, records, repeats
from nemo_rl_hpo.sweep.budget import Budget
from nemo_rl_hpo.sweep.budget import status as budget_status

if TYPE_CHECKING:
    import optuna
    from rich.console import RenderableType


def fmt(v: Any) -> str:
    """A value for a table cell: 6 significant digits, ``-`` for none."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def fmt_elapsed(seconds: float | None) -> str:
    """Seconds as h:mm:ss."""
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def status_view(study: optuna.Study) -> RenderableType:
    """The status of ``study``: a header of key lines, then paused and running trials."""
    from rich.console import Group
    from rich.table import Table

    from nemo_rl_hpo.report.trials import (
        SweepInfo,
        best_trial,
        counts_by_state,
        elapsed_s,
        pareto_trials,
    )

    trials = study.get_trials(deepcopy=False)
    info = SweepInfo.from_study(study)
    head = Table(show_header=False, box=None)
    head.add_row("study", info.study_name)
    head.add_row("storage", info.storage or "-")
    head.add_row(
        "objectives",
        ", ".join(f"{o} ({d})" for o, d in zip(info.objectives, info.directions, strict=True)),
    )
    counts = counts_by_state(trials)
    head.add_row("trials", "  ".join(f"{k}={v}" for k, v in counts.items() if v) or "none yet")
    if info.multi_objective:
        front = pareto_trials(trials, study.directions)
        head.add_row(
            "pareto front", f"{len(front)} trials: {', '.join(str(t.number) for t in front[:20])}"
        )
    else:
        best = best_trial(trials, study.directions)
        line = f"trial {best.number}: {info.objectives[0]}={fmt(best.value)}" if best else "-"
        spread = repeats.spread(best) if best else None
        head.add_row("best", f"{line}; seeds {spread}" if spread else line)
        confirmed = confirm.read_confirmation(study, trials)
        if confirmed is not None:
            head.add_row("confirmed", "\n".join(confirmation_lines(confirmed, info.objectives[0])))
    system_attrs = study._storage.get_study_system_attrs(study._study_id)
    budget = Budget.from_mapping(study.user_attrs.get(records.STUDY_BUDGET) or {})
    for st in budget_status(system_attrs, budget):
        head.add_row(f"{st.kind}-hours", st.line().split(": ", 1)[1])
    missing = cost.study_totals(system_attrs).local_jobs
    if missing:
        head.add_row(
            "accounting",
            f"{missing} Slurm job(s) measured locally (sacct was unavailable); "
            "run status --refresh-cost",
        )
    fidelity = study.user_attrs.get(records.STUDY_FIDELITY)
    if fidelity:
        n_paused, held = history.held_by_paused(trials)
        head.add_row(
            "fidelity",
            f"{'hyperband' if fidelity.get('brackets', 1) > 1 else 'asha'} over "
            f"{fidelity.get('step_key')}, rungs {fidelity.get('rungs')}; {n_paused} paused, "
            f"their checkpoints hold {history.human(held)}",
        )
    paused = [t for t in trials if t.state.name == "RUNNING" and records.is_paused(t)]
    running = [t for t in trials if t.state.name == "RUNNING" and not records.is_paused(t)]
    tables: list[RenderableType] = []
    if paused:
        ptable = Table(title=f"paused trials ({len(paused)})")
        for col in ("trial", "at step", "value", "paused for", "checkpoint"):
            ptable.add_column(col)
        for t in paused:
            segs = history.segments(t)
            ckpt = t.user_attrs.get(records.FIDELITY_CHECKPOINT)
            ptable.add_row(
                str(t.number),
                fmt(history.paused_step(t)),
                fmt(segs[-1]["value"] if segs else None),
                fmt_elapsed(history.paused_s(t)),
                f"{history.human(history.dir_bytes(ckpt))} in {ckpt}",
            )
        tables.append(ptable)
    if not running:  # a finished sweep: one line, not an empty table
        head.add_row("running", "none")
        return Group(head, *tables)
    table = Table(title=f"running trials ({len(running)})")
    for col in ("trial", "job id", "node", "elapsed", "last step", "last value"):
        table.add_column(col)
    now = dt.datetime.now()
    for t in running:
        steps = t.intermediate_values
        last = max(steps) if steps else None
        job = t.user_attrs.get(records.SLURM_JOB_ID) or t.user_attrs.get(records.JOB_PID)
        table.add_row(
            str(t.number),
            fmt(job),
            fmt(t.user_attrs.get(records.NODE)),
            fmt_elapsed(elapsed_s(t, now)),
            fmt(last if last is not None else t.user_attrs.get(records.LAST_STEP)),
            fmt(steps[last] if last is not None else None),
        )
    return Group(head, *tables, table)


def confirmation_lines(confirmed: confirm.Confirmation, objective: str) -> list[str]:
    """Per confirmed configuration: tuning value, test mean ± 95 % interval, ranks; the pick."""
    lines = [f"confirmation on test seeds {confirmed.settings.get('test_seeds')}:"]
    for r in confirmed.rows:
        mark = " <- pick" if confirmed.pick is r else ""
        lines.append(
            f"  trial {r.trial.number}: tuning {objective}={fmt(r.tuning_value)}, test mean "
            f"{r.mean_text()} ({r.n} seeds), rank {r.rank_before} -> "
            f"{fmt(r.rank_after)}{mark}"
        )
    if confirmed.optimism is not None:
        lines.append(f"  winner's optimism (tuning - test mean): {fmt(confirmed.optimism)}")
    if confirmed.note:
        lines.append(f"  note: {confirmed.note}")
    if confirmed.missing:
        lines.append(f"  {confirmed.missing} test job(s) without a result (nemo-rl-hpo confirm)")
    return lines
