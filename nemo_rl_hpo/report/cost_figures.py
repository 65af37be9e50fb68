"""What the sweep cost: the anytime plot (best value so far against cumulative GPU-hours, or
CPU-hours where no job used a GPU) and the per-trial cost table of ``index.html``.

Costs come from the cost records (``sweep/cost.py``: sacct for Slurm jobs, the job's own clock
otherwise). Every finished trial adds its cost when it finished, failed and pruned ones too:
they were paid for. The dashed line marks what one run of the default configuration costs,
estimated as the median cost of a complete trial (a single full-length run).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from nemo_rl_hpo.report.context import Ctx, Figures, SkipPlot
from nemo_rl_hpo.sweep import cost


@dataclass
class Anytime:
    """The anytime curve's points, in the order trials finished."""

    unit: str  # "GPU-hours" or "CPU-hours"
    cost: list[float]  # cumulative cost after each finished trial
    best: list[float | None]  # best objective so far (None before the first complete trial)
    numbers: list[int]
    one_run: float | None  # median cost of a complete trial: one default-length run


def unit_of(costs: Mapping[int, cost.Totals]) -> str:
    return "GPU-hours" if any(c.gpu_s > 0 for c in costs.values()) else "CPU-hours"


def hours(c: cost.Totals | None, unit: str) -> float:
    if c is None:
        return 0.0
    return c.gpu_hours if unit == "GPU-hours" else c.cpu_hours


def anytime(
    trials: Sequence[FrozenTrial], costs: Mapping[int, cost.Totals], direction: StudyDirection
) -> Anytime:
    """Best value so far against cumulative cost, over the finished trials."""
    unit = unit_of(costs)
    done = sorted(
        (t for t in trials if t.state.is_finished() and t.datetime_complete is not None),
        key=lambda t: (t.datetime_complete, t.number),
    )
    out = Anytime(unit=unit, cost=[], best=[], numbers=[], one_run=None)
    total = 0.0
    best: float | None = None
    for t in done:
        total += hours(costs.get(t.number), unit)
        if t.state == TrialState.COMPLETE and t.values is not None:
            v = float(t.values[0])
            if best is None or (v < best if direction == StudyDirection.MINIMIZE else v > best):
                best = v
        out.cost.append(total)
        out.best.append(best)
        out.numbers.append(t.number)
    complete = [hours(costs.get(t.number), unit) for t in done if t.state == TrialState.COMPLETE]
    if complete:
        out.one_run = statistics.median(complete)
    return out


def anytime_figure(ctx: Ctx) -> Figures:
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    if ctx.info.multi_objective:
        raise SkipPlot("best-so-far needs one objective (the Pareto front shows the trade-off)")
    if not ctx.costs:
        raise SkipPlot("no job recorded its cost (a sweep from before cost records)")
    a = anytime(ctx.trials, ctx.costs, ctx.study.directions[0])
    points = [(x, y, n) for x, y, n in zip(a.cost, a.best, a.numbers, strict=True) if y is not None]
    if not points:
        raise SkipPlot("no complete trial yet")
    name = ctx.info.objectives[0]
    xs, ys, ns = zip(*points, strict=True)
    title = f"Best {name} so far against cumulative {a.unit}"
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=list(xs),
            y=list(ys),
            mode="lines+markers",
            line_shape="hv",
            name=f"best {name}",
            customdata=list(ns),
            hovertemplate="%{x:.4g} " + a.unit + "<br>best %{y:.4g} (after trial %{customdata})",
        )
    )
    # The curve runs to the sweep's total: trials after the last improvement cost too.
    if a.cost[-1] > xs[-1]:
        fig.add_trace(
            go.Scatter(
                x=[xs[-1], a.cost[-1]],
                y=[ys[-1], ys[-1]],
                mode="lines",
                line={"dash": "dot"},
                name="total spent",
            )
        )
    if a.one_run is not None:
        fig.add_vline(
            x=a.one_run,
            line_dash="dash",
            annotation_text="one default run",
            annotation_position="top left",
        )
    fig.update_layout(title=title, xaxis_title=a.unit, yaxis_title=name)
    mfig, ax = plt.subplots(figsize=(7, 4.5))
    ax.step(list(xs) + [a.cost[-1]], list(ys) + [ys[-1]], where="post", marker="o")
    if a.one_run is not None:
        ax.axvline(a.one_run, linestyle="--", color="gray", label="one default run")
        ax.legend()
    ax.set_xlabel(a.unit)
    ax.set_ylabel(name)
    ax.set_title(title)
    return fig, mfig


def cost_rows(ctx: Ctx) -> tuple[list[str], list[list[object]]]:
    """The per-trial cost table: trial, state, value, cost, wall, queue, source."""
    unit = unit_of(ctx.costs)
    header = ["trial", "state", "value", unit, "wall s", "queue s", "jobs", "source"]
    rows: list[list[object]] = []
    for t in ctx.trials:
        c = ctx.costs.get(t.number)
        value = t.values[0] if t.values else "-"
        if c is None:
            rows.append([t.number, t.state.name, value, "-", "-", "-", 0, "-"])
            continue
        rows.append(
            [
                t.number,
                t.state.name,
                value,
                round(hours(c, unit), 6),
                round(c.wall_s, 1),
                round(c.queue_s, 1),
                c.jobs + c.running_jobs,
                c.source,
            ]
        )
    return header, rows
